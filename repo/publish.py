"""Crash-safe publication of a signed release.

Order (DESIGN.md "Publish"): new target files, then ``N.targets.json``, then
``N.snapshot.json``, then ``timestamp.json`` last. A new root (init, rotation) goes either
first or, when the new online metadata also verifies under the old root, after
``timestamp.json`` (``SignedRelease.root_last``, see ``repo.rotate``). Every file is written
to a hidden temp name, fsynced, renamed into place and its directory fsynced, so a reader
sees either the old or the new bytes. Until ``timestamp.json`` is replaced nothing a client
fetches points at the new files, so a crash at any point leaves the previous repository
valid; the orphans a crash leaves behind are overwritten or reused by the next attempt.

``publish`` takes only a ``SignedRelease``: there is no way to write metadata that was not
signed to threshold (STYLE.md §6). All writes go through a ``Disk`` so tests can fail any one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from repo.errors import PublisherBusyError, PublishError, RepositoryStateError, SecurityError
from repo.layout import LOCK_NAME, metadata_dir, stored_target_path, targets_dir
from repo.signing import SignedMetadata
from verifier.effects import Disk, RealDisk, WriteHandle, write_atomic
from verifier.errors import OtakitError
from verifier.hashing import Digest, Hasher, hash_path
from verifier.locking import exclusive_lock

CHUNK = 1 << 20


@dataclass(frozen=True)
class TargetBlob:
    """A target about to be published: its TUF entry and the built file holding its bytes."""

    target: TargetFile
    source: Path

    @property
    def sha256(self) -> str:
        return self.target.hashes["sha256"]


@dataclass(frozen=True)
class SignedRelease:
    """Everything one publication writes; built only by ``repo`` (init, release, refresh,
    rotation), always from ``SignedMetadata``."""

    blobs: tuple[TargetBlob, ...]
    targets: SignedMetadata | None  # None: a refresh re-signs only snapshot and timestamp
    snapshot: SignedMetadata
    timestamp: SignedMetadata
    root: SignedMetadata | None = None  # init and root rotation
    #: write the new root after timestamp.json instead of first (a bridged rotation)
    root_last: bool = False
    #: delegated targets roles (product roles, hash bins), written after targets, before
    #: snapshot (``repo.delegation``)
    delegated: tuple[SignedMetadata, ...] = ()


ProgressFn = Callable[[str], None]

#: Published files are public by nature; a web server running as another user must read them.
PUBLISHED_MODE = 0o644


class PublishDisk(RealDisk):
    """The real disk, but files are created world-readable (``RealDisk`` makes them 0600,
    right for device state, wrong for a repository served by nginx as www-data)."""

    #: directories too: nginx, running as another user, must traverse them
    dir_mode = 0o777  # before the umask, as ``mkdir`` does by default

    def open_write(self, path: Path, *, new: bool, truncate: bool = False) -> WriteHandle:
        handle = super().open_write(path, new=new, truncate=truncate)
        try:
            path.chmod(PUBLISHED_MODE)
        except OSError as e:
            handle.close()
            raise PublishError(f"cannot set permissions of {path}: {e.strerror or e}") from e
        return handle


def publish(
    repo_dir: Path,
    release: SignedRelease,
    *,
    disk: Disk | None = None,
    progress: ProgressFn | None = None,
) -> None:
    """Write ``release`` into ``repo_dir`` in crash-safe order (timestamp last)."""
    disk = disk or PublishDisk()
    say = progress or (lambda _msg: None)
    try:
        for blob in release.blobs:
            say(f"storing target {blob.target.path}")
            _store_blob(disk, repo_dir, blob)
        mdir = metadata_dir(repo_dir)
        if release.root is not None and not release.root_last:
            _write_root(disk, mdir, release.root, say)
        for md in (release.targets, *release.delegated, release.snapshot, release.timestamp):
            if md is not None:
                say(f"writing {md.filename}")
                write_atomic(disk, mdir / md.filename, md.data)
        if release.root is not None and release.root_last:
            _write_root(disk, mdir, release.root, say)
    except SecurityError:
        raise  # a changed source is not a disk problem: keep its family (exit 3)
    except (OtakitError, OSError) as e:
        reason = e.message if isinstance(e, OtakitError) else f"{e.strerror or e}"
        raise PublishError(
            f"publishing into {repo_dir} failed: {reason}",
            hint="the previously published repository is intact; fix the cause and rerun",
        ) from e


def _write_root(disk: Disk, mdir: Path, root: SignedMetadata, say: ProgressFn) -> None:
    say(f"writing {root.filename}")
    write_atomic(disk, mdir / root.filename, root.data)
    # root.json is a convenience copy for bootstrapping; clients fetch N.root.json.
    write_atomic(disk, mdir / "root.json", root.data)


def _store_blob(disk: Disk, repo_dir: Path, blob: TargetBlob) -> None:
    dest = stored_target_path(repo_dir, blob.target.path, blob.sha256)
    expected = Digest(blob.target.length, blob.sha256)
    if dest.is_file() and hash_path(dest) == expected:
        return  # same content-addressed bytes already there (an earlier attempt got this far)
    _make_dirs(disk, dest.parent, targets_dir(repo_dir))
    tmp = dest.with_name(f".{dest.name}.tmp")
    disk.unlink(tmp)  # left by an interrupted attempt; the new one is created exclusively
    h = disk.open_write(tmp, new=True)
    copied = Hasher()
    try:
        with blob.source.open("rb") as src:
            while chunk := src.read(CHUNK):
                h.pwrite(chunk, copied.length)
                copied.update(chunk)
                if copied.length > blob.target.length:
                    break
        h.fsync()
    finally:
        h.close()
    found = copied.digest()
    if found != expected:
        disk.unlink(tmp)
        raise SecurityError(
            f"target {blob.target.path}: expected {expected.length} bytes with sha256 "
            f"{expected.sha256}, found {found.length} bytes with sha256 {found.sha256} in "
            f"{blob.source} (changed since it was built?)"
        )
    disk.rename(tmp, dest)
    disk.fsync_dir(dest.parent)


def _make_dirs(disk: Disk, path: Path, top: Path) -> None:
    missing: list[Path] = []
    p = path
    while not p.is_dir() and p != top:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        disk.mkdir(d)
        disk.fsync_dir(d.parent)


@contextmanager
def publisher_lock(repo_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the repository so two releases cannot interleave.

    ``flock`` is released by the kernel when the process dies, so a crashed publisher never
    leaves a stale lock behind.
    """
    if not repo_dir.is_dir():
        raise RepositoryStateError(f"{repo_dir}: expected a repository directory, found none")
    with exclusive_lock(
        repo_dir / LOCK_NAME,
        holder="another publisher",
        busy=PublisherBusyError,
        cannot_open=RepositoryStateError,
    ):
        yield
