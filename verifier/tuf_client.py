"""The device's TUF client: python-tuf's ngclient behind a small, durable, typed wrapper.

Only ngclient's public API is used (``Updater``, ``UpdaterConfig``, ``FetcherInterface``,
``tuf.api.metadata``); what TUF leaves to the application is added here:

* **Explicit limits** (``TufLimits``) instead of library defaults.
* **A pinned trust anchor**: the root given at ``init`` (``STATE/root.json``) is the
  ``bootstrap`` of every ``Updater``; newer roots are reached only through the signed chain.
* **Durable metadata.** ngclient's cache write does not fsync. So the ``Updater`` runs on a
  scratch copy of the trusted metadata, and after a successful refresh the result is committed
  into ``STATE/metadata`` through the ``Disk``:

  - ``root/N.root.json``: the append-only chain of verified roots, each written atomically,
    first (ngclient treats a missing or invalid local root as absent, so a partial chain is
    harmless);
  - ``G.<role>.json``: a complete set of timestamp/snapshot/targets for generation ``G``;
  - ``current.json``: names the generation in force, replaced atomically *last*.

  A power cut therefore leaves the old or the new trusted set, never a mix; files of a dead
  generation are removed on the next commit.
* **One error hierarchy**: every tuf exception becomes ours, keeping its message.

Clock: ngclient checks expiry against the system clock (read when the ``Updater`` loads the
trusted root); its public API has no way to pass a reference time. A device whose clock is far
wrong will refuse fresh metadata (clock behind: "expired" never triggers, but rollback
protection still holds via version numbers; clock ahead: everything looks expired). Keep the
clock synced (NTP/RTC) — the error message says which file expired and when.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib import parse

import urllib3
from tuf.api import exceptions as tuf_exc

# tuf.api.metadata is the documented home of these names; it re-exports them without __all__.
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from verifier.artifact import CUSTOM_KEY, ArtifactInfo
from verifier.effects import Disk, write_atomic
from verifier.errors import (
    ArtifactSchemaError,
    ConfigError,
    MetadataError,
    OtakitError,
    StorageError,
    TargetVerificationError,
    TransportError,
)
from verifier.plan import Candidate
from verifier.state import StatePaths

log = logging.getLogger("otakit.tuf")

_GEN_FILE_RE = re.compile(r"^([0-9]{1,12})\.(.+)\.json$")
_ROOT_FILE_RE = re.compile(r"^([1-9][0-9]{0,8})\.root\.json$")
_HEX_RE = re.compile(r"^[0-9a-f]{16,128}$")


@dataclass(frozen=True)
class TufLimits:
    """Upper bounds for everything TUF downloads or walks (P4)."""

    max_root_rotations: int = 32
    max_delegations: int = 8
    root_max_length: int = 512 * 1024
    timestamp_max_length: int = 16 * 1024
    snapshot_max_length: int = 2 * 1024 * 1024
    targets_max_length: int = 16 * 1024 * 1024
    #: seconds to connect / between two received bytes
    socket_timeout: float = 30.0

    def updater_config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=self.max_delegations,
            root_max_length=self.root_max_length,
            timestamp_max_length=self.timestamp_max_length,
            snapshot_max_length=self.snapshot_max_length,
            targets_max_length=self.targets_max_length,
            prefix_targets_with_hash=True,
            app_user_agent="otakit-device",
        )


# --- fetchers --------------------------------------------------------------------------------


class OtaFetcher(FetcherInterface):
    """A TUF fetcher that may also resume a download (``fetch_from``)."""

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Fetch ``url`` from byte ``offset`` if the server allows; returns the real start."""
        return 0, self.fetch(url)


class HttpFetcher(OtaFetcher):
    """urllib3 with explicit timeouts, no automatic retries, and HTTP Range resumption."""

    def __init__(self, *, socket_timeout: float = 30.0, chunk_size: int = 256 * 1024) -> None:
        self._timeout = urllib3.Timeout(connect=socket_timeout, read=socket_timeout)
        self._chunk = chunk_size
        self._pool = urllib3.PoolManager(
            retries=False, headers={"User-Agent": "otakit-device"}, timeout=self._timeout
        )

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                "GET", url, headers=headers, preload_content=False, redirect=False
            )
        except urllib3.exceptions.TimeoutError as e:
            raise tuf_exc.SlowRetrievalError(f"timed out connecting to {url}") from e
        except urllib3.exceptions.HTTPError as e:
            raise tuf_exc.DownloadError(f"cannot fetch {url}: {e}") from e

    def _fetch(self, url: str) -> Iterator[bytes]:
        resp = self._request(url, {})
        if resp.status != 200:
            resp.release_conn()
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        return self._chunks(url, resp)

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        if offset <= 0:
            return 0, self.fetch(url)
        resp = self._request(url, {"Range": f"bytes={offset}-"})
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if content_range.startswith(f"bytes {offset}-"):
                return offset, self._chunks(url, resp)
        elif resp.status == 200:
            return 0, self._chunks(url, resp)
        resp.release_conn()
        if resp.status >= 400 and resp.status != 416:
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        # A range answer we cannot use cleanly (416, odd Content-Range): restart from zero.
        return 0, self.fetch(url)

    def _chunks(self, url: str, resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from resp.stream(self._chunk)
        except urllib3.exceptions.TimeoutError as e:
            raise tuf_exc.SlowRetrievalError(f"timed out reading {url}") from e
        except urllib3.exceptions.HTTPError as e:
            raise tuf_exc.DownloadError(f"connection broke while reading {url}: {e}") from e
        finally:
            resp.release_conn()


# --- error mapping ---------------------------------------------------------------------------


def map_tuf_error(exc: BaseException, context: str) -> OtakitError:
    """Our error for a tuf (or OS) exception, keeping its message."""
    if isinstance(exc, OtakitError):
        return exc
    msg = f"{context}: {type(exc).__name__}: {exc}"
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return MetadataError(
            f"{context}: bad signature: {exc} (expected the threshold of valid signatures "
            f"by keys the trusted metadata authorizes)",
            hint="the metadata was not signed by the authorized keys; do not trust this server",
        )
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return MetadataError(
            msg,
            hint="the repository must re-sign timestamp/snapshot; "
            "if it did, check this device's clock",
        )
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        return MetadataError(
            msg,
            hint="the server offers older metadata than this device "
            "already trusts (rollback or freeze attack, or a stale mirror)",
        )
    if isinstance(exc, tuf_exc.LengthOrHashMismatchError):
        return TargetVerificationError(msg)
    if isinstance(exc, tuf_exc.RepositoryError):
        return MetadataError(msg)
    if isinstance(exc, tuf_exc.DownloadLengthMismatchError):
        return MetadataError(msg + " (larger than the configured or signed maximum)")
    if isinstance(exc, tuf_exc.DownloadHTTPError):
        return TransportError(msg, hint="check the repository URL and that the server is up")
    if isinstance(exc, tuf_exc.DownloadError):
        return TransportError(msg, hint="retry later")
    if isinstance(exc, OSError):
        return StorageError(msg)
    return MetadataError(msg)


@contextlib.contextmanager
def tuf_errors(context: str) -> Iterator[None]:
    try:
        yield
    except OtakitError:
        raise
    except (tuf_exc.RepositoryError, tuf_exc.DownloadError, OSError, ValueError) as e:
        raise map_tuf_error(e, context) from e


# --- durable trusted metadata ----------------------------------------------------------------


class TrustedStore:
    """``STATE/metadata``: verified TUF metadata, committed so a crash never mixes two sets."""

    def __init__(self, directory: Path, disk: Disk) -> None:
        self.dir = directory
        self.disk = disk

    @property
    def _roots(self) -> Path:
        return self.dir / "root"

    def current(self) -> tuple[int, dict[str, Path]]:
        """The generation in force and its role files (role name -> path)."""
        try:
            raw = json.loads((self.dir / "current.json").read_bytes())
        except FileNotFoundError:
            return 0, {}
        except (OSError, ValueError) as e:
            raise ConfigError(f"trusted metadata pointer {self.dir}/current.json: {e}") from e
        gen = raw.get("generation") if isinstance(raw, dict) else None
        roles = raw.get("roles") if isinstance(raw, dict) else None
        if not isinstance(gen, int) or not isinstance(roles, list):
            raise ConfigError(f"trusted metadata pointer {self.dir}/current.json is malformed")
        return gen, {r: self.dir / f"{gen}.{parse.quote(r, '')}.json" for r in roles}

    def root_versions(self) -> list[tuple[int, Path]]:
        if not self._roots.is_dir():
            return []
        found = []
        for p in self._roots.iterdir():
            m = _ROOT_FILE_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def materialize(self, scratch: Path) -> None:
        """Lay the trusted set out the way ngclient expects it in ``metadata_dir``."""
        (scratch / "root_history").mkdir(parents=True, exist_ok=True)
        for version, p in self.root_versions():
            shutil.copyfile(p, scratch / "root_history" / f"{version}.root.json")
        for role, p in self.current()[1].items():
            shutil.copyfile(p, scratch / f"{parse.quote(role, '')}.json")

    def commit_roots(self, scratch: Path) -> bool:
        """Persist the roots ngclient verified into ``scratch``; returns whether any were new."""
        self.disk.mkdir(self._roots)
        known = dict(self.root_versions())
        hist = scratch / "root_history"
        new_roots = []
        for p in hist.iterdir() if hist.is_dir() else []:
            m = _ROOT_FILE_RE.match(p.name)
            if not m:
                continue
            version = int(m.group(1))
            # ngclient verified everything it left here; a stored copy that differs (damaged
            # or tampered, hence skipped by newest_verified_root) is replaced, not kept.
            if version not in known or known[version].read_bytes() != p.read_bytes():
                new_roots.append((version, p))
        for version, p in sorted(new_roots):
            write_atomic(self.disk, self._roots / f"{version}.root.json", p.read_bytes())
        return bool(new_roots)

    def commit(self, scratch: Path) -> bool:
        """Persist what ngclient left in ``scratch``; returns whether anything changed."""
        new_roots = self.commit_roots(scratch)

        gen, files = self.current()
        scratch_roles: dict[str, bytes] = {}
        for p in scratch.iterdir():
            if p.is_file() and not p.is_symlink() and p.suffix == ".json" and p.name != "root.json":
                scratch_roles[parse.unquote(p.name[: -len(".json")])] = p.read_bytes()
        unchanged = set(scratch_roles) == set(files) and all(
            files[r].read_bytes() == data for r, data in scratch_roles.items()
        )
        if unchanged:
            return bool(new_roots)
        new_gen = gen + 1
        for role, data in sorted(scratch_roles.items()):
            write_atomic(self.disk, self.dir / f"{new_gen}.{parse.quote(role, '')}.json", data)
        pointer = {"generation": new_gen, "roles": sorted(scratch_roles)}
        write_atomic(self.disk, self.dir / "current.json", json.dumps(pointer).encode() + b"\n")
        self._collect(new_gen)
        return True

    def _collect(self, keep: int) -> None:
        for p in self.dir.iterdir():
            m = _GEN_FILE_RE.match(p.name)
            if m and int(m.group(1)) != keep:
                self.disk.unlink(p)


# --- the client ------------------------------------------------------------------------------


def load_root_bytes(path: Path) -> bytes:
    """Read and check a root file: parseable TUF root metadata signed by its own threshold."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read root metadata {path}: {e.strerror}") from e
    with tuf_errors(f"root metadata {path}"):
        md = Metadata[Root].from_bytes(data)
        if not isinstance(md.signed, Root):
            raise MetadataError(f"{path}: expected root metadata, found {md.signed.type}")
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    return data


class TufClient:
    """One refresh-and-download session against the repository (use as a context manager)."""

    def __init__(
        self,
        paths: StatePaths,
        metadata_url: str,
        targets_url: str,
        disk: Disk,
        *,
        fetcher: OtaFetcher | None = None,
        limits: TufLimits | None = None,
    ) -> None:
        self.limits = limits or TufLimits()
        self.fetcher = fetcher or HttpFetcher(socket_timeout=self.limits.socket_timeout)
        self.store = TrustedStore(paths.metadata, disk)
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        self._scratch = Path(tempfile.mkdtemp(prefix="otakit-tuf-"))
        try:
            self.store.materialize(self._scratch)
            # Bootstrap from the newest root whose chain from the pinned root verifies, as
            # ngclient does from its cache: python-tuf walks at most max_root_rotations
            # versions *from the bootstrap root*, so bootstrapping from the pinned root
            # would strand every device once a repository has had that many roots.
            with tuf_errors("loading the trusted root"):
                bootstrap = newest_verified_root(paths, self.store)
        except OSError as e:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise ConfigError(f"cannot load trusted metadata from {paths.root}: {e}") from e
        except OtakitError:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        with tuf_errors("loading the trusted root"):
            self._updater = Updater(
                str(self._scratch),
                metadata_url,
                str(self._scratch / "targets"),
                self.targets_url,
                self.fetcher,
                self.limits.updater_config(),
                bootstrap=bootstrap,
            )

    def __enter__(self) -> TufClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def refresh(self) -> list[Candidate]:
        """TUF §5 top-level refresh, committed durably; returns the verified otakit targets."""
        try:
            with tuf_errors("repository metadata"):
                self._updater.refresh()
        except OtakitError:
            # Roots ngclient verified (each against its predecessor) are progress even when a
            # later step failed: keep them, so a device far behind advances on every attempt.
            self.store.commit_roots(self._scratch)
            raise
        self.store.commit(self._scratch)
        with tuf_errors("reading verified targets"):
            md = Metadata[Targets].from_bytes((self._scratch / "targets.json").read_bytes())
            out = []
            for path in md.signed.targets:
                tf = self._updater.get_targetinfo(path)
                if tf is not None:
                    c = candidate(tf)
                    if c is not None:
                        out.append(c)
        return out

    def consistent_snapshot(self) -> bool:
        with tuf_errors("reading the trusted root"):
            return bool(
                Metadata[Root]
                .from_bytes((self._scratch / "root.json").read_bytes())
                .signed.consistent_snapshot
            )

    def target_url(self, c: Candidate) -> str:
        """The download URL, hash-prefixed as ngclient does with consistent snapshots."""
        return target_url(self.targets_url, c, self.consistent_snapshot())


def target_url(targets_url: str, c: Candidate, consistent_snapshot: bool) -> str:
    dirname, sep, basename = c.path.rpartition("/")
    name = c.path
    if consistent_snapshot:
        digest = dict(c.hashes).get("sha256", c.hashes[0][1])
        name = f"{dirname}{sep}{digest}.{basename}"
    base = targets_url if targets_url.endswith("/") else targets_url + "/"
    return base + parse.quote(name)


def candidate(tf: TargetFile) -> Candidate | None:
    """A plan candidate from a verified target; None for targets that are not otakit's.

    A repository may sign other files too (no ``custom``, or ``custom`` without our key):
    they are not candidates, and must not break the refresh.
    """
    custom = tf.unrecognized_fields.get("custom")
    if not isinstance(custom, dict) or CUSTOM_KEY not in custom:
        return None
    try:
        info = ArtifactInfo.from_custom(custom)
    except ArtifactSchemaError as e:
        log.warning("ignoring target %s: %s", tf.path, e.message)
        return None
    if not tf.hashes or not all(_HEX_RE.match(h) for h in tf.hashes.values()):
        log.warning("ignoring target %s: no usable hex hash", tf.path)
        return None
    return Candidate(tf.path, tf.length, tuple(tf.hashes.items()), info)


def newest_verified_root(paths: StatePaths, store: TrustedStore) -> bytes:
    """The newest stored root whose chain from the pinned root verifies, as bytes.

    Each step must be signed by a threshold of the previous root and of itself (TUF 5.3.4-5).
    A gap or a bad link ends the walk: what follows it is ignored, never trusted. Expiry is
    not checked here (intermediate roots may have expired; the refresh checks the final one).
    """
    data = paths.pinned_root.read_bytes()
    root = Metadata[Root].from_bytes(data)
    for version, p in store.root_versions():
        if version <= root.signed.version:
            continue
        if version != root.signed.version + 1:
            break
        new_data = p.read_bytes()
        new = Metadata[Root].from_bytes(new_data)
        if new.signed.version != version:
            break
        try:
            root.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            new.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
        except tuf_exc.UnsignedMetadataError as e:
            log.warning(
                "stored root %d does not verify (%s); ignoring it and later ones", version, e
            )
            break
        root, data = new, new_data
    return data


def trusted_candidates(paths: StatePaths) -> list[Candidate]:
    """The otakit targets of the trusted metadata, offline (for verify-installed and status).

    Checks the stored root chain from the pinned root and the targets signatures against the
    newest root, and that targets is the version the trusted snapshot names. Expiry is not
    checked: this answers "what did the repository sign", not "is it fresh".
    """
    store = TrustedStore(paths.metadata, _NoDisk())
    with tuf_errors("trusted metadata"):
        root = Metadata[Root].from_bytes(newest_verified_root(paths, store))
        files = store.current()[1]
        if "targets" not in files or "snapshot" not in files:
            raise MetadataError(
                f"no trusted targets metadata in {paths.metadata}",
                hint="run 'otakit-device update' once with network access",
            )
        targets = Metadata[Targets].from_bytes(files["targets"].read_bytes())
        root.signed.verify_delegate(Targets.type, targets.signed_bytes, targets.signatures)
        snapshot = Metadata[Snapshot].from_bytes(files["snapshot"].read_bytes())
        root.signed.verify_delegate(Snapshot.type, snapshot.signed_bytes, snapshot.signatures)
        meta = snapshot.signed.meta.get("targets.json")
        if meta is None or meta.version != targets.signed.version:
            raise MetadataError(
                f"trusted targets version {targets.signed.version} is not the one the trusted "
                f"snapshot names ({None if meta is None else meta.version})"
            )
    return [c for tf in targets.signed.targets.values() if (c := candidate(tf)) is not None]


class _NoDisk:
    """Reading the store needs no effects; any attempt is a programming error."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"read-only trusted store: {name} not allowed")
