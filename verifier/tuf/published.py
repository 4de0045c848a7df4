"""A pure verifier of a published TUF metadata set: bytes in, verified parsed state out.

``verify_published`` checks what a client would, in the same order, over bytes obtained
anywhere (a repository directory, a URL, an export archive): the root chain from a trusted
root (``rootchain``), then timestamp -> snapshot -> targets, each file the version its referrer
names, of the length and hashes the referrer records, and signed by a threshold of distinct
keys of the newest root. It never opens a file itself: ``DirectorySource`` is the edge for a
directory, a plain ``dict`` of name -> bytes works as well.

Expiry is not checked unless a reference time is given: a publisher must be able to read
(and then re-sign) expired metadata. ``online_under_previous_root`` verifies the online roles
under the root before the newest one, for resuming a root rotation that published root N+1
before the online metadata (see ``repo.rotate``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp  # type: ignore[attr-defined]

from verifier.errors import InvalidMetadataError, LocalError, RootGapError
from verifier.tuf import rootchain
from verifier.tuf.checks import (
    check_expiry,
    check_meta,
    check_signatures,
    parse_metadata,
    parse_version,
)
from verifier.tuf.rootchain import MAX_ROOT_VERSIONS, RootChain, root_filename

#: A bound on one metadata file read from a directory (the largest real targets are far smaller).
MAX_METADATA_BYTES = 64 << 20

_ROOT_NAME = re.compile(r"^([1-9][0-9]{0,9})\.root\.json\Z")


class MetadataSource(Protocol):
    """Where the published files come from; ``dict[str, bytes]`` is one."""

    def get(self, name: str, /) -> bytes | None:
        """The bytes of metadata file ``name`` (e.g. ``"3.snapshot.json"``), None if absent."""
        ...


@runtime_checkable
class ListableSource(Protocol):
    """A source that can also say which files it holds (a directory can; a URL cannot).

    Only a listing shows a root history with a hole: the walk asks for ``N+1.root.json``,
    finds none and stops, and nothing it fetched says that ``N+2.root.json`` exists.
    """

    def get(self, name: str, /) -> bytes | None: ...

    def names(self) -> Iterable[str]:
        """Every file name the source holds."""
        ...


@dataclass(frozen=True)
class DirectorySource:
    """A directory of metadata files (a repository's ``metadata/``), each read bounded."""

    directory: Path
    max_bytes: int = MAX_METADATA_BYTES

    def get(self, name: str, /) -> bytes | None:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a metadata file name: {name!r}")
        path = self.directory / name
        try:
            with path.open("rb") as f:
                data = f.read(self.max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise LocalError(f"cannot read {path}: {e.strerror or e}") from e
        if len(data) > self.max_bytes:
            raise InvalidMetadataError(f"{path}: larger than {self.max_bytes} bytes")
        return data

    def names(self) -> Iterable[str]:
        try:
            return [p.name for p in self.directory.iterdir()]
        except OSError as e:
            raise LocalError(f"cannot list {self.directory}: {e.strerror or e}") from e


@dataclass(frozen=True)
class PublishedState:
    """A verified top-level metadata set: parsed metadata and the exact bytes verified."""

    chain: RootChain = field(repr=False)
    timestamp: Metadata[Timestamp]
    timestamp_bytes: bytes = field(repr=False)
    snapshot: Metadata[Snapshot]
    snapshot_bytes: bytes = field(repr=False)
    targets: Metadata[Targets]
    targets_bytes: bytes = field(repr=False)
    #: the root version the online roles verified under (the newest, unless resuming)
    online_root_version: int

    @property
    def root(self) -> Metadata[Root]:
        return self.chain.newest.metadata

    @property
    def root_bytes(self) -> bytes:
        return self.chain.newest.data


def verify_published(
    files: MetadataSource,
    root: bytes,
    *,
    reference_time: datetime | None = None,
    online_under_previous_root: bool = False,
    max_root_versions: int = MAX_ROOT_VERSIONS,
) -> PublishedState:
    """The published state of ``files``, trusted from the ``root`` bytes (module docstring).

    Raises ``MetadataSignatureError`` for a missing signature threshold,
    ``InvalidMetadataError`` for a missing, unparsable or inconsistent file,
    ``MetadataExpiredError`` if ``reference_time`` is given and a role expired before it.
    """
    chain = rootchain.walk_root_chain(
        root,
        lambda version: files.get(root_filename(version)),
        label="published",
        trusted_name="the trusted root",
        max_versions=max_root_versions,
    )
    if chain.stop is not None:
        raise chain.stop
    check_root_history(files, chain)
    authority = chain.newest.metadata.signed
    if online_under_previous_root:
        previous = chain.previous
        if previous is None:
            raise InvalidMetadataError(
                f"only root v{chain.newest.version} is published: expected a previous root "
                "to verify the online metadata under, found none"
            )
        authority = previous.metadata.signed

    timestamp_bytes = _get(files, "timestamp.json", None)
    timestamp = cast(
        Metadata[Timestamp], parse_metadata(timestamp_bytes, "timestamp", "timestamp.json")
    )
    check_signatures(authority, "timestamp", timestamp, "published timestamp")

    snap_meta = timestamp.signed.snapshot_meta
    snapshot_name = f"{snap_meta.version}.snapshot.json"
    snapshot_bytes = _get(files, snapshot_name, "timestamp.json")
    check_meta(snap_meta, snapshot_bytes, "snapshot", "timestamp.json")
    snapshot = cast(
        Metadata[Snapshot], parse_version(snapshot_bytes, "snapshot", snap_meta.version)
    )
    check_signatures(authority, "snapshot", snapshot, "published snapshot")

    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise InvalidMetadataError(
            f"snapshot v{snap_meta.version}: expected an entry for targets.json, found none"
        )
    targets_name = f"{targets_meta.version}.targets.json"
    targets_bytes = _get(files, targets_name, snapshot_name)
    check_meta(targets_meta, targets_bytes, "targets", snapshot_name)
    targets = cast(Metadata[Targets], parse_version(targets_bytes, "targets", targets_meta.version))
    check_signatures(authority, "targets", targets, "published targets")

    if reference_time is not None:
        for md in (chain.newest.metadata, timestamp, snapshot, targets):
            check_expiry(md, reference_time)
    return PublishedState(
        chain,
        timestamp,
        timestamp_bytes,
        snapshot,
        snapshot_bytes,
        targets,
        targets_bytes,
        authority.version,
    )


def check_root_history(files: MetadataSource, chain: RootChain) -> None:
    """Refuse a root history with a gap: a root file, or the ``root.json`` copy of the
    newest root, of a version above the newest one the walk reached (``RootGapError``).

    Without this, deleting ``2.root.json`` silently turns a repository back to root v1: the
    walk stops there, online metadata that root v1 also accepts still verifies, and the
    publisher would sign on (a device that trusts root v2 is then served metadata its root
    may reject, and a new device never learns root v2). Checked only for sources that can
    list their files (``ListableSource``, a ``dict``).
    """
    if isinstance(files, Mapping):
        names = set(files.keys())
    elif isinstance(files, ListableSource):
        names = set(files.names())
    else:
        return
    newest = chain.newest.version
    above = [v for n in names if (m := _ROOT_NAME.match(n)) and (v := int(m.group(1))) > newest]
    copy = files.get("root.json") if "root.json" in names else None
    if copy is not None:
        md = parse_metadata(copy, "root", "root.json")
        if md.signed.version > newest:
            above.append(md.signed.version)
    if above:
        listed = ", ".join(f"v{v}" for v in sorted(set(above)))
        raise RootGapError(
            f"the root history has a gap: expected {root_filename(newest + 1)} after root "
            f"v{newest}, found none, but newer root(s) are present ({listed}, counting the "
            "root.json copy)",
            hint=f"restore {root_filename(newest + 1)} (and any other missing root) from a "
            "trusted copy; every root version must stay published",
        )


def _get(files: MetadataSource, name: str, referrer: str | None) -> bytes:
    data = files.get(name)
    if data is None:
        named = f" (named by {referrer})" if referrer else ""
        raise InvalidMetadataError(f"expected {name}{named}, found none")
    return data
