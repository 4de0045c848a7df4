"""The device's TUF client: python-tuf's ngclient behind a small, durable, typed wrapper.

Only ngclient's public API is used (``Updater``, ``UpdaterConfig``, ``FetcherInterface``,
``tuf.api.metadata``); what TUF leaves to the application is added around it:

* **Explicit limits** (``TufLimits``) instead of library defaults.
* **A pinned trust anchor**: the root given at ``init`` (``STATE/root.json``) is where every
  walk starts; newer roots are reached only through the signed chain (``rootchain``).
* **Durable metadata** (``store``): the ``Updater`` runs on a scratch copy of the trusted
  metadata, committed after a successful refresh so a power cut never mixes two sets.
* **One error hierarchy** (``failures``): every tuf exception becomes ours, keeping its text.
* **Strict bytes** (``checks.precheck``): what ngclient downloads (``strictfetch``) and what it
  reads back from the store is refused before python-tuf parses it if it has a duplicate JSON
  key, a signature listed twice or a key under two ids; damaged local trust is an error.
* **A clock floor** (``verifier.timefloor``): expiry is checked against ``max(now, floor)``,
  ``now`` being the caller's clock (time is passed in), and the floor is advanced after every
  refresh attempt.

ngclient reads the clock once, when the ``Updater`` loads its trusted root, into
``TrustedMetadataSet.reference_time``, and offers no public way to pass one. That attribute
is the one private name this wrapper sets (``_set_reference_time``, failing closed if it is
gone); tests/verifier/test_clock_floor.py pins it.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib import parse

# tuf.api.metadata is the documented home of these names; it re-exports them without __all__.
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets  # type: ignore[attr-defined]
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.updater import Updater

from verifier.artifact import CUSTOM_KEY, ArtifactInfo
from verifier.download import SignedFile
from verifier.effects import Disk
from verifier.errors import (
    ArtifactSchemaError,
    ConfigError,
    InternalError,
    MetadataError,
    MetadataExpiredError,
    OtakitError,
    TrustedMetadataError,
    UsageError,
)
from verifier.plan import Candidate
from verifier.state import StatePaths
from verifier.timefloor import floor_path, load_floor, save_floor
from verifier.tuf import rootchain
from verifier.tuf.checks import check_signatures, precheck, try_parse
from verifier.tuf.delegations import LoadFn, Visit, listed_paths, verify_delegated, walk_roles
from verifier.tuf.failures import tuf_errors
from verifier.tuf.fetcher import HttpFetcher, OtaFetcher
from verifier.tuf.store import RECOVERY_HINT, NoDisk, TrustedStore, read_trusted
from verifier.tuf.strictfetch import PrecheckingFetcher
from verifier.tuf.transfer import TransferLimits

log = logging.getLogger("otakit.tuf")

_HEX_RE = re.compile(r"^[0-9a-f]{16,128}\Z")


@dataclass(frozen=True)
class TufLimits:
    """Upper bounds for everything TUF downloads or walks (P4)."""

    max_root_rotations: int = 32
    max_delegations: int = 8
    root_max_length: int = 512 * 1024
    timestamp_max_length: int = 16 * 1024
    snapshot_max_length: int = 2 * 1024 * 1024
    targets_max_length: int = 16 * 1024 * 1024
    #: timeouts, minimum throughput and deadlines of every download (the fetcher's limits:
    #: the publisher's HTTP source uses the same fetcher without TUF's other bounds)
    transfer: TransferLimits = field(default_factory=TransferLimits)

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


_ROOT_HINT = "give the repository's metadata/1.root.json, or a later root you already trust"


def load_root_bytes(path: Path, *, max_length: int = TufLimits.root_max_length) -> bytes:
    """Read and check a root file: parseable TUF root metadata signed by its own threshold.

    Read bounded (P4): ``--root`` pointed at an image by mistake must not read gigabytes.
    """
    try:
        with path.open("rb") as f:
            data = f.read(max_length + 1)
    except OSError as e:
        raise ConfigError(
            f"cannot read root metadata {path}: {e.strerror or e}", hint=_ROOT_HINT
        ) from e
    if len(data) > max_length:
        raise UsageError(
            f"{path}: not a TUF root metadata JSON file (expected at most {max_length} bytes, "
            f"found more)",
            hint=_ROOT_HINT,
        )
    md, found = try_parse(data, "root")
    if md is None:
        raise UsageError(
            f"{path}: not a TUF root metadata JSON file (expected a JSON object with 'signed' "
            f"of type root and 'signatures', found {found})",
            hint=_ROOT_HINT,
        )
    precheck(data, f"{path}", error=UsageError)  # what python-tuf accepted but we do not
    check_signatures(md.signed, "root", md, f"{path}: root")
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
        now: datetime,
        fetcher: OtaFetcher | None = None,
        limits: TufLimits | None = None,
        defer_commit: bool = False,
    ) -> None:
        self.limits = limits or TufLimits()
        self.now = now
        #: a medium's metadata (``update --from``) is kept in the scratch copy until
        #: ``commit`` (after the install verified): a stick whose image is bad leaves the
        #: trusted metadata as it was, even when the stick's metadata is genuine and newer
        self.defer_commit = defer_commit
        self._uncommitted = False
        self._paths = paths
        self._disk = disk
        self._floor_path = floor_path(paths.root)
        self.floor = load_floor(self._floor_path)
        #: what expiry is checked against: the caller's clock, unless behind the floor
        self.reference_time = self.floor.reference(now)
        self.fetcher = fetcher or HttpFetcher(self.limits.transfer)
        self.store = TrustedStore(paths.metadata, disk)
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        self._scratch = Path(tempfile.mkdtemp(prefix="otakit-tuf-"))
        try:
            # Bootstrap from the newest root whose chain from the pinned root verifies, as
            # ngclient does from its cache: python-tuf walks at most max_root_rotations
            # versions *from the bootstrap root*, so bootstrapping from the pinned root
            # would strand every device once a repository has had that many roots.
            with tuf_errors("loading the trusted root"):
                chain = _trusted_chain(paths, self.store)
            self.store.check_roles([r.metadata.signed for r in chain.roots])
            self.store.materialize(self._scratch)
        except OSError as e:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise ConfigError(f"cannot load trusted metadata from {paths.root}: {e}") from e
        except OtakitError:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self._metadata_fetcher = PrecheckingFetcher(self.fetcher)
        with tuf_errors("loading the trusted root"):
            self._updater = Updater(
                str(self._scratch),
                metadata_url,
                str(self._scratch / "targets"),
                self.targets_url,
                self._metadata_fetcher,
                self.limits.updater_config(),
                bootstrap=chain.newest.data,
            )
        _set_reference_time(self._updater, self.reference_time)

    def __enter__(self) -> TufClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def refresh(self, product: str | None = None) -> list[Candidate]:
        """TUF §5 top-level refresh, then the delegation search for ``product`` (None: every
        product), committed durably; returns the verified otakit targets.

        Roles are listed by ``delegations.walk_roles`` (each loaded through ngclient, so every
        TUF check applies); every listed path is then resolved with ``get_targetinfo``, so
        the role TUF's own search reaches first decides which entry counts. Nothing is
        committed unless the whole search succeeded: the stored set stays one that agrees
        with itself (snapshot and delegated roles of one publication).
        """
        load = _role_loader(self._updater)  # before any download: fails closed
        try:
            with tuf_errors(self._metadata_context):
                self._updater.refresh()
                top = (
                    Metadata[Targets]
                    .from_bytes((self._scratch / "targets.json").read_bytes())
                    .signed
                )
                visits = walk_roles(top, load, product, self.limits.max_delegations)
                out = []
                for path in listed_paths(visits):
                    tf = self._updater.get_targetinfo(path)
                    if tf is not None:
                        c = candidate(tf)
                        if c is not None:
                            out.append(c)
        except OtakitError:
            self._keep_progress()
            raise
        self._refreshed()
        return out

    def _metadata_context(self) -> str:
        last = self._metadata_fetcher.last_file
        return "repository metadata" + (f" ({last} from the repository)" if last else "")

    def refresh_target(self, path: str) -> TargetFile | None:
        """TUF §5 refresh, then TUF's own search for ``path`` through the delegations
        (ngclient's ``get_targetinfo``: every role on the way verified, bounded by
        ``max_delegations``), committed as ``refresh`` commits; None if nothing signs it.

        Any target, not only otakit's images (``otakit-device fetch``).
        """
        try:
            with tuf_errors(self._metadata_context):
                self._updater.refresh()
                tf = self._updater.get_targetinfo(path)
        except OtakitError:
            self._keep_progress()
            raise
        self._refreshed()
        return tf

    def _refreshed(self) -> None:
        if self.defer_commit:
            self._uncommitted = True
            return
        self.store.commit(self._scratch)
        self._advance_floor()

    def commit(self) -> None:
        """Commit a deferred refresh (``defer_commit``); nothing to do otherwise."""
        if self._uncommitted:
            self.store.commit(self._scratch)
            self._uncommitted = False
            self._advance_floor()

    def trusted_candidates(self, product: str | None = None) -> list[Candidate]:
        """The otakit targets of what the device already trusts, each role checked
        unexpired at this session's reference time: what an install may rely on when the
        medium's metadata is older than the device's (``update --from`` an old export)."""
        return trusted_candidates(self._paths, product, fresh_at=self.reference_time)

    def _keep_progress(self) -> None:
        """After a failed refresh: roots ngclient verified (each against its predecessor) are
        progress even when a later step failed: keep them, so a device far behind advances
        on every attempt; and the floor moves to this attempt's clock reading. Not for a
        medium (``defer_commit``): its failure leaves the trusted metadata as it was."""
        if not self.defer_commit:
            self.store.commit_roots(self._scratch)
        try:
            self._advance_floor()
        except OtakitError as e:  # the refresh failure is the news; this one is logged
            log.warning("time floor not advanced: %s", e.message)

    def _advance_floor(self) -> None:
        """The clock reading of this attempt, capped by what is now trusted (timefloor)."""
        new = self.floor.advanced(self.now, self.store.expiry_bound())
        save_floor(self._disk, self._floor_path, self.floor, new)
        self.floor = new

    def consistent_snapshot(self) -> bool:
        with tuf_errors("reading the trusted root"):
            return bool(
                Metadata[Root]
                .from_bytes((self._scratch / "root.json").read_bytes())
                .signed.consistent_snapshot
            )

    def target_url(self, c: SignedFile) -> str:
        """The download URL, hash-prefixed as ngclient does with consistent snapshots."""
        return target_url(self.targets_url, c, self.consistent_snapshot())


def target_url(targets_url: str, c: SignedFile, consistent_snapshot: bool) -> str:
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


def _set_reference_time(updater: Updater, when: datetime) -> None:
    """Make ngclient check expiry against ``when`` (see the module docstring).

    Fails closed: should python-tuf rename the attribute, every refresh is refused rather
    than silently checked against the system clock.
    """
    trusted = getattr(updater, "_trusted_set", None)
    if not isinstance(getattr(trusted, "reference_time", None), datetime):
        raise InternalError(
            "python-tuf's Updater no longer keeps TrustedMetadataSet.reference_time; the "
            "device cannot apply its time floor (update verifier/tuf/client.py)"
        )
    trusted.reference_time = when  # type: ignore[union-attr]


def _trusted_chain(paths: StatePaths, store: TrustedStore) -> rootchain.RootChain:
    """The stored roots from the pinned root; any that does not verify is an error.

    Stored roots were each verified before they were written: one that no longer verifies
    was damaged, and skipping it would fall back to an older root, whose keys may have been
    revoked for a reason.
    """
    pinned = read_trusted(paths.pinned_root, "pinned root")
    try:
        chain = rootchain.walk_root_chain(
            pinned,
            store.stored_root,
            label="stored",
            trusted_name=f"pinned root {paths.pinned_root}",
        )
    except MetadataError as e:
        raise TrustedMetadataError(e.message, hint=RECOVERY_HINT) from e
    if chain.stop is not None:
        version = chain.newest.version + 1
        raise TrustedMetadataError(
            f"trusted root {store.dir / 'root' / f'{version}.root.json'} does not verify: "
            f"{chain.stop.message}",
            hint=RECOVERY_HINT,
        )
    return chain


def newest_verified_root(paths: StatePaths, store: TrustedStore) -> bytes:
    """The newest stored root, its chain from the pinned root verified, as bytes.

    The walk is ``rootchain.walk_root_chain``, the publisher's too. Expiry is not checked
    here (intermediate roots may have expired; the refresh checks the final one).
    """
    return _trusted_chain(paths, store).newest.data


def trusted_candidates(
    paths: StatePaths, product: str | None = None, *, fresh_at: datetime | None = None
) -> list[Candidate]:
    """The otakit targets of the trusted metadata, offline (for verify-installed and status).

    Checks the stored root chain from the pinned root and the targets signatures against the
    newest root, and that targets is the version the trusted snapshot names; then walks the
    stored delegated roles as a refresh does (``delegations.walk_roles``), each checked
    against its delegator's keys and the snapshot's version. A path counts for the first role
    in that walk whose delegation admits it (the role TUF's search would reach first; hash
    bins are not read offline). Expiry is checked only at ``fresh_at`` (every role read,
    the newest root included): without it this answers "what did the repository sign",
    not "is it fresh".
    """
    store = TrustedStore(paths.metadata, NoDisk())
    with tuf_errors("trusted metadata"):
        chain = _trusted_chain(paths, store)
        root = chain.newest.metadata.signed
        roles = store.check_roles([r.metadata.signed for r in chain.roots])
        if "targets" not in roles or "snapshot" not in roles:
            raise MetadataError(
                f"no trusted targets metadata in {paths.metadata}",
                hint="run 'otakit-device update' once with network access",
            )
        targets = cast(Metadata[Targets], roles["targets"])
        if fresh_at is not None:
            _unexpired(chain.newest.metadata, "root", fresh_at)
            for role in ("timestamp", "snapshot", "targets"):
                if role not in roles:
                    raise MetadataError(f"no trusted {role} metadata in {paths.metadata}")
                _unexpired(roles[role], role, fresh_at)
        check_signatures(root, "targets", targets, "trusted targets")
        snapshot = cast(Metadata[Snapshot], roles["snapshot"])
        check_signatures(root, "snapshot", snapshot, "trusted snapshot")
        meta = snapshot.signed.meta.get("targets.json")
        if meta is None or meta.version != targets.signed.version:
            raise MetadataError(
                f"trusted targets version {targets.signed.version} is not the one the trusted "
                f"snapshot names ({None if meta is None else meta.version})"
            )
        files = store.current()[1]
        by_name: dict[str, Targets] = {"targets": targets.signed}

        def load(role: str, parent: str) -> Targets:
            path = files.get(role)
            if path is None:
                raise MetadataError(
                    f"no trusted metadata of delegated role {role!r} in {paths.metadata}",
                    hint="run 'otakit-device update' once with network access",
                )
            label = f"trusted {role} metadata {path}"
            data = read_trusted(path, label)
            try:  # verified before it was committed: failing now means damage
                md = verify_delegated(
                    data, role, by_name[parent], snapshot.signed.meta.get(f"{role}.json"), label
                )
            except MetadataError as e:
                raise TrustedMetadataError(e.message, hint=RECOVERY_HINT) from e
            if fresh_at is not None:
                _unexpired(md, role, fresh_at)
            by_name[role] = md.signed
            return md.signed

        visits = walk_roles(targets.signed, load, product, TufLimits.max_delegations)
    out: list[Candidate] = []
    for path in listed_paths(visits):
        tf = _first_entry(visits, path)
        if tf is not None and (c := candidate(tf)) is not None:
            out.append(c)
    return out


def _unexpired(md: Metadata[Any], role: str, at: datetime) -> None:
    if md.signed.is_expired(at):
        raise MetadataExpiredError(
            f"this device's trusted {role} metadata (version {md.signed.version}) expired at "
            f"{md.signed.expires.isoformat()}, before {at.isoformat()}",
            hint="bring metadata newer than the device's: a new export, or a refresh online",
        )


def _first_entry(visits: list[Visit], path: str) -> TargetFile | None:
    """``path``'s entry in the first visited role allowed to list it: TUF's search order,
    over the roles the walk read (a role's delegator must admit the path)."""
    allowed = {"targets"}
    for v in visits:
        if v.name not in allowed:
            continue
        tf = v.targets.targets.get(path)
        if tf is not None:
            return tf
        if v.targets.delegations is not None:
            for name, _terminating in v.targets.delegations.get_roles_for_target(path):
                allowed.add(name)
    return None


def _role_loader(updater: Updater) -> LoadFn:
    """ngclient's loader of one delegated role (local copy if still valid, else download),
    with every TUF check (snapshot version and hashes, delegator's keys, expiry).

    ``Updater._load_targets`` is private: python-tuf has no public way to read a role's
    listing without resolving a known path. Fails closed, as ``_set_reference_time`` does:
    should python-tuf rename it, every refresh is refused rather than delegations ignored.
    """
    load = getattr(updater, "_load_targets", None)
    if not callable(load):
        raise InternalError(
            "python-tuf's Updater no longer has _load_targets; the device cannot search "
            "delegated targets roles (update verifier/tuf/client.py)"
        )

    def loader(role: str, parent: str) -> Targets:
        return cast(Targets, load(role, parent))

    return loader
