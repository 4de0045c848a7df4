"""Take a release back: a signed targets change that marks it withdrawn.

The targets of the release (its full artifact and every delta *to* that version) stay listed,
with the same length and hashes, but their ``custom.otakit`` gains a ``withdrawn`` object
(reason, time; artifact schema 2.0, docs/FORMAT.md). Marking instead of removing is what lets a
device that already runs the release be told so (``otakit-device status``: "withdrawn:
REASON"): a removed target leaves such a device with an image nobody signed any more. A device
never starts a withdrawn version (``verifier.plan``); a device from before schema 2.0 skips
the target as unreadable, which is the same outcome for installing.

Withdrawing is idempotent: a version whose targets are all withdrawn already is left as it is
(nothing is signed or published, the result says ``already``), so a pipeline that does not
know whether its first attempt published can simply rerun. The first reason stands; a
different reason given later is reported, not signed over it. Deltas *from* the withdrawn
version to others stay as they are: they move devices off it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile, Targets  # type: ignore[attr-defined]

from repo.delegation import delegated_targets, product_role, published_targets
from repo.demo_warnings import warn_demo_keys
from repo.errors import RepositoryStateError, UsageError
from repo.keys import KeyConfig, PromptFn
from repo.publish import ProgressFn
from repo.repository import Expiries, change_signers, check_now, open_transaction
from repo.roles import RoleSigners
from repo.state import RepoState
from verifier.artifact import CUSTOM_KEY, ArtifactInfo, ImageVersion, Withdrawal
from verifier.effects import Disk
from verifier.errors import ArtifactSchemaError, NoSuchVersionError

ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class ListedArtifact:
    """One otakit target of a targets metadata: its path, TUF entry and parsed metadata."""

    path: str
    target: TargetFile
    info: ArtifactInfo

    @property
    def custom(self) -> dict[str, Any]:
        custom = self.target.unrecognized_fields.get("custom")
        return dict(custom) if isinstance(custom, Mapping) else {}


def listed_artifacts(targets: Targets | Mapping[str, TargetFile]) -> list[ListedArtifact]:
    """The otakit targets of ``targets`` (a targets role, or a listing such as
    ``product_listing``'s); others are not ours and are left alone."""
    entries = targets.targets if isinstance(targets, Targets) else targets
    out: list[ListedArtifact] = []
    for path, tf in sorted(entries.items()):
        custom = tf.unrecognized_fields.get("custom")
        if not isinstance(custom, Mapping) or CUSTOM_KEY not in custom:
            continue
        try:
            info = ArtifactInfo.from_custom(dict(custom))
        except ArtifactSchemaError as e:
            raise RepositoryStateError(f"published target {path}: {e.message}") from e
        out.append(ListedArtifact(path, tf, info))
    return out


def product_listing(state: RepoState, product: str | None = None) -> dict[str, TargetFile]:
    """Every target a change may touch: the top-level targets, and for a delegated
    ``product`` its role and bins too (``None``: every delegated product's)."""
    if product is not None:
        return published_targets(state, product)
    return {**state.targets.signed.targets, **delegated_targets(state)}


def product_artifacts(state: RepoState, product: str | None = None) -> list[ListedArtifact]:
    """``listed_artifacts`` over ``product_listing``: what withdraw, prune (and a rollout
    change) act on, wherever the product's targets are listed (``Transaction.set_custom``
    and ``remove_target`` route each path back to its role)."""
    return listed_artifacts(product_listing(state, product))


@dataclass(frozen=True)
class WithdrawResult:
    product: str
    version: ImageVersion
    withdrawal: Withdrawal
    #: every target of the version (all withdrawn now)
    targets: tuple[str, ...]
    #: the targets this run marked (empty when it was withdrawn already)
    marked: tuple[str, ...]
    #: the roles this run re-signed (``targets``, a product role, its bins)
    roles: tuple[str, ...]
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    warnings: tuple[str, ...] = ()

    @property
    def already(self) -> bool:
        return not self.marked

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": str(self.version),
            "withdrawn": self.withdrawal.to_dict(),
            "targets": list(self.targets),
            "marked": list(self.marked),
            "already_withdrawn": self.already,
            "roles": list(self.roles),
            "metadata": {
                "targets": self.targets_version,
                "snapshot": self.snapshot_version,
                "timestamp": self.timestamp_version,
            },
            "warnings": list(self.warnings),
        }


def release_targets(
    listed: Sequence[ListedArtifact], product: str, version: ImageVersion
) -> list[ListedArtifact]:
    """The targets of one release: its full artifact and every delta to it."""
    found = [a for a in listed if a.info.product == product and a.info.version == version]
    if found:
        return found
    published = sorted({a.info.version for a in listed if a.info.product == product})
    if published:
        raise NoSuchVersionError(
            f"{product} {version}: expected a published version, found none; published "
            f"versions of {product}: {', '.join(map(str, published))}",
            hint="check the version with: otakit repo list REPO --product " + product,
        )
    products = sorted({a.info.product for a in listed})
    raise NoSuchVersionError(
        f"product {product!r}: expected a published product, found none; published "
        f"products: {', '.join(products) or 'none'}",
        hint="check the name with: otakit repo list REPO",
    )


def parse_request(version: str, reason: str, now: datetime) -> tuple[ImageVersion, Withdrawal]:
    """The version and the withdrawal to sign, or a usage error naming what is wrong."""
    check_now(now)
    try:
        return ImageVersion.parse(version), Withdrawal(reason, now.strftime(ISO))
    except ArtifactSchemaError as e:
        raise UsageError(e.message.replace("withdrawn.reason", "--reason"), hint=e.hint) from e


def withdraw(
    repo_dir: Path,
    keyconf: KeyConfig,
    product: str,
    version: str,
    reason: str,
    now: datetime,
    *,
    signers: RoleSigners | None = None,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
    product_keys: KeyConfig | None = None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
    progress: ProgressFn | None = None,
) -> WithdrawResult:
    """Mark ``product`` ``version`` withdrawn in one signed publication (module docstring).

    A delegated product's release is signed with its ``product_keys`` (its role or bin
    lists it) and needs no top-level targets key, unless it was released before the
    product was delegated (then the top-level targets list it)."""
    wanted, withdrawal = parse_request(version, reason, now)
    warnings: list[str] = []
    with open_transaction(repo_dir) as tx:
        if product_keys is not None and product_role(tx.state.targets.signed, product) is None:
            raise UsageError(
                f"{product} is not delegated: its releases are signed with the top-level "
                "targets keys, expected no product key file"
            )
        found = release_targets(product_artifacts(tx.state, product), product, wanted)
        todo = [a for a in found if a.info.withdrawn is None]
        if not todo:
            first = found[0].info.withdrawn
            assert first is not None
            if first.reason != withdrawal.reason:
                warnings.append(
                    f"{product} {wanted} was already withdrawn at {first.time} with reason "
                    f"{first.reason!r}; that reason stands (nothing was signed)"
                )
            withdrawal = first
        for a in todo:
            marked = dataclasses.replace(a.info, withdrawn=withdrawal)
            tx.set_custom(a.path, {**a.custom, **marked.to_custom()})
        roles = tuple(sorted({tx.listing_role(a.path) or "targets" for a in todo}))
        if todo:
            if signers is None:
                keys = {} if product_keys is None else {product: product_keys}
                signers = change_signers(
                    tx.state, keyconf, tx.signing_roles(), keys, env=env, prompt=prompt
                )
            tx.commit(signers, now, expiries=expiries, disk=disk, progress=progress)
        st = tx.state
    warn_demo_keys(root=st.root.signed, repo=repo_dir, signers=[signers] if signers else [])
    return WithdrawResult(
        product=product,
        version=wanted,
        withdrawal=withdrawal,
        targets=tuple(a.path for a in found),
        marked=tuple(a.path for a in todo),
        roles=roles,
        targets_version=st.targets.signed.version,
        snapshot_version=st.snapshot.signed.version,
        timestamp_version=st.timestamp.signed.version,
        warnings=tuple(warnings),
    )
