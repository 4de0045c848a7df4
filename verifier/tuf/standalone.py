"""A standalone TUF client over a plain metadata directory (``otakit-device tuf``).

Other tools and interoperability suites drive a TUF client through a directory whose layout
the TUF client workflow prescribes, not through the device's own store (``store.py`` keeps
versioned roots and generations so a power cut never mixes two sets). Here the directory
holds exactly the trusted metadata, under unversioned names:

* ``root.json`` — the newest trusted root; ``init`` writes only this file;
* ``timestamp.json``, ``snapshot.json``, ``targets.json``;
* a delegated role as its percent-encoded name (``a/b`` is ``a%2Fb.json``).

The workflow itself (TUF §5: root chain, freeze and rollback checks, the pre-order
depth-first delegation search with terminating roles, a visited set and
``TufLimits.max_delegations``) is python-tuf's ``Updater``, with our fetcher and bounds. It
runs on a private scratch copy, because its own cache layout differs (``root_history/`` and a
``root.json`` symlink) and its writes are not durable. When the ``Updater`` step ends —
also when it fails part-way — every file it accepted is written back here atomically, in the
order of the workflow (roots, timestamp, snapshot, targets, delegated roles), after the
checks the device applies to the same bytes (``checks``, ``rootchain``: strict parsing, a
threshold of *distinct* keys). So a refresh that verifies a new timestamp and then meets a
rolled-back snapshot keeps the new timestamp, as the specification says, and nothing that
failed is ever written. The stored bytes are the bytes received.

Remote metadata passes ``checks.precheck`` on its way in, as on the device (strict JSON, no
signature listed twice, no key under two ids in a root or a delegation), so a document the
device refuses is refused here too, before python-tuf reads it. When a new root rotates the
timestamp or snapshot keys, the trusted timestamp and snapshot are deleted (TUF 5.3.11: the
way out of a fast-forward attack) unless this step verified new ones. One step runs at a time
on a metadata directory: an exclusive ``flock`` on the directory itself, so no file other than
the metadata appears in it.

Targets land in the target directory under ngclient's file name, the target path
percent-encoded (``images/sub/a.img`` is ``images%2Fsub%2Fa.img``): one name, no
sub-directories, nothing an untrusted path can steer (P3). A target already there and
matching its signed length and hashes is not downloaded again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib import parse

from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]
from tuf.ngclient.updater import Updater

from verifier.effects import Disk, copy_stream, write_atomic
from verifier.errors import ConfigError, DeviceBusyError, OtakitError, UsageError
from verifier.locking import exclusive_lock
from verifier.tuf import rootchain
from verifier.tuf.checks import TOP_LEVEL_ROLES, check_signatures, parse_metadata
from verifier.tuf.client import TufLimits, load_root_bytes
from verifier.tuf.failures import tuf_errors
from verifier.tuf.fetcher import HttpFetcher, OtaFetcher
from verifier.tuf.strictfetch import PrecheckingFetcher

_T = TypeVar("_T")

#: The roles after root, in the order the workflow verifies them.
_ORDER = ("timestamp", "snapshot", "targets")

#: A partial target's name ends in a character percent-encoding never leaves in a file name,
#: so it cannot collide with a target's name.
_PARTIAL = ",partial"


def role_filename(role: str) -> str:
    """``root.json``, ``a%2Fb.json``: the unversioned name ngclient and the spec use."""
    return f"{parse.quote(role, '')}.json"


def target_filename(path: str) -> str:
    """The target directory's name for target ``path``: one path component, never a way out."""
    name = parse.quote(path, "")
    if name in ("", ".", ".."):
        raise UsageError(
            f"target name {path!r}: expected a path that can be stored as a file name, found "
            "one that names a directory"
        )
    return name


@dataclass(frozen=True)
class TrustedMetadata:
    """What the metadata directory holds after a step: role -> version, root first."""

    metadata_dir: Path
    versions: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"metadata_dir": str(self.metadata_dir), "versions": dict(self.versions)}

    def describe(self) -> str:
        return ", ".join(f"{role} v{version}" for role, version in self.versions)


@dataclass(frozen=True)
class FetchedTarget:
    """One target in the target directory; ``downloaded`` False: it was there and valid."""

    name: str
    file: Path
    length: int
    downloaded: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": str(self.file),
            "length": self.length,
            "downloaded": self.downloaded,
        }


@dataclass(frozen=True)
class Downloaded:
    metadata: TrustedMetadata
    targets: tuple[FetchedTarget, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.metadata.to_dict(), "targets": [t.to_dict() for t in self.targets]}


# --- the metadata directory -------------------------------------------------------------------


def _kind(role: str) -> str:
    """The ``_type`` a role's metadata has: delegated roles are targets metadata."""
    return role if role in TOP_LEVEL_ROLES else "targets"


def _trusted_roles(metadata_dir: Path) -> dict[str, Path]:
    """The role files in the directory (role name -> path), root excluded; other files are
    not ours and are left alone."""
    found: dict[str, Path] = {}
    for p in sorted(metadata_dir.iterdir()):
        if not p.name.endswith(".json") or p.name.startswith(".") or not p.is_file():
            continue
        role = parse.unquote(p.name.removesuffix(".json"))
        if role != "root" and role_filename(role) == p.name:
            found[role] = p
    return found


def _corrupt(path: Path, e: OtakitError) -> ConfigError:
    return ConfigError(
        f"trusted metadata is corrupt: {e.message}",
        hint=f"restore it from a backup, or remove {path.parent} and run 'otakit-device tuf "
        "init' again with a root you trust (removing a file gives up its rollback protection)",
    )


def _load_trusted(metadata_dir: Path) -> tuple[bytes, dict[str, bytes]]:
    """The trusted root and role files, each parsed before any use: a damaged file is an
    error, never silently dropped with the rollback floor it holds."""
    root_path = metadata_dir / "root.json"
    try:
        root = root_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{metadata_dir}: no trusted root.json (expected the directory 'tuf init' set up)",
            hint=f"run 'otakit-device tuf --metadata-dir {metadata_dir} init ROOT.json' first",
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {root_path}: {e.strerror or e}") from e
    try:
        md = parse_metadata(root, "root", str(root_path))
        check_signatures(md.signed, "root", md, f"trusted root {root_path}")
    except OtakitError as e:
        raise _corrupt(root_path, e) from e
    roles = {}
    for role, path in _trusted_roles(metadata_dir).items():
        data = path.read_bytes()
        try:
            parse_metadata(data, _kind(role), str(path))
        except OtakitError as e:
            raise _corrupt(path, e) from e
        roles[role] = data
    return root, roles


def trusted_metadata(metadata_dir: Path) -> TrustedMetadata:
    """The versions on disk, for the result of a step."""
    versions = []
    for role, path in (
        ("root", metadata_dir / "root.json"),
        *_ordered(_trusted_roles(metadata_dir)),
    ):
        if path.is_file():
            md = parse_metadata(path.read_bytes(), _kind(role), str(path))
            versions.append((role, int(md.signed.version)))
    return TrustedMetadata(metadata_dir, tuple(versions))


def _ordered(roles: dict[str, Any]) -> list[tuple[str, Any]]:
    """Top-level roles in workflow order, then delegated roles by name."""
    top = [(r, roles[r]) for r in _ORDER if r in roles]
    return top + sorted((r, v) for r, v in roles.items() if r not in _ORDER)


def init_metadata(
    metadata_dir: Path, root_file: Path, disk: Disk, *, limits: TufLimits | None = None
) -> TrustedMetadata:
    """Pin ``root_file`` as the trust anchor: a new directory holding only ``root.json``."""
    limits = limits or TufLimits()
    data = load_root_bytes(root_file, max_length=limits.root_max_length)
    if (metadata_dir / "root.json").exists() or (
        metadata_dir.is_dir() and _trusted_roles(metadata_dir)
    ):
        raise ConfigError(
            f"{metadata_dir} already holds trusted metadata; expected a new or empty directory",
            hint="to start over from another root, remove the directory first",
        )
    disk.mkdir(metadata_dir)
    write_atomic(disk, metadata_dir / "root.json", data)
    return trusted_metadata(metadata_dir)


# --- one Updater step on a scratch copy, written back as it verified ----------------------------


class _Session:
    """ngclient's ``Updater`` on a private scratch copy of the metadata directory."""

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        target_base_url: str | None,
        disk: Disk,
        fetcher: PrecheckingFetcher,
        limits: TufLimits,
        scratch: Path,
    ) -> None:
        self.dir = metadata_dir
        self.disk = disk
        self.scratch = scratch
        self.root, self.roles = _load_trusted(metadata_dir)
        for role, data in self.roles.items():
            (scratch / role_filename(role)).write_bytes(data)
        with tuf_errors("loading the trusted root"):
            self.updater = Updater(
                str(scratch),
                metadata_url,
                str(scratch / "targets"),
                target_base_url,
                fetcher,
                limits.updater_config(),
                bootstrap=self.root,
            )

    def step(self, context: str, work: Callable[[Updater], _T]) -> _T:
        """Run ``work`` on the updater, then write back what it verified (also on failure)."""
        try:
            with tuf_errors(context):
                return work(self.updater)
        finally:
            self._write_back()

    def _scratch_root(self, version: int) -> bytes | None:
        path = self.scratch / "root_history" / rootchain.root_filename(version)
        return path.read_bytes() if path.is_file() else None

    def _write_back(self) -> None:
        chain = rootchain.walk_root_chain(
            self.root,
            self._scratch_root,
            label="new",
            trusted_name=f"trusted root {self.dir / 'root.json'}",
        )
        if chain.newest.data != self.root:
            old = parse_metadata(self.root, "root", "trusted root").signed
            write_atomic(self.disk, self.dir / "root.json", chain.newest.data)
            self.root = chain.newest.data
            self._forget_rotated(old, chain.newest.metadata.signed)
        if chain.stop is not None:
            raise chain.stop
        authority = chain.newest.metadata.signed
        for role, path in _ordered(_trusted_roles(self.scratch)):
            data = path.read_bytes()
            if self.roles.get(role) == data:
                continue
            md = parse_metadata(data, _kind(role), f"new {role_filename(role)}")
            if role in TOP_LEVEL_ROLES:
                check_signatures(authority, role, md, f"new {role}")
            write_atomic(self.disk, self.dir / role_filename(role), data)
            self.roles[role] = data

    def _forget_rotated(self, old: Any, new: Any) -> None:
        """TUF 5.3.11: timestamp and snapshot keys rotated: the trusted timestamp and
        snapshot go, unless this step already verified new ones (they differ from the old)."""
        rotated = any(
            (set(old.roles[r].keyids), old.roles[r].threshold)
            != (set(new.roles[r].keyids), new.roles[r].threshold)
            for r in ("timestamp", "snapshot")
        )
        if not rotated:
            return
        for role in ("timestamp", "snapshot"):
            kept = self.roles.get(role)
            scratch = self.scratch / role_filename(role)
            if kept is not None and (not scratch.is_file() or scratch.read_bytes() == kept):
                self.disk.unlink(self.dir / role_filename(role))
                del self.roles[role]
        self.disk.fsync_dir(self.dir)


@contextmanager
def _session(
    metadata_dir: Path,
    metadata_url: str,
    target_base_url: str | None,
    disk: Disk,
    fetcher: OtaFetcher | None,
    limits: TufLimits | None,
) -> Iterator[_Session]:
    limits = limits or TufLimits()
    checked = PrecheckingFetcher(fetcher or HttpFetcher(limits.transfer))
    with _locked(metadata_dir):
        scratch = Path(tempfile.mkdtemp(prefix="otakit-tuf-"))  # mode 0700: private
        try:
            yield _Session(
                metadata_dir, metadata_url, target_base_url, disk, checked, limits, scratch
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _locked(metadata_dir: Path) -> Iterator[None]:
    """One step at a time per metadata directory (none yet: ``_load_trusted`` says so)."""
    if not metadata_dir.is_dir():
        yield
        return
    with exclusive_lock(
        metadata_dir,
        holder="another otakit-device tuf",
        busy=DeviceBusyError,
        cannot_open=ConfigError,
    ):
        yield


def refresh(
    metadata_dir: Path,
    metadata_url: str,
    disk: Disk,
    *,
    fetcher: OtaFetcher | None = None,
    limits: TufLimits | None = None,
) -> TrustedMetadata:
    """TUF §5 top-level refresh: root chain, timestamp, snapshot, targets."""
    with _session(metadata_dir, metadata_url, None, disk, fetcher, limits) as s:
        s.step("refresh", lambda u: u.refresh())
    return trusted_metadata(metadata_dir)


def download(
    metadata_dir: Path,
    metadata_url: str,
    target_base_url: str,
    target_dir: Path,
    names: Sequence[str],
    disk: Disk,
    *,
    fetcher: OtaFetcher | None = None,
    limits: TufLimits | None = None,
) -> Downloaded:
    """Refresh, find each target through the delegations, and download the missing ones."""
    if not names:
        raise UsageError("download: expected at least one --target-name, found none")
    files = {name: target_dir / target_filename(name) for name in names}
    with _session(metadata_dir, metadata_url, target_base_url, disk, fetcher, limits) as s:
        s.step("refresh", lambda u: u.refresh())
        disk.mkdir(target_dir)
        out = []
        for name, dest in files.items():
            tf = s.step(f"target {name}", partial(Updater.get_targetinfo, target_path=name))
            if tf is None:
                raise UsageError(
                    f"target {name!r}: expected it in the trusted targets metadata or a role "
                    "delegated for its path, found it in none"
                )
            downloaded = s.updater.find_cached_target(tf, str(dest)) is None
            if downloaded:
                _fetch_target(s, tf, dest)
            out.append(FetchedTarget(name, dest, tf.length, downloaded))
    return Downloaded(trusted_metadata(metadata_dir), tuple(out))


def _fetch_target(s: _Session, tf: TargetFile, dest: Path) -> None:
    """Download into the private scratch directory (ngclient checks length and hashes), check
    the same file again through the descriptor it is copied from, then rename it into place."""
    scratch_file = s.scratch / "targets" / dest.name
    with tuf_errors(f"target {tf.path}"):
        s.updater.download_target(tf, str(scratch_file))
    partial = dest.with_name(dest.name + _PARTIAL)
    try:
        with scratch_file.open("rb") as f, tuf_errors(f"target {tf.path}"):
            tf.verify_length_and_hashes(f)
            f.seek(0)
            copy_stream(s.disk, f, partial)
        s.disk.rename(partial, dest)
        s.disk.fsync_dir(dest.parent)
    except BaseException:
        if os.path.lexists(partial):
            s.disk.unlink(partial)
        raise
    finally:
        scratch_file.unlink(missing_ok=True)
