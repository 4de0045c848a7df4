"""Product delegations: a product's own targets role, and hash bins for its older versions.

``otakit repo delegate REPO PRODUCT`` adds to the top-level targets a delegated role named
``PRODUCT`` for the paths ``PRODUCT/*/*`` (python-tuf matches a pattern segment by segment,
and otakit's paths are ``PRODUCT/VERSION/FILE``), terminating, with the product's keys and
threshold. From then on ``otakit release`` signs that role with the product's keys, not the
top-level targets: a product team's CI key publishes its product and nothing else (a key of
product A cannot meet product B's threshold, and a device ignores what role A lists outside
``A/*/*``).

The product role lists the newest ``head`` versions' targets (full and deltas) directly: that
is what a device enumerates. Older targets go to TAP 15 succinct hash bins (``bins`` of them,
``PRODUCT-bin-XX``) delegated by the product role with the same keys, found by path only. A
release therefore rewrites the product role, the few bins receiving the version leaving the
head, snapshot and timestamp: a constant number of files (docs/REPOSITORY.md has the
arithmetic for the bin count).

Delegating is a change to the offline targets role. ``delegate_edit`` is that change as a pure
``Targets -> Targets`` function (a ceremony can stage it); ``delegate`` signs it directly when
the targets keys are at hand, together with the product role and every bin re-signed by the
product's (new) keys, so re-running it with new keys rotates or revokes the product key.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib import parse

from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    SuccinctRoles,
    TargetFile,
    Targets,
)

from repo.errors import RepositoryStateError, UsageError
from repo.keys import RoleKeys
from repo.layout import metadata_dir
from repo.publish import PublishDisk, SignedRelease, publish, publisher_lock
from repo.roles import TOP_LEVEL_ROLES, RoleSigners
from repo.signing import SignedMetadata, sign_chain, sign_metadata
from repo.state import RepoState, load_state
from verifier.artifact import CUSTOM_KEY, ArtifactInfo, ImageVersion
from verifier.effects import Disk
from verifier.errors import ArtifactSchemaError, OtakitError
from verifier.tuf.delegations import verify_delegated
from verifier.tuf.published import DirectorySource

#: newest versions a product role lists itself (full + deltas each): what a device enumerates
DEFAULT_HEAD = 3
#: hash bins per product (a power of two; 0: none, the product role lists every version)
DEFAULT_BINS = 8
MAX_BINS = 1024
#: the product role records its head size here (its publisher's setting, signed with it)
HEAD_FIELD = "x-otakit-head"

# the artifact schema's product-name rule (verifier.artifact): role and file names follow it
_PRODUCT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")

if TYPE_CHECKING:
    from repo.repository import Expiries

Edit = Callable[[Targets], Targets]


def product_paths(product: str) -> list[str]:
    return [f"{product}/*/*"]


def bin_prefix(product: str) -> str:
    return f"{product}-bin"


@dataclass(frozen=True)
class DelegationSpec:
    """What ``otakit repo delegate`` sets for one product."""

    product: str
    keys: RoleKeys
    bins: int = DEFAULT_BINS
    head: int = DEFAULT_HEAD

    def __post_init__(self) -> None:
        if not _PRODUCT_RE.match(self.product) or self.product in TOP_LEVEL_ROLES:
            raise UsageError(
                f"product {self.product!r}: expected 1-64 chars of [a-z0-9._-] starting with a "
                "letter or digit, and not a top-level role name"
            )
        if self.bins < 0 or self.bins > MAX_BINS or (self.bins & (self.bins - 1)):
            raise UsageError(
                f"--bins: expected 0 or a power of two up to {MAX_BINS} (TAP 15 bins), "
                f"found {self.bins}"
            )
        if self.head < 1:
            raise UsageError(f"--head: expected at least 1 version, found {self.head}")

    def succinct(self) -> SuccinctRoles | None:
        if not self.bins:
            return None
        return SuccinctRoles(
            keyids=sorted(k.keyid for k in self.keys.keys),
            threshold=self.keys.threshold,
            bit_length=self.bins.bit_length() - 1,
            name_prefix=bin_prefix(self.product),
        )


def delegate_edit(spec: DelegationSpec) -> Edit:
    """Top-level targets with ``spec.product`` delegated to its keys (pure; version and
    expiry are the caller's). An existing delegation of the product is replaced in place (its
    keys revoked unless another role still uses them); others are kept, in order."""

    def edit(old: Targets) -> Targets:
        new = copy.deepcopy(old)
        if new.delegations is None:
            new.delegations = Delegations(keys={}, roles={})
        dl = new.delegations
        if dl.roles is None:
            raise RepositoryStateError(
                "top-level targets delegates to succinct hash bins; expected named roles"
            )
        previous = dl.roles.get(spec.product)
        role = DelegatedRole(
            name=spec.product,
            keyids=sorted(k.keyid for k in spec.keys.keys),
            threshold=spec.keys.threshold,
            terminating=True,
            paths=product_paths(spec.product),
        )
        dl.roles[spec.product] = role  # replaces in place, or appends
        for k in spec.keys.keys:
            dl.keys[k.keyid] = k.public
        if previous is not None:
            used = {kid for r in dl.roles.values() for kid in r.keyids}
            for kid in previous.keyids:
                if kid not in used:
                    dl.keys.pop(kid, None)
        return new

    return edit


def owning_role(top: Targets, path: str) -> str:
    """The role a release must sign to publish ``path``: the first delegated role of the
    top-level targets whose paths admit it (TUF's search order), else ``targets``."""
    dl = top.delegations
    if dl is not None and dl.roles is not None:
        for role in dl.roles.values():
            if role.is_delegated_path(path):
                return str(role.name)
    return "targets"


def product_role(top: Targets, product: str) -> DelegatedRole | None:
    dl = top.delegations
    if dl is None or dl.roles is None:
        return None
    return dl.roles.get(product)


# --- reading published delegated roles ------------------------------------------------------


@dataclass(frozen=True)
class PublishedRole:
    name: str
    md: Metadata[Targets]


def role_filename(name: str, version: int) -> str:
    return f"{version}.{parse.quote(name, '')}.json"


def load_role(state: RepoState, name: str, delegator: Targets) -> PublishedRole | None:
    """Delegated role ``name`` as published (verified like a device would), None if the
    snapshot does not list it yet."""
    meta = state.snapshot.signed.meta.get(f"{name}.json")
    if meta is None:
        return None
    source = DirectorySource(metadata_dir(state.repo_dir))
    filename = role_filename(name, meta.version)
    data = source.get(filename)
    if data is None:
        raise RepositoryStateError(f"expected {filename} (named by the snapshot), found none")
    try:
        md = verify_delegated(data, name, delegator, meta, f"published {filename}")
    except OtakitError as e:
        raise RepositoryStateError(e.message, hint=e.hint) from e
    return PublishedRole(name, md)


@dataclass
class ProductView:
    """One product role and its bins as published, bins read on demand."""

    state: RepoState
    role: PublishedRole | None
    _bins: dict[str, PublishedRole | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        assert self.role is not None
        return self.role.name

    @property
    def targets(self) -> Targets:
        assert self.role is not None
        return self.role.md.signed

    def succinct(self) -> SuccinctRoles | None:
        dl = self.targets.delegations
        return None if dl is None else dl.succinct_roles

    def bin(self, name: str) -> PublishedRole | None:
        if name not in self._bins:
            self._bins[name] = load_role(self.state, name, self.targets)
        return self._bins[name]

    def find(self, path: str) -> tuple[str, TargetFile] | None:
        """(the role listing ``path``: this product role or one of its bins, its entry)."""
        if path in self.targets.targets:
            return self.name, self.targets.targets[path]
        sr = self.succinct()
        if sr is None:
            return None
        name = sr.get_role_for_target(path)
        b = self.bin(name)
        if b is None or path not in b.md.signed.targets:
            return None
        return name, b.md.signed.targets[path]

    def lists(self, path: str) -> bool:
        return self.find(path) is not None

    def all_targets(self) -> dict[str, TargetFile]:
        out = dict(self.targets.targets)
        sr = self.succinct()
        for name in sr.get_roles() if sr is not None else ():
            b = self.bin(name)
            if b is not None:
                out.update(b.md.signed.targets)
        return out


def product_view(state: RepoState, product: str) -> ProductView | None:
    """The published product role of ``product``, None if the product is not delegated."""
    top = state.targets.signed
    if product_role(top, product) is None:
        return None
    role = load_role(state, product, top)
    if role is None:
        raise RepositoryStateError(
            f"{product} is delegated but the snapshot lists no {product}.json",
            hint=f"rerun 'otakit repo delegate REPO {product}' to publish its role",
        )
    return ProductView(state, role)


def published_targets(state: RepoState, product: str | None = None) -> dict[str, TargetFile]:
    """Every target the repository lists (of ``product``'s delegated role too, if given):
    the top-level targets, then the product role and all its bins."""
    out = dict(state.targets.signed.targets)
    if product is not None:
        view = product_view(state, product)
        if view is not None:
            out.update(view.all_targets())
    return out


def delegated_targets(state: RepoState) -> dict[str, TargetFile]:
    """Every target that a delegated product role or its bins list (all products)."""
    dl = state.targets.signed.delegations
    out: dict[str, TargetFile] = {}
    for name in (dl.roles or {}) if dl is not None else ():
        view = product_view(state, name)
        if view is not None:
            out.update(view.all_targets())
    return out


@dataclass(frozen=True)
class DelegatedRoleInfo:
    """A published product role or hash bin: whose keys sign it, its version and expiry."""

    role: str
    product: str
    version: int
    expires: datetime


def delegated_roles(state: RepoState) -> list[DelegatedRoleInfo]:
    """Every published product role and its bins (each verified), products in delegation
    order, each role before its bins: what ``repo status`` and ``repo refresh`` watch."""
    dl = state.targets.signed.delegations
    out: list[DelegatedRoleInfo] = []
    for product in (dl.roles or {}) if dl is not None else ():
        view = product_view(state, product)
        if view is None:
            continue
        roles = [view.role]
        sr = view.succinct()
        roles += [view.bin(name) for name in (sr.get_roles() if sr is not None else ())]
        for r in roles:
            if r is not None:
                t = r.md.signed
                out.append(DelegatedRoleInfo(r.name, product, t.version, t.expires))
    return out


def stage_renewal(view: ProductView, names: Collection[str], expires: datetime) -> list[StagedRole]:
    """Version N+1 of the product role and/or bins named in ``names``, the same content with
    a new expiry (``repo refresh``): nothing a device sees changes but the dates."""
    staged: list[StagedRole] = []
    role = view.targets
    if view.name in names:
        role = Targets(
            version=role.version + 1,
            expires=expires,
            targets=dict(role.targets),
            delegations=role.delegations,
            unrecognized_fields=dict(role.unrecognized_fields),
        )
        staged.append(StagedRole(view.name, view.name, role, view.state.targets.signed))
    sr = view.succinct()
    for name in sr.get_roles() if sr is not None else ():
        published = view.bin(name)
        if name not in names or published is None:
            continue
        old = published.md.signed
        renewed = Targets(version=old.version + 1, expires=expires, targets=dict(old.targets))
        staged.append(StagedRole(name, view.name, renewed, role, compact=True))
    return staged


# --- laying targets out in head and bins ----------------------------------------------------


def _version(tf: TargetFile) -> ImageVersion | None:
    custom = tf.unrecognized_fields.get("custom")
    if not isinstance(custom, dict) or CUSTOM_KEY not in custom:
        return None
    try:
        return ArtifactInfo.from_custom(custom).version
    except ArtifactSchemaError:
        return None


def split_head(
    targets: Mapping[str, TargetFile], head: int
) -> tuple[dict[str, TargetFile], dict[str, TargetFile]]:
    """(kept in the product role, moved to bins): the newest ``head`` versions stay, and any
    target that is not otakit's (no version) stays too."""
    versions = sorted({v for tf in targets.values() if (v := _version(tf)) is not None})
    keep = set(versions[-head:])
    kept: dict[str, TargetFile] = {}
    moved: dict[str, TargetFile] = {}
    for path, tf in targets.items():
        v = _version(tf)
        (kept if v is None or v in keep else moved)[path] = tf
    return kept, moved


@dataclass(frozen=True)
class StagedRole:
    """An unsigned delegated role and the role whose keys must approve it."""

    name: str
    #: the product whose keys sign it (the role itself, or the product owning a bin)
    owner: str
    targets: Targets
    delegator: Targets
    compact: bool = False


def stage_release(
    view: ProductView,
    adds: Mapping[str, TargetFile],
    expires: datetime,
    *,
    replace: Mapping[str, TargetFile] | None = None,
    remove: Collection[str] = (),
) -> list[StagedRole]:
    """Product role N+1 with ``adds`` and the head rule applied, plus N+1 of each bin that
    receives a version leaving the head or lists a path of ``replace`` (a new entry for a
    published target: withdraw) or ``remove`` (prune). Nothing else is rewritten, so a
    withdrawal or a prune is signed with the product's keys alone."""
    old = view.targets
    head = int(old.unrecognized_fields.get(HEAD_FIELD, DEFAULT_HEAD))
    sr = view.succinct()
    replace = replace or {}
    in_role = {p: tf for p, tf in replace.items() if p in old.targets}
    merged = {p: tf for p, tf in {**old.targets, **in_role, **adds}.items() if p not in remove}
    moved: dict[str, TargetFile] = {}
    kept = merged
    if sr is not None:
        kept, moved = split_head(merged, head)
    new = Targets(
        version=old.version + 1,
        expires=expires,
        targets=kept,
        delegations=old.delegations,
        unrecognized_fields=dict(old.unrecognized_fields),
    )
    staged = [StagedRole(view.name, view.name, new, view.state.targets.signed)]
    if sr is None:
        return staged
    by_bin: dict[str, dict[str, TargetFile]] = {}
    for path, tf in moved.items():
        by_bin.setdefault(sr.get_role_for_target(path), {})[path] = tf
    gone: dict[str, set[str]] = {}
    for path in remove:
        if path not in old.targets:
            gone.setdefault(sr.get_role_for_target(path), set()).add(path)
    for path, tf in replace.items():
        if path not in old.targets:
            by_bin.setdefault(sr.get_role_for_target(path), {})[path] = tf
    for name in sorted({*by_bin, *gone}):
        published = view.bin(name)
        base = published.md.signed if published is not None else None
        entries = {**(base.targets if base is not None else {}), **by_bin.get(name, {})}
        staged.append(
            StagedRole(
                name,
                view.name,
                Targets(
                    version=(base.version if base is not None else 0) + 1,
                    expires=expires,
                    targets={p: t for p, t in entries.items() if p not in gone.get(name, ())},
                ),
                new,
                compact=True,
            )
        )
    return staged


def sign_roles(staged: Sequence[StagedRole], signers: RoleSigners) -> list[SignedMetadata]:
    """Sign each staged role with its product's signers (bins share their product's keys)."""
    return [
        sign_metadata(
            Metadata(s.targets),
            signers.get(s.owner, ()),
            [s.delegator],
            role=s.name,
            compact=s.compact,
        )
        for s in staged
    ]


def snapshot_meta(signed: Sequence[SignedMetadata], bins: frozenset[str]) -> dict[str, MetaFile]:
    """Snapshot entries for delegated roles: length and hash for product roles; bins by
    version only (TUF's default), which keeps a snapshot of many bins small."""
    out = {}
    for s in signed:
        out[f"{s.role}.json"] = MetaFile(version=s.version) if s.role in bins else s.meta_file()
    return out


# --- otakit repo delegate -------------------------------------------------------------------


@dataclass(frozen=True)
class DelegateResult:
    product: str
    keyids: tuple[str, ...]
    threshold: int
    revoked: tuple[str, ...]
    bins: int
    head: int
    written: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "product": self.product,
            "keyids": list(self.keyids),
            "threshold": self.threshold,
            "revoked": list(self.revoked),
            "bins": self.bins,
            "head": self.head,
            "written": list(self.written),
        }


def stage_product_layout(
    state: RepoState, spec: DelegationSpec, new_top: Targets, expires: datetime
) -> list[StagedRole]:
    """The product role and *every* bin, re-laid out and re-versioned under ``spec``: what a
    delegation (first time, key rotation, new bin count) publishes with the product keys."""
    old_view = (
        product_view(state, spec.product)
        if product_role(state.targets.signed, spec.product)
        else None
    )
    existing = old_view.all_targets() if old_view is not None else {}
    old_role = old_view.targets if old_view is not None else None
    sr = spec.succinct()
    kept, moved = (existing, {}) if sr is None else split_head(existing, spec.head)
    role = Targets(
        version=(old_role.version if old_role is not None else 0) + 1,
        expires=expires,
        targets=kept,
        delegations=None
        if sr is None
        else Delegations(
            keys={k.keyid: k.public for k in spec.keys.keys}, roles=None, succinct_roles=sr
        ),
        unrecognized_fields={HEAD_FIELD: spec.head},
    )
    staged = [StagedRole(spec.product, spec.product, role, new_top)]
    if sr is not None:
        for name in sr.get_roles():
            meta = state.snapshot.signed.meta.get(f"{name}.json")
            entries = {p: tf for p, tf in moved.items() if sr.get_role_for_target(p) == name}
            staged.append(
                StagedRole(
                    name,
                    spec.product,
                    Targets(
                        version=(meta.version if meta is not None else 0) + 1,
                        expires=expires,
                        targets=entries,
                    ),
                    role,
                    compact=True,
                )
            )
    return staged


def delegate(
    repo_dir: Path,
    spec: DelegationSpec,
    signers: RoleSigners,
    now: datetime,
    *,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
) -> DelegateResult:
    """Delegate ``spec.product`` (or re-key it) and publish, signed by the top-level targets
    keys (``signers['targets']``), the product's new keys (``signers[product]``) and the
    online keys."""
    # repo.repository routes a release through this module: imported here, not at the top
    from repo.repository import Expiries, check_now, next_targets, stage_chain

    check_now(now)
    exp = expiries or Expiries()
    with publisher_lock(repo_dir):
        state = load_state(repo_dir)
        previous = product_role(state.targets.signed, spec.product)
        top = delegate_edit(spec)(next_targets(state, now, exp))
        staged = stage_product_layout(state, spec, top, exp.expires("targets", now))
        signed = sign_roles(staged, signers)
        bins = frozenset(s.name for s in staged[1:])
        chain_in = stage_chain(state, top, now, exp)
        meta = chain_in.snapshot.meta
        old_sr = published_bins(state, spec.product)
        for name in old_sr - bins:  # a new bin count: the old bins are no longer delegated
            meta.pop(f"{name}.json", None)
        meta.update(snapshot_meta(signed, bins))
        chain = sign_chain(chain_in, signers, [state.root.signed])
        release = SignedRelease(
            (), chain.targets, chain.snapshot, chain.timestamp, delegated=tuple(signed)
        )
        publish(repo_dir, release, disk=disk or PublishDisk())
    new_ids = tuple(sorted(k.keyid for k in spec.keys.keys))
    revoked = tuple(sorted(set(previous.keyids) - set(new_ids))) if previous else ()
    return DelegateResult(
        spec.product,
        new_ids,
        spec.keys.threshold,
        revoked,
        spec.bins,
        spec.head,
        tuple(  # in publication order (repo.publish)
            md.filename
            for md in (chain.targets, *signed, chain.snapshot, chain.timestamp)
            if md is not None
        ),
    )


def published_bins(state: RepoState, product: str) -> frozenset[str]:
    prefix = bin_prefix(product) + "-"
    return frozenset(
        name[: -len(".json")]
        for name in state.snapshot.signed.meta
        if name.startswith(prefix) and name.endswith(".json")
    )
