"""Read the currently published repository, following timestamp → snapshot → targets.

The publisher reads its own output with the same chain a client uses, and checks that the
pieces agree (versions, lengths, hashes) and that every role's signatures verify against the
root (the root chain itself verified from 1.root.json). A release re-signs everything the
current targets list, so it must never build on files someone edited on the server: that
would turn write access to the repository directory into a signature from the targets key.
Expiry is deliberately not checked: re-signing expired metadata is how a publisher recovers.
A crash mid-publish leaves orphan files that this reader simply does not reach.

One crash needs more: a root rotation that had to publish root N+1 *before* the online
metadata (its old online keys were lost, see ``repo.rotate``) and died in between leaves
timestamp/snapshot/targets that verify only under root N. ``load_state`` refuses that like
any other mismatch; ``load_state(..., online_under_previous_root=True)`` (used only by the
rotation's resume) verifies the online chain against root N instead, still reached through
the verified root chain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp  # type: ignore[attr-defined]

from repo.errors import RepositoryStateError, UntrustedRepositoryError
from repo.layout import metadata_dir, metadata_filename

_MAX_METADATA = 64 << 20
_MAX_ROOTS = 10_000
T = TypeVar("T", Root, Targets, Snapshot, Timestamp)


@dataclass(frozen=True)
class RepoState:
    """The published top-level metadata, parsed, plus the trusted root's raw bytes."""

    repo_dir: Path
    root: Metadata[Root]
    root_bytes: bytes = field(repr=False)
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    #: the root version the online metadata verified under (``root``'s unless resuming)
    online_root_version: int = 0


def load_state(repo_dir: Path, *, online_under_previous_root: bool = False) -> RepoState:
    """The published state, every signature verified (see the module docstring)."""
    mdir = metadata_dir(repo_dir)
    if not (mdir / "1.root.json").is_file():
        raise RepositoryStateError(
            f"{repo_dir}: expected an otakit repository ({mdir}/1.root.json), found none",
            hint="create one with: otakit repo init REPO --keys KEYCONF",
        )
    root_bytes = _read(mdir / metadata_filename("root", 1))
    root = _parse(root_bytes, Root, "root", 1)
    _verify(root.signed, root, "root")
    previous = root
    while (mdir / metadata_filename("root", root.signed.version + 1)).is_file():
        if root.signed.version >= _MAX_ROOTS:
            raise RepositoryStateError(f"{mdir}: more than {_MAX_ROOTS} root versions")
        version = root.signed.version + 1
        next_bytes = _read(mdir / metadata_filename("root", version))
        next_root = _parse(next_bytes, Root, "root", version)
        _verify(root.signed, next_root, "root")
        _verify(next_root.signed, next_root, "root")
        previous = root
        root, root_bytes = next_root, next_bytes
    authority = root.signed
    if online_under_previous_root:
        if previous is root:
            raise RepositoryStateError(f"{mdir}: only root v1, no previous root to verify under")
        authority = previous.signed
    timestamp = _parse(_read(mdir / "timestamp.json"), Timestamp, "timestamp", None)
    _verify(authority, timestamp, "timestamp")
    snap_meta = timestamp.signed.snapshot_meta
    snapshot_bytes = _read(mdir / metadata_filename("snapshot", snap_meta.version))
    _check_meta(snap_meta, snapshot_bytes, "snapshot", "timestamp.json")
    snapshot = _parse(snapshot_bytes, Snapshot, "snapshot", snap_meta.version)
    _verify(authority, snapshot, "snapshot")
    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise RepositoryStateError(
            f"snapshot v{snap_meta.version}: expected an entry for targets.json, found none"
        )
    targets_bytes = _read(mdir / metadata_filename("targets", targets_meta.version))
    _check_meta(targets_meta, targets_bytes, "targets", f"{snap_meta.version}.snapshot.json")
    targets = _parse(targets_bytes, Targets, "targets", targets_meta.version)
    _verify(authority, targets, "targets")
    return RepoState(repo_dir, root, root_bytes, targets, snapshot, timestamp, authority.version)


def _verify(authority: Root, md: Metadata[Any], role: str) -> None:
    result = authority.get_verification_result(role, md.signed_bytes, md.signatures)
    if not result.verified:
        raise UntrustedRepositoryError(
            f"published {role} v{md.signed.version}: expected {result.threshold} valid "
            f"signature(s) from keys in root v{authority.version}, found {len(result.signed)}",
            hint="the repository directory was modified outside otakit; restore it from a "
            "trusted copy before releasing (a release would re-sign what it lists)"
            + (
                "; or, if an 'otakit repo rotate-root' was interrupted, rerun it with the same "
                "key configurations and --resume"
                if role != "root"
                else ""
            ),
        )


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_METADATA + 1)
    except OSError as e:
        raise RepositoryStateError(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > _MAX_METADATA:
        raise RepositoryStateError(f"{path}: larger than {_MAX_METADATA} bytes")
    return data


def _parse(data: bytes, cls: type[T], role: str, version: int | None) -> Metadata[T]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except Exception as e:  # python-tuf raises DeserializationError and friends
        raise RepositoryStateError(f"{role} metadata: cannot parse: {e}") from e
    if not isinstance(md.signed, cls):
        raise RepositoryStateError(f"expected {role} metadata, found {md.signed.type}")
    if version is not None and md.signed.version != version:
        raise RepositoryStateError(
            f"{metadata_filename(role, version)}: expected version {version}, "
            f"found {md.signed.version}"
        )
    return md


def _check_meta(meta: MetaFile, data: bytes, role: str, referrer: str) -> None:
    if meta.length is not None and meta.length != len(data):
        raise RepositoryStateError(
            f"{role} v{meta.version}: {referrer} says {meta.length} bytes, found {len(data)}"
        )
    want = (meta.hashes or {}).get("sha256")
    if want is not None and want != hashlib.sha256(data).hexdigest():
        raise RepositoryStateError(
            f"{role} v{meta.version}: sha256 differs from the one recorded in {referrer}"
        )
