"""Staged metadata becomes publishable only by being signed to threshold (STYLE.md §6).

``sign_metadata`` is the one way to obtain a ``SignedMetadata``: it signs, serializes exactly
once, then re-parses those very bytes and checks them against the delegating role's keys and
threshold. What is written to disk later is that byte string, so the signature that was
checked is the signature that is published.

``sign_chain`` is the one way to sign targets → snapshot → timestamp: release, refresh and
root rotation all go through it, so "snapshot lists the exact targets bytes, timestamp the
exact snapshot bytes" is written once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from repo.errors import OtakitError, RepositoryStateError, SecurityError, ThresholdError
from repo.layout import metadata_filename
from repo.roles import RoleSigners


@dataclass(frozen=True)
class SignedMetadata:
    """Serialized metadata whose signatures met the threshold. Only ``sign_metadata`` makes one."""

    role: str
    version: int
    data: bytes = field(repr=False)
    sha256: str
    signed_by: tuple[str, ...]

    @property
    def filename(self) -> str:
        return metadata_filename(self.role, self.version)

    @property
    def length(self) -> int:
        return len(self.data)

    def meta_file(self) -> MetaFile:
        """How snapshot/timestamp reference these exact bytes."""
        return MetaFile(version=self.version, length=len(self.data), hashes={"sha256": self.sha256})


def sign_metadata(
    md: Metadata[Any],
    signers: Sequence[Signer],
    authorities: Sequence[Root | Targets],
    *,
    role: str | None = None,
    compact: bool = False,
    keep_signatures: bool = False,
) -> SignedMetadata:
    """Sign ``md`` with each distinct key once and check every authority's threshold.

    ``authorities`` are the roots whose keys must approve: the current root for targets,
    snapshot and timestamp; for a new root both the trusted and the new one (TUF §5.3.4);
    for a delegated targets role (``role``: its name) the targets role delegating it.
    ``compact`` drops the indentation (large snapshots and hash bins, docs/REPOSITORY.md).
    ``keep_signatures`` keeps the signatures ``md`` already carries (a ceremony collects
    them one holder at a time, ``repo.ceremony``) instead of starting from none.
    """
    role = role or md.signed.type
    if not keep_signatures:
        md.signatures.clear()
    for signer in signers:
        keyid = signer.public_key.keyid
        if keyid in md.signatures:
            continue
        try:
            md.sign(signer, append=True)
        except Exception as e:  # any signer backend failure (HSM, KMS, file)
            if isinstance(e.__cause__, OtakitError):
                # e.g. a missing PIN, already explained by our secrets handler
                raise e.__cause__ from None
            raise SecurityError(
                f"{role}: signing with key {keyid[:12]} failed: {type(e).__name__}: {e}"
            ) from e
    data = md.to_bytes(JSONSerializer(compact=compact))
    parsed: Metadata[Any] = Metadata.from_bytes(data)
    for authority in authorities:
        result = authority.get_verification_result(role, parsed.signed_bytes, parsed.signatures)
        if not result.verified:
            authorized = set(authority.get_delegated_role(role).keyids)
            strangers = sorted(k[:12] for k in parsed.signatures if k not in authorized)
            raise ThresholdError(
                f"{role} v{md.signed.version}: expected {result.threshold} valid signature(s) "
                f"from keys in {authority.type} v{authority.version}, found {len(result.signed)}"
                + (f" (signed by keys root does not list: {strangers})" if strangers else ""),
                hint="load more of the role's keys (see the key configuration) or check that "
                "the configuration matches the root metadata",
            )
    return SignedMetadata(
        role=role,
        version=md.signed.version,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        signed_by=tuple(sorted(parsed.signatures)),
    )


@dataclass(frozen=True)
class StagedChain:
    """The unsigned next versions of targets, snapshot and timestamp.

    ``sign_chain`` fills in the links: snapshot's ``targets.json`` entry (when ``targets`` is
    given; a refresh without it keeps the published entry) and timestamp's snapshot entry.
    """

    targets: Targets | None
    snapshot: Snapshot
    timestamp: Timestamp


@dataclass(frozen=True)
class SignedChain:
    """A signed targets (optional), snapshot and timestamp, each referencing the previous
    one's exact bytes."""

    targets: SignedMetadata | None
    snapshot: SignedMetadata
    timestamp: SignedMetadata
    #: roles whose signatures do not meet the ``bridge`` root's threshold (see ``sign_chain``)
    unbridged: tuple[str, ...] = ()

    def in_publication_order(self) -> tuple[SignedMetadata, ...]:
        chain = (self.targets, self.snapshot, self.timestamp)
        return tuple(md for md in chain if md is not None)


def sign_chain(
    staged: StagedChain,
    signers: RoleSigners,
    authorities: Sequence[Root],
    *,
    bridge: Root | None = None,
) -> SignedChain:
    """Sign targets, snapshot and timestamp in that order, linking each to the bytes before.

    Every role must meet its threshold in each of ``authorities`` (else ``ThresholdError``,
    nothing signed is returned). ``bridge`` is a root the chain should *also* verify under
    but need not: a root rotation co-signs with the old keys so clients still at the old
    root accept the new chain, and publishes the new root first when that fails; the roles
    that fail are listed in ``unbridged``.
    """
    unbridged: list[str] = []

    def sign(md: Metadata[Any], compact: bool = False) -> SignedMetadata:
        signed = sign_metadata(md, signers.get(md.signed.type, ()), authorities, compact=compact)
        if bridge is not None and not verifies_under(bridge, signed):
            unbridged.append(signed.role)
        return signed

    meta = dict(staged.snapshot.meta)
    signed_targets = None
    if staged.targets is not None:
        signed_targets = sign(Metadata(staged.targets))
        meta["targets.json"] = signed_targets.meta_file()
    if "targets.json" not in meta:
        raise RepositoryStateError("snapshot: expected a targets.json entry, found none")
    snapshot = Snapshot(version=staged.snapshot.version, expires=staged.snapshot.expires, meta=meta)
    # compact: a snapshot lists every delegated role and hash bin (docs/REPOSITORY.md)
    signed_snapshot = sign(Metadata(snapshot), compact=True)
    timestamp = Timestamp(
        version=staged.timestamp.version,
        expires=staged.timestamp.expires,
        snapshot_meta=signed_snapshot.meta_file(),
    )
    signed_timestamp = sign(Metadata(timestamp))
    return SignedChain(signed_targets, signed_snapshot, signed_timestamp, tuple(unbridged))


def verifies_under(authority: Root, signed: SignedMetadata) -> bool:
    """Whether ``signed``'s published bytes meet ``authority``'s threshold for its role."""
    md: Metadata[Any] = Metadata.from_bytes(signed.data)
    result = authority.get_verification_result(signed.role, md.signed_bytes, md.signatures)
    return bool(result.verified)
