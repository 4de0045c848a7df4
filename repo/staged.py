"""The staged-change file: unsigned TUF metadata that travels from holder to holder.

A ceremony (``repo.ceremony``) changes an offline role; the change is written once by
``otakit repo stage`` and then carried to every key holder, who adds a signature with
``otakit repo sign`` on their own machine. The file is a small versioned JSON envelope
(docs/FORMAT.md, "Staged change") around standard TUF metadata documents, so any TUF tool
can read what is being signed:

* ``documents``: the metadata to publish, in publication order (a new root before the
  targets it re-signs), each ``{"signed": …, "signatures": […]}`` exactly as TUF writes it;
* ``base``: the published root and targets (version and sha256 of the file) the change was
  made against, so a change staged before someone else published is refused, not merged;
* ``trusted_root``: the published root at staging time, so a holder offline can see which
  of their keys root N lists (``publish`` uses the repository's own root, never this copy);
* ``delegated`` (version 2, a delegation change only): the product role and its hash bins,
  each named, with the role delegating it (the change's targets, or the product role), so
  a product-key holder signs them like a targets-key holder signs the targets.

Parsing is strict (``from_json``): unknown fields, a document of another role or version,
two documents of one role are all refused, so no half-valid change circulates. Signing
(``with_signature``) only appends to one document's ``signatures``: the ``signed`` part of
every document is carried through untouched, byte for byte in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from securesystemslib.signer import Signature  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined]

from repo.errors import StagedChangeError
from verifier import strictjson

#: version 1: root and targets changes; version 2 adds ``delegated`` (a delegation change).
#: A change without delegated roles is still written as version 1, so holders with an
#: older otakit can sign it.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
#: what can be staged: a new root (with the targets it needs re-signed), new targets, or a
#: delegation (targets N+1 with the product role and its bins, ``repo.delegation``)
CHANGES = ("root", "targets", "delegation")
#: A staged file holds a few metadata documents; this bounds a hostile one.
MAX_STAGED_BYTES = 16 << 20
#: a product role and at most ``repo.delegation.MAX_BINS`` bins
MAX_DELEGATED = 1 + 1024
_FIELDS = {"otakit_staged", "change", "staged_at", "base", "trusted_root", "documents"}
_FIELDS_V2 = _FIELDS | {"delegated"}
_DELEGATED_FIELDS = {"role", "delegator", "metadata"}


@dataclass(frozen=True)
class PublishedRef:
    """One published metadata file a change builds on: its version and file sha256."""

    version: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class Base:
    """The published state a change was staged against."""

    root: PublishedRef
    targets: PublishedRef

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root.to_json(), "targets": self.targets.to_json()}


@dataclass(frozen=True)
class DelegatedDocument:
    """A delegated targets role of a delegation change: the product role (delegated by the
    change's targets N+1) or one of its hash bins (delegated by the product role)."""

    role: str
    delegator: str
    metadata: Metadata[Targets] = field(compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "delegator": self.delegator, "metadata": self.metadata.to_dict()}


@dataclass(frozen=True)
class StagedChange:
    """A change as staged, with whatever signatures holders have added so far.

    Not publishable: only ``repo.ceremony.approve`` turns it into a ``SignedChange``, after
    every threshold is met. The documents are never mutated; signing returns a new value.
    """

    change: str
    staged_at: datetime
    base: Base
    trusted_root: Metadata[Root] = field(compare=False, repr=False)
    documents: tuple[Metadata[Any], ...] = field(compare=False, repr=False)
    #: a delegation change's product role, then its bins (publication order)
    delegated: tuple[DelegatedDocument, ...] = field(default=(), compare=False, repr=False)

    def document(self, role: str) -> Metadata[Any] | None:
        return next((d for d in self.documents if d.signed.type == role), None)

    def named(self) -> list[tuple[str, Metadata[Any]]]:
        """(role name, metadata) of every document, top-level first: what ``index`` of
        ``with_signature`` counts."""
        return [(d.signed.type, d) for d in self.documents] + [
            (d.role, d.metadata) for d in self.delegated
        ]

    def with_signature(self, index: int, signature: Signature) -> StagedChange:
        """This change with ``signature`` appended to document ``index``: nothing else."""

        def add(i: int, doc: Metadata[Any]) -> Metadata[Any]:
            raw = doc.to_dict()
            if i == index:
                raw["signatures"] = [*raw["signatures"], signature.to_dict()]
            return Metadata.from_dict(raw)

        n = len(self.documents)
        docs = tuple(add(i, d) for i, d in enumerate(self.documents))
        delegated = tuple(
            DelegatedDocument(d.role, d.delegator, add(n + i, d.metadata))
            for i, d in enumerate(self.delegated)
        )
        return StagedChange(
            self.change, self.staged_at, self.base, self.trusted_root, docs, delegated
        )

    def to_json(self) -> dict[str, Any]:
        out = {
            "otakit_staged": FORMAT_VERSION if self.delegated else 1,
            "change": self.change,
            "staged_at": self.staged_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "base": self.base.to_json(),
            "trusted_root": self.trusted_root.to_dict(),
            "documents": [d.to_dict() for d in self.documents],
        }
        if self.delegated:
            out["delegated"] = [d.to_json() for d in self.delegated]
        return out

    def to_bytes(self) -> bytes:
        """Stable text (sorted keys, one field per line) so a reviewer can diff two copies."""
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode()


def from_bytes(data: bytes, name: str) -> StagedChange:
    """Parse a staged-change file (strict JSON: no duplicate keys), naming ``name`` in errors."""
    if len(data) > MAX_STAGED_BYTES:
        raise StagedChangeError(
            f"{name}: expected a staged change of at most {MAX_STAGED_BYTES} bytes, "
            f"found {len(data)}"
        )
    doc = strictjson.loads(data, name=name, error=StagedChangeError)
    return from_json(doc, name)


def from_json(doc: Any, name: str) -> StagedChange:
    """The decoded JSON of a staged-change file, checked field by field."""
    version = doc.get("otakit_staged") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or version not in FORMAT_VERSIONS or isinstance(version, bool):
        found = version if isinstance(doc, dict) else type(doc).__name__
        raise StagedChangeError(
            f'{name}: expected a staged change ("otakit_staged": 1 or {FORMAT_VERSION}), found '
            f"{found!r}",
            hint="stage a change with: otakit repo stage REPO root|targets --out FILE",
        )
    allowed = _FIELDS_V2 if version == 2 else _FIELDS
    extra = sorted(set(doc) - allowed)
    if extra:
        raise StagedChangeError(f"{name}: unexpected fields {extra}, allowed {sorted(allowed)}")
    change = doc.get("change")
    changes = CHANGES if version == 2 else CHANGES[:2]
    if change not in changes:
        raise StagedChangeError(f"{name}: 'change': expected one of {changes}, found {change!r}")
    change = str(change)
    if (change == "delegation") != ("delegated" in doc):
        raise StagedChangeError(
            f"{name}: a delegation change and only it carries 'delegated' (the product role "
            "and its bins)"
        )
    try:
        staged_at = datetime.strptime(str(doc.get("staged_at")), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        raise StagedChangeError(
            f"{name}: 'staged_at': expected a UTC time like 2026-01-31T12:00:00Z, found "
            f"{doc.get('staged_at')!r}"
        ) from None
    base = _base(doc.get("base"), name)
    trusted = cast(Metadata[Root], _metadata(doc.get("trusted_root"), f"{name}: trusted_root"))
    if trusted.signed.type != "root" or trusted.signed.version != base.root.version:
        raise StagedChangeError(
            f"{name}: trusted_root: expected root v{base.root.version} (the base), found "
            f"{trusted.signed.type} v{trusted.signed.version}"
        )
    raw_docs = doc.get("documents")
    if not isinstance(raw_docs, list) or not 1 <= len(raw_docs) <= len(CHANGES):
        raise StagedChangeError(
            f"{name}: 'documents': expected a list of 1..{len(CHANGES)} metadata documents, "
            f"found {raw_docs!r:.80}"
        )
    docs = tuple(_metadata(d, f"{name}: documents[{i}]") for i, d in enumerate(raw_docs))
    roles = [d.signed.type for d in docs]
    expected = {"root": ["root", "targets"], "targets": ["targets"], "delegation": ["targets"]}[
        change
    ]
    if roles != expected[: len(roles)] or roles[0] != expected[0]:
        raise StagedChangeError(
            f"{name}: a {change} change holds {' then '.join(expected)} (publication order), "
            f"found {roles}"
        )
    wanted = {"root": base.root.version + 1, "targets": base.targets.version + 1}
    for d in docs:
        if d.signed.version != wanted[d.signed.type]:
            raise StagedChangeError(
                f"{name}: {d.signed.type}: expected version {wanted[d.signed.type]} (the base's "
                f"next), found {d.signed.version}"
            )
    delegated = _delegated(doc.get("delegated"), docs[0], name) if change == "delegation" else ()
    return StagedChange(change, staged_at, base, trusted, docs, delegated)


def _delegated(raw: Any, targets: Metadata[Any], name: str) -> tuple[DelegatedDocument, ...]:
    """The product role (delegated by ``targets``), then bins it delegates, each once."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_DELEGATED:
        raise StagedChangeError(
            f"{name}: 'delegated': expected a list of 1..{MAX_DELEGATED} delegated roles, "
            f"found {raw!r:.80}"
        )
    out: list[DelegatedDocument] = []
    for i, entry in enumerate(raw):
        where = f"{name}: delegated[{i}]"
        if not isinstance(entry, dict) or set(entry) != _DELEGATED_FIELDS:
            raise StagedChangeError(
                f"{where}: expected an object with {sorted(_DELEGATED_FIELDS)}, found {entry!r:.80}"
            )
        role, delegator = entry["role"], entry["delegator"]
        md = _metadata(entry["metadata"], where)
        product = out[0].role if out else None
        parent: Targets = targets.signed if product is None else out[0].metadata.signed
        wanted = "targets" if product is None else product
        ok = (
            isinstance(role, str)
            and delegator == wanted
            and md.signed.type == "targets"
            and role not in {d.role for d in out}
            and _delegates(parent, role)
        )
        if not ok:
            raise StagedChangeError(
                f"{where}: expected targets metadata of a role {wanted} delegates (the product "
                f"role first, then its bins, each once), found {role!r} delegated by "
                f"{delegator!r}"
            )
        out.append(DelegatedDocument(role, delegator, md))
    return tuple(out)


def _delegates(parent: Targets, role: str) -> bool:
    dl = parent.delegations
    if dl is None:
        return False
    if dl.roles is not None:
        return role in dl.roles
    return dl.succinct_roles is not None and bool(dl.succinct_roles.is_delegated_role(role))


def _base(raw: Any, name: str) -> Base:
    refs = {}
    for role in ("root", "targets"):
        r = raw.get(role) if isinstance(raw, dict) else None
        ok = (
            isinstance(r, dict)
            and set(r) == {"version", "sha256"}
            and isinstance(r["version"], int)
            and not isinstance(r["version"], bool)
            and r["version"] >= 1
            and isinstance(r["sha256"], str)
            and len(r["sha256"]) == 64
            and all(c in "0123456789abcdef" for c in r["sha256"])
        )
        if not ok:
            raise StagedChangeError(
                f'{name}: base.{role}: expected {{"version": N, "sha256": HEX}}, found {r!r}'
            )
        assert isinstance(r, dict)
        refs[role] = PublishedRef(r["version"], r["sha256"])
    return Base(refs["root"], refs["targets"])


def _metadata(raw: Any, where: str) -> Metadata[Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("signed"), dict):
        raise StagedChangeError(f"{where}: expected a TUF metadata object, found {raw!r:.80}")
    try:
        md: Metadata[Any] = Metadata.from_dict(json.loads(json.dumps(raw)))
    except (ValueError, KeyError, TypeError) as e:
        raise StagedChangeError(f"{where}: not valid TUF metadata: {e}") from e
    if md.signed.type not in CHANGES:
        raise StagedChangeError(
            f"{where}: expected root or targets metadata, found {md.signed.type}"
        )
    return md
