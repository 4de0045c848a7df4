"""Create a TUF repository and change it in signed, crash-safe transactions.

``init`` writes version 1 of the four top-level roles with consistent snapshots. Every later
change goes through a ``Transaction``: it holds the publisher lock, starts from the published
state, stages target additions, signs targets → snapshot → timestamp (``repo.signing.sign_chain``,
each checked against root's threshold) and hands the ``SignedRelease`` to ``repo.publish.publish``.
Time is a parameter (``now``), never read from the clock here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from securesystemslib.signer import Signer  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from repo.delegation import (
    ProductView,
    owning_role,
    product_role,
    product_view,
    sign_roles,
    snapshot_meta,
)
from repo.delegation import stage_release as stage_delegated_release
from repo.demo_warnings import warn_demo_keys
from repo.errors import KeyConfigError, PublishError, RepositoryStateError, UsageError
from repo.keys import KeyConfig, PromptFn, load_signers
from repo.layout import check_target_path, metadata_dir, targets_dir
from repo.publish import ProgressFn, PublishDisk, SignedRelease, TargetBlob, publish, publisher_lock
from repo.roles import CHAIN_ROLES, ONLINE_ROLES, TOP_LEVEL_ROLES, RoleSigners
from repo.safety import Margins, check_root_current
from repo.signing import StagedChain, sign_chain, sign_metadata
from repo.state import RepoState, load_state
from verifier.effects import Disk


@dataclass(frozen=True)
class Expiries:
    """How long each role's metadata stays valid after it is signed.

    Root and targets are signed offline, so they live long; snapshot and timestamp are
    online and short, bounding how long a freeze attack can hide new releases.
    """

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=91)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)
    #: each lifetime must exceed its role's margin (``repo.safety``), checked here so that
    #: every command that signs is bound by it
    margins: Margins = field(default_factory=Margins)

    def __post_init__(self) -> None:
        for role in TOP_LEVEL_ROLES:
            if getattr(self, role) <= timedelta(0):
                raise UsageError(f"expiry of {role}: expected a positive duration")
            self.margins.check(role, getattr(self, role))

    def expires(self, role: str, now: datetime) -> datetime:
        delta: timedelta = getattr(self, role)
        return (now + delta).replace(microsecond=0)


def load_role_signers(
    keyconf: KeyConfig,
    roles: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> dict[str, list[Signer]]:
    """Resolve the signers of ``roles`` from the key configuration."""
    return {role: load_signers(keyconf, role, env=env, prompt=prompt) for role in roles}


def release_signers(
    state: RepoState,
    keyconf: KeyConfig,
    product: str,
    product_keys: KeyConfig | None,
    *,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> RoleSigners:
    """The keys a release of ``product`` signs with: the top-level targets keys, or for a
    delegated product its own keys (``product_keys``, ``repo.keys.load_role_keys``) and no
    targets key. A key the delegation does not grant is refused before any slow work: a
    product's CI key publishes that product only."""
    role = product_role(state.targets.signed, product)
    if role is None:
        if product_keys is not None:
            raise UsageError(
                f"{product} is not delegated: it is signed with the top-level targets keys, "
                "expected no product key file",
                hint=f"delegate it first: otakit repo delegate REPO {product} ...",
            )
        return load_role_signers(keyconf, CHAIN_ROLES, env=env, prompt=prompt)
    signers = dict(load_role_signers(keyconf, ONLINE_ROLES, env=env, prompt=prompt))
    signers[product] = product_signers(state, product, product_keys, env=env, prompt=prompt)
    return signers


def product_signers(
    state: RepoState,
    product: str,
    product_keys: KeyConfig | None,
    *,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> list[Signer]:
    """The signers of delegated ``product``'s role from its key file, refusing a key the
    delegation does not grant (a product's key publishes only that product)."""
    role = product_role(state.targets.signed, product)
    assert role is not None
    if product_keys is None:
        raise UsageError(
            f"{product} is delegated to its own keys: expected its key file (--product-keys)",
            hint="a delegated product is signed with its product keys, not the targets keys",
        )
    granted = set(role.keyids)
    foreign = sorted(k[:12] for k in product_keys.role(product).keyids if k not in granted)
    if foreign:
        raise KeyConfigError(
            f"{product_keys.source}: key(s) {foreign} are not {product}'s delegated keys "
            f"(the repository grants {sorted(k[:12] for k in granted)}): a product key "
            "publishes only its own product",
            hint="use this product's key file, or rotate its keys with otakit repo delegate",
        )
    return load_signers(product_keys, product, env=env, prompt=prompt)


def change_signers(
    state: RepoState,
    keyconf: KeyConfig,
    roles: Collection[str],
    product_keys: Mapping[str, KeyConfig],
    *,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> RoleSigners:
    """The keys a change re-signing ``roles`` (``Transaction.signing_roles``) needs: the
    online keys, the top-level targets keys only if ``targets`` is among them, and each
    delegated product's own keys (``product_keys[product]``) for its role and bins."""
    top = CHAIN_ROLES if "targets" in roles else ONLINE_ROLES
    signers = dict(load_role_signers(keyconf, top, env=env, prompt=prompt))
    for product in sorted(set(roles) - {"targets"}):
        signers[product] = product_signers(
            state, product, product_keys.get(product), env=env, prompt=prompt
        )
    return signers


def build_root(keyconf: KeyConfig, now: datetime, expiries: Expiries, version: int = 1) -> Root:
    """Root metadata granting each role the configured keys and threshold."""
    root = Root(version=version, expires=expiries.expires("root", now), consistent_snapshot=True)
    for role in TOP_LEVEL_ROLES:
        role_keys = keyconf.role(role)
        for key in role_keys.keys:
            root.add_key(key.public, role)
        root.roles[role].threshold = role_keys.threshold
    return root


def check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() != timedelta(0):
        raise UsageError(f"'now' must be a UTC datetime with tzinfo, found {now!r}")


def init(
    repo_dir: Path,
    keyconf: KeyConfig,
    now: datetime,
    *,
    signers: RoleSigners | None = None,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
) -> RepoState:
    """Create version 1 of a repository in ``repo_dir`` (new or empty directory).

    ``signers`` defaults to resolving every role's keys from ``keyconf``.
    """
    check_now(now)
    expiries = expiries or Expiries()
    disk = disk or PublishDisk()
    if repo_dir.exists() and (not repo_dir.is_dir() or any(repo_dir.iterdir())):
        raise RepositoryStateError(
            f"{repo_dir}: expected a new or empty directory, found existing content",
            hint="otakit repo init never overwrites a repository",
        )
    if signers is None:
        signers = load_role_signers(keyconf, TOP_LEVEL_ROLES)
    root = build_root(keyconf, now, expiries)
    signed_root = sign_metadata(Metadata(root), signers.get("root", ()), [root])
    staged = StagedChain(
        targets=Targets(version=1, expires=expiries.expires("targets", now)),
        snapshot=Snapshot(version=1, expires=expiries.expires("snapshot", now), meta={}),
        timestamp=Timestamp(version=1, expires=expiries.expires("timestamp", now)),
    )
    chain = sign_chain(staged, signers, [root])
    release = SignedRelease((), chain.targets, chain.snapshot, chain.timestamp, signed_root)
    for d in (repo_dir, metadata_dir(repo_dir), targets_dir(repo_dir)):
        disk.mkdir(d)
    disk.fsync_dir(repo_dir)
    disk.fsync_dir(repo_dir.parent)
    with publisher_lock(repo_dir):
        try:
            publish(repo_dir, release, disk=disk)
        except PublishError as e:
            raise PublishError(
                f"creating {repo_dir} failed part-way: {e.message}",
                hint=f"nothing was ever published there; remove {repo_dir} and rerun init",
            ) from e
        state = load_state(repo_dir)
    warn_demo_keys(root=state.root.signed, repo=repo_dir, signers=[signers])
    return state


def stage_chain(
    state: RepoState, targets: Targets | None, now: datetime, expiries: Expiries
) -> StagedChain:
    """Snapshot N+1 (keeping every other entry of the published one) and timestamp N+1 with
    fresh expiries, after ``targets`` (None: keep the published targets)."""
    return StagedChain(
        targets=targets,
        snapshot=Snapshot(
            version=state.snapshot.signed.version + 1,
            expires=expiries.expires("snapshot", now),
            meta=dict(state.snapshot.signed.meta),
        ),
        timestamp=Timestamp(
            version=state.timestamp.signed.version + 1, expires=expiries.expires("timestamp", now)
        ),
    )


def next_targets(
    state: RepoState,
    now: datetime,
    expiries: Expiries,
    add: Mapping[str, TargetFile] | None = None,
    remove: Collection[str] = (),
) -> Targets:
    """Targets N+1 listing the published targets (plus ``add``, which replaces entries of the
    same path, minus ``remove``), delegations unchanged."""
    old = state.targets.signed
    listed = {**old.targets, **(add or {})}
    return Targets(
        version=old.version + 1,
        expires=expiries.expires("targets", now),
        targets={p: t for p, t in listed.items() if p not in remove},
        delegations=old.delegations,
    )


class Transaction:
    """One change to a published repository: stage target additions, new ``custom`` for
    published targets (withdraw) or their removal (prune), then sign and publish.

    Obtained from ``open_transaction``, which holds the publisher lock for its whole life, so
    the state it started from is still the published one when it commits.
    """

    def __init__(self, state: RepoState) -> None:
        self.state = state
        self._blobs: list[TargetBlob] = []
        self._replaced: dict[str, TargetFile] = {}
        self._removed: set[str] = set()
        self._committed = False
        self._views: dict[str, ProductView] = {}

    # --- routing: which targets role owns a path (repo.delegation) ---------------------------

    def owner(self, path: str) -> str:
        """``targets``, or the delegated product role a release of ``path`` must sign."""
        return owning_role(self.state.targets.signed, path)

    def _view(self, role: str) -> ProductView:
        if role not in self._views:
            view = product_view(self.state, role)
            if view is None:
                raise RepositoryStateError(f"{role}: not a product role of this repository")
            self._views[role] = view
        return self._views[role]

    def _listed(self, path: str) -> bool:
        role = self.owner(path)
        if role == "targets":
            return path in self.state.targets.signed.targets
        return path in self.state.targets.signed.targets or self._view(role).lists(path)

    @property
    def staged(self) -> tuple[TargetBlob, ...]:
        return tuple(self._blobs)

    def add_target(self, target: TargetFile, source: Path) -> None:
        """Stage a new target whose bytes are in ``source``; existing paths are never replaced."""
        check_target_path(target.path)
        if "sha256" not in target.hashes:
            raise UsageError(f"target {target.path}: a sha256 hash is required")
        if self._listed(target.path) or any(b.target.path == target.path for b in self._blobs):
            raise UsageError(
                f"target {target.path}: already published or staged; published targets "
                "are immutable, release a new version instead"
            )
        self._blobs.append(TargetBlob(target, source))

    def listing_role(self, path: str) -> str | None:
        """The role whose published metadata lists ``path``: ``targets`` (also for a
        product's releases from before it was delegated), its product role or the bin of
        that role; None when nothing lists it."""
        if path in self.state.targets.signed.targets:
            return "targets"
        role = self.owner(path)
        if role == "targets":
            return None
        found = self._view(role).find(path)
        return None if found is None else found[0]

    def _published(self, path: str) -> TargetFile:
        target = self.state.targets.signed.targets.get(path)
        if target is None and self.owner(path) != "targets":
            found = self._view(self.owner(path)).find(path)
            target = None if found is None else found[1]
        if target is None or path in self._removed:
            raise UsageError(f"target {path}: expected a published target, found none")
        return target

    def set_custom(self, path: str, custom: Mapping[str, object]) -> None:
        """Stage a new ``custom`` for a published target (withdrawal). Its bytes, length and
        hashes stay: a published file is immutable, only what is said about it changes.
        The role listing it (top-level targets, a product role or its bin) is re-signed."""
        old = self._published(path)
        fields = {**old.unrecognized_fields, "custom": dict(custom)}
        self._replaced[path] = TargetFile(old.length, dict(old.hashes), path, fields)

    def remove_target(self, path: str) -> None:
        """Stage dropping a published target from the metadata (prune); its file stays
        until the publication that drops it is in force (``repo.prune``)."""
        self._published(path)
        self._replaced.pop(path, None)
        self._removed.add(path)

    def sign(self, signers: RoleSigners, now: datetime, expiries: Expiries) -> SignedRelease:
        """Bump the roles owning the staged changes (top-level targets and/or product roles
        with their bins), then snapshot and timestamp, and sign them.

        A product role is signed with ``signers[product]`` and needs no top-level targets
        key; its key cannot sign another product's role (``sign_metadata`` checks each
        role's threshold against its own delegator). A withdrawal or removal goes to the
        role that lists the target: a delegated product's is signed by its keys alone.
        """
        check_now(now)
        if not (self._blobs or self._replaced or self._removed):
            raise UsageError("nothing staged: a release needs at least one target")
        st = self.state
        check_root_current(st.root.signed, now)
        by_role: dict[str, dict[str, TargetFile]] = {}
        for b in self._blobs:
            by_role.setdefault(self.owner(b.target.path), {})[b.target.path] = b.target
        replaced: dict[str, dict[str, TargetFile]] = {}
        removed: dict[str, set[str]] = {}
        for path, tf in self._replaced.items():
            replaced.setdefault(self.signing_role(path), {})[path] = tf
        for path in self._removed:
            removed.setdefault(self.signing_role(path), set()).add(path)
        top = {**replaced.pop("targets", {}), **by_role.pop("targets", {})}
        top_removed = removed.pop("targets", set())
        targets = next_targets(st, now, expiries, top, top_removed) if top or top_removed else None
        delegated = []
        bins: set[str] = set()
        for role in sorted({*by_role, *replaced, *removed}):
            staged = stage_delegated_release(
                self._view(role),
                by_role.get(role, {}),
                expiries.expires("targets", now),
                replace=replaced.get(role),
                remove=removed.get(role, ()),
            )
            delegated.extend(sign_roles(staged, signers))
            bins.update(s.name for s in staged[1:])
        chain_in = stage_chain(st, targets, now, expiries)
        chain_in.snapshot.meta.update(snapshot_meta(delegated, frozenset(bins)))
        chain = sign_chain(chain_in, signers, [st.root.signed])
        return SignedRelease(
            tuple(self._blobs),
            chain.targets,
            chain.snapshot,
            chain.timestamp,
            delegated=tuple(delegated),
        )

    def signing_roles(self) -> set[str]:
        """Whose keys the staged changes need: ``targets`` and/or delegated product names
        (a bin is signed by its product's keys)."""
        roles = {self.owner(b.target.path) for b in self._blobs}
        return roles | {self.signing_role(p) for p in (*self._replaced, *self._removed)}

    def signing_role(self, path: str) -> str:
        """``targets`` or the delegated product whose keys sign a change to published
        ``path`` (the role listing it, or the product owning the bin that does)."""
        role = self.listing_role(path)
        return "targets" if role in (None, "targets") else self.owner(path)

    def commit(
        self,
        signers: RoleSigners,
        now: datetime,
        *,
        expiries: Expiries | None = None,
        disk: Disk | None = None,
        progress: ProgressFn | None = None,
    ) -> RepoState:
        """Sign and publish; returns the newly published state."""
        if self._committed:
            raise UsageError("transaction already committed")
        release = self.sign(signers, now, expiries or Expiries())
        publish(self.state.repo_dir, release, disk=disk, progress=progress)
        self._committed = True
        self.state = load_state(self.state.repo_dir)
        return self.state


@contextmanager
def open_transaction(repo_dir: Path) -> Iterator[Transaction]:
    """Lock the repository and start a transaction from its published state."""
    with publisher_lock(repo_dir):
        yield Transaction(load_state(repo_dir))
