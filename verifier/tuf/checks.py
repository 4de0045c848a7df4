"""The checks every metadata file gets, wherever its bytes came from.

* it parses as metadata of the role the referrer promised (and if not, the message says what
  the bytes look like instead: binary data, text that is not JSON, another role ...);
* a threshold of *distinct* keys the delegator authorizes signed it. python-tuf counts
  key ids; a root that lists one key under two ids would let one signature count twice, so
  keys are also told apart by their public value.

The device adds ``precheck`` in front of python-tuf (``PrecheckingFetcher`` for what ngclient
downloads, ``TrustedStore`` for what it reads back): strict JSON (``verifier.strictjson``), no
signature listed twice, and no public key listed under two ids, refused outright rather than
counted once (docs/THREAT-MODEL.md says why).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from tuf.api.metadata import Metadata, MetaFile, Root, Targets  # type: ignore[attr-defined]
from tuf.api.serialization import DeserializationError, SerializationError

from verifier import strictjson
from verifier.errors import (
    InvalidMetadataError,
    MetadataExpiredError,
    MetadataSignatureError,
    OtakitError,
)
from verifier.tuf.failures import describe

TOP_LEVEL_ROLES = ("root", "timestamp", "snapshot", "targets")


def precheck(data: bytes, name: str, *, error: type[OtakitError] = InvalidMetadataError) -> None:
    """Refuse what python-tuf would accept silently, before it sees ``data`` (named ``name``).

    Shape problems (not an object, no ``signed``) are left to the parser, whose message says
    what the bytes are instead; this only looks where the shape is already right.
    """
    doc = strictjson.loads(data, name=name, error=error)
    if not isinstance(doc, dict):
        return
    sigs = doc.get("signatures")
    if isinstance(sigs, list):
        seen: set[str] = set()
        for sig in sigs:
            keyid = sig.get("keyid") if isinstance(sig, dict) else None
            if isinstance(keyid, str):
                if keyid in seen:
                    raise error(
                        f"{name}: the signature of key {keyid[:16]} is listed twice: expected "
                        "each key's signature once"
                    )
                seen.add(keyid)
    signed = doc.get("signed")
    if not isinstance(signed, dict):
        return
    delegations = signed.get("delegations")
    for where, keys in (
        ("signed.keys", signed.get("keys")),
        (
            "signed.delegations.keys",
            delegations.get("keys") if isinstance(delegations, dict) else None,
        ),
    ):
        if isinstance(keys, dict):
            _one_id_per_key(keys, f"{name} {where}", error)


def _one_id_per_key(keys: dict[str, Any], label: str, error: type[OtakitError]) -> None:
    """One public key under two ids would let one signature count twice (python-tuf counts
    ids): refused, whatever the thresholds (docs/THREAT-MODEL.md)."""
    owner: dict[tuple[str, str], str] = {}
    for keyid, key in sorted(keys.items()):
        if not isinstance(key, dict):
            continue
        public = (str(key.get("keytype")), json.dumps(key.get("keyval"), sort_keys=True))
        if public in owner:
            raise error(
                f"{label}: one public key is listed under two key ids ({owner[public][:16]} and "
                f"{keyid[:16]}): expected each key once, so that one signature counts once"
            )
        owner[public] = keyid


def try_parse(data: bytes, role: str) -> tuple[Metadata[Any] | None, str]:
    """``(metadata, "")`` if ``data`` is ``role`` metadata, else ``(None, what it is instead)``."""
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except (DeserializationError, ValueError, TypeError, KeyError) as e:
        return None, _found_instead(data, role, e)
    if md.signed.type != role:
        return None, f"{md.signed.type} metadata"
    return md, ""


def parse_metadata(data: bytes, role: str, name: str) -> Metadata[Any]:
    """``data`` parsed as ``role`` metadata, or ``InvalidMetadataError`` naming ``name``."""
    md, found = try_parse(data, role)
    if md is None:
        raise InvalidMetadataError(f"{name}: expected {role} metadata, found {found}")
    return md


def _found_instead(data: bytes, role: str, exc: BaseException) -> str:
    head = data[:4096]
    if b"\x00" in head:
        return f"binary data ({len(data)} bytes, starting {data[:8].hex(' ')})"
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        return f"binary data ({len(data)} bytes, starting {data[:8].hex(' ')})"
    except json.JSONDecodeError as e:
        return f"text that is not JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except RecursionError:  # hostile nesting ('[[[[...'): json gives up, so do we
        return "JSON nested too deeply to read"
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__ if doc is not None else 'null'}, not an object"
    if "signed" not in doc or "signatures" not in doc:
        keys = ", ".join(repr(k) for k in sorted(doc)[:6]) or "none"
        return f"a JSON object without 'signed' and 'signatures' (its keys: {keys})"
    signed = doc["signed"]
    kind = signed.get("_type") if isinstance(signed, dict) else None
    if kind not in TOP_LEVEL_ROLES:
        return f"'signed' of type {kind!r}, which is no TUF role"
    if kind != role:
        return f"{kind} metadata"
    return f"invalid {role} metadata ({describe(exc.__cause__ or exc)})"


def check_signatures(authority: Root | Targets, role: str, md: Metadata[Any], label: str) -> None:
    """Refuse ``md`` unless a threshold of distinct keys ``authority`` grants ``role`` signed it.

    ``authority`` is a root (top-level roles) or the targets role delegating ``role``
    (``verifier.tuf.delegations``). ``label`` names the file in the message, e.g. "published
    targets".
    """
    who = (
        f"root v{authority.version}"
        if isinstance(authority, Root)
        else f"its delegating targets v{authority.version}"
    )
    try:
        signed_bytes = md.signed_bytes
    except SerializationError as e:  # a float or a lone surrogate: python-tuf parses, cannot sign
        raise InvalidMetadataError(
            f"{label} v{md.signed.version}: expected 'signed' in canonical JSON (integers, valid "
            f"Unicode) to check its signatures, found {describe(e.__cause__ or e)}"
        ) from e
    try:
        result = authority.get_verification_result(role, signed_bytes, md.signatures)
    except ValueError as e:
        raise MetadataSignatureError(
            f"{label} v{md.signed.version}: {who} grants no keys to the {role} role "
            f"({describe(e)})",
            role=role,
        ) from e
    distinct = {(k.keytype, json.dumps(k.keyval, sort_keys=True)) for k in result.signed.values()}
    if len(distinct) < result.threshold:
        raise MetadataSignatureError(
            f"{label} v{md.signed.version}: expected {result.threshold} valid signature(s) "
            f"from keys in {who}, found {len(distinct)}",
            role=role,
        )


def parse_version(data: bytes, role: str, version: int) -> Metadata[Any]:
    """``N.role.json`` parsed, and its version exactly ``N`` (the name a referrer used)."""
    name = f"{version}.{role}.json"
    md = parse_metadata(data, role, name)
    if md.signed.version != version:
        raise InvalidMetadataError(f"{name}: expected version {version}, found {md.signed.version}")
    return md


def check_meta(meta: MetaFile, data: bytes, role: str, referrer: str) -> None:
    """``data`` has the length and every hash its referrer recorded."""
    if meta.length is not None and meta.length != len(data):
        raise InvalidMetadataError(
            f"{role} v{meta.version}: {referrer} says {meta.length} bytes, found {len(data)}"
        )
    for algo, want in sorted((meta.hashes or {}).items()):
        try:
            found = hashlib.new(algo, data).hexdigest()
        except (ValueError, TypeError) as e:  # TypeError: shake_* has no plain hexdigest()
            raise InvalidMetadataError(
                f"{role} v{meta.version}: {referrer} records a {algo!r} hash, "
                "expected an algorithm this verifier knows (sha256)"
            ) from e
        if found != want:
            raise InvalidMetadataError(
                f"{role} v{meta.version}: {algo} differs from the one recorded in {referrer} "
                f"(expected {want}, found {found})"
            )


def check_expiry(md: Metadata[Any], reference_time: datetime) -> None:
    """Valid at ``reference_time`` (the caller's clock: time is passed in)."""
    if md.signed.is_expired(reference_time):
        raise MetadataExpiredError(
            f"published {md.signed.type} v{md.signed.version}: expected it valid at "
            f"{reference_time.isoformat()}, found it expired at {md.signed.expires.isoformat()}",
            hint="the publisher must re-sign it (otakit repo refresh)",
        )
