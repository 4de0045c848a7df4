"""Re-sign snapshot and timestamp before they expire, with the online keys only.

Timestamp lives a day and snapshot a week, so without a periodic re-signing every device
stops accepting the repository a day after the last release (a freeze it cannot tell from
an attack). ``refresh`` is that periodic job: under the publisher lock it reads and verifies
the published state (``load_state``: a refresh never launders edited metadata), signs
snapshot N+1 (same targets entry) and timestamp N+1 with fresh expiries, and publishes them
in the usual order (snapshot, then ``timestamp.json`` last), so a crash leaves the previous
repository in force. Root is never touched and targets only on request (``targets=True``,
for an operator holding the offline targets keys who has no release to publish): both need
offline keys, so the result carries loud warnings when they are close to expiry instead.

Delegated product roles and their hash bins expire like the targets role (they are signed
with its lifetime) and are re-signed by each release of the product; a product without a
release in that time would lock its devices out. A refresh given a product's keys
(``signers[product]``) re-signs that product's role and bins expiring within the warning
window (same content, version N+1); one without them warns, naming the keys it needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata

from repo.delegation import (
    DelegatedRoleInfo,
    delegated_roles,
    product_view,
    sign_roles,
    snapshot_meta,
    stage_renewal,
)
from repo.demo_warnings import DemoKeyWarning, warn_demo_keys
from repo.errors import UsageError
from repo.publish import ProgressFn, PublishDisk, SignedRelease, publish, publisher_lock
from repo.repository import Expiries, check_now, next_targets, stage_chain
from repo.roles import CHAIN_ROLES, OFFLINE_ROLES, ONLINE_ROLES, TOP_LEVEL_ROLES, RoleSigners
from repo.safety import check_root_current
from repo.signing import sign_chain
from repo.state import RepoState, load_state
from verifier.effects import Disk

#: Offline roles expiring within this window are reported (they need a key ceremony).
DEFAULT_WARN_WITHIN = timedelta(days=14)


@dataclass(frozen=True)
class ExpiryWarning:
    """An offline-signed role that expires soon (or already has): ``refresh`` cannot fix it."""

    role: str
    version: int
    expires: datetime
    remaining: timedelta
    #: a delegated product role or bin: the product whose keys re-sign it
    product: str | None = None
    #: how many more of that product's roles expire within the window (one warning each
    #: product, not one per bin)
    also: int = 0

    @property
    def expired(self) -> bool:
        return self.remaining <= timedelta(0)

    def message(self) -> str:
        when = _iso(self.expires)
        remedy = (
            f"re-sign it with {self.product}'s keys: otakit repo refresh REPO --keys KEYS "
            f"--product-keys {self.product}=ROLEKEYS (or release {self.product})"
            if self.product is not None
            else "re-sign it with the offline root keys: otakit repo rotate-root REPO "
            "--old-keys KEYS --new-keys KEYS"
            if self.role == "root"
            else "run otakit repo refresh REPO --keys KEYS (is its timer running?)"
            if self.role in ONLINE_ROLES
            else "re-sign it with the offline targets keys: otakit repo refresh REPO "
            "--keys KEYS --targets (or publish a release)"
        )
        what = f"{self.role} v{self.version}"
        if self.also:
            what += f" (and {self.also} more of {self.product}'s roles)"
        if self.expired:
            return f"{what} EXPIRED at {when}; devices refuse it; {remedy}"
        days = self.remaining.total_seconds() / 86400
        return f"{what} expires at {when} (in {days:.1f} days); {remedy}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.role,
            "version": self.version,
            "expires": _iso(self.expires),
            "expired": self.expired,
            "message": self.message(),
        }
        if self.product is not None:
            out["product"] = self.product
            out["also"] = self.also
        return out


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did: the roles re-signed (empty when nothing was due) and the
    expiry of every top-level role afterwards."""

    refreshed: tuple[str, ...]
    versions: Mapping[str, int]
    expires: Mapping[str, datetime]
    warnings: tuple[ExpiryWarning, ...]
    reason: str
    #: public demo keys trusted by the root or used to sign (also logged, see repo.demo_warnings)
    demo_keys: tuple[DemoKeyWarning, ...] = ()
    #: every delegated product role and bin afterwards (``repo.delegation.delegated_roles``)
    delegated: tuple[DelegatedRoleInfo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "refreshed": list(self.refreshed),
            "reason": self.reason,
            "roles": {
                role: {"version": self.versions[role], "expires": _iso(self.expires[role])}
                for role in TOP_LEVEL_ROLES
            },
            "delegated": {
                d.role: {"product": d.product, "version": d.version, "expires": _iso(d.expires)}
                for d in self.delegated
            },
            "warnings": [w.to_json() for w in self.warnings],
        }


def offline_expiry_warnings(
    state: RepoState,
    now: datetime,
    within: timedelta = DEFAULT_WARN_WITHIN,
    delegated: Sequence[DelegatedRoleInfo] = (),
) -> tuple[ExpiryWarning, ...]:
    """Root and targets roles, and the ``delegated`` roles, that expire before
    ``now + within``."""
    out = []
    for role in OFFLINE_ROLES:
        md = _role_md(state, role)
        if md.signed.expires <= now + within:
            out.append(
                ExpiryWarning(role, md.signed.version, md.signed.expires, md.signed.expires - now)
            )
    by_product: dict[str, list[DelegatedRoleInfo]] = {}
    for d in delegated:
        if d.expires <= now + within:
            by_product.setdefault(d.product, []).append(d)
    for product, roles in by_product.items():
        first = min(roles, key=lambda d: d.expires)
        out.append(
            ExpiryWarning(
                first.role,
                first.version,
                first.expires,
                first.expires - now,
                product,
                also=len(roles) - 1,
            )
        )
    return tuple(out)


def delegated_due(
    delegated: Sequence[DelegatedRoleInfo], now: datetime, within: timedelta
) -> dict[str, set[str]]:
    """product -> its roles (product role, bins) expiring before ``now + within``."""
    out: dict[str, set[str]] = {}
    for d in delegated:
        if d.expires <= now + within:
            out.setdefault(d.product, set()).add(d.role)
    return out


def repository_status(
    repo_dir: Path, now: datetime, *, warn_within: timedelta = DEFAULT_WARN_WITHIN
) -> RefreshResult:
    """Read-only: every role's version and expiry, with the warnings a refresh would print
    plus one for an online role that has already expired (the refresh timer is not running).
    Needs no keys, so a monitoring job can run it anywhere the repository is readable."""
    check_now(now)
    state = load_state(repo_dir)
    result = _result(state, (), now, warn_within, "status")
    stale = tuple(
        ExpiryWarning(r, md.signed.version, md.signed.expires, md.signed.expires - now)
        for r in ONLINE_ROLES
        if (md := _role_md(state, r)).signed.expires <= now
    )
    demo = warn_demo_keys(root=state.root.signed, repo=repo_dir)
    return dataclasses.replace(result, warnings=result.warnings + stale, demo_keys=demo)


def due_roles(state: RepoState, now: datetime, within: timedelta | None) -> tuple[str, ...]:
    """The online roles expiring before ``now + within`` (all of them when ``within`` is None)."""
    if within is None:
        return ONLINE_ROLES
    return tuple(r for r in ONLINE_ROLES if _role_md(state, r).signed.expires <= now + within)


def sign_refresh(
    state: RepoState,
    signers: RoleSigners,
    now: datetime,
    expiries: Expiries,
    *,
    targets: bool = False,
    renew: Mapping[str, Collection[str]] | None = None,
) -> SignedRelease:
    """Snapshot N+1 (same meta) and timestamp N+1, each checked against the current root;
    with ``targets``, also targets N+1 listing exactly the same targets; with ``renew``
    (product -> its role and bins to re-sign), those delegated roles N+1 too, signed with
    ``signers[product]`` and listed by the new snapshot."""
    new_targets = next_targets(state, now, expiries) if targets else None
    staged = stage_chain(state, new_targets, now, expiries)
    delegated = []
    bins: set[str] = set()
    for product, names in sorted((renew or {}).items()):
        view = product_view(state, product)
        assert view is not None
        roles = stage_renewal(view, names, expiries.expires("targets", now))
        delegated.extend(sign_roles(roles, signers))
        bins.update(r.name for r in roles if r.name != product)
    staged.snapshot.meta.update(snapshot_meta(delegated, frozenset(bins)))
    chain = sign_chain(staged, signers, [state.root.signed])
    return SignedRelease(
        (), chain.targets, chain.snapshot, chain.timestamp, delegated=tuple(delegated)
    )


def refresh(
    repo_dir: Path,
    signers: RoleSigners,
    now: datetime,
    *,
    within: timedelta | None = None,
    targets: bool = False,
    warn_within: timedelta = DEFAULT_WARN_WITHIN,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
    progress: ProgressFn | None = None,
) -> RefreshResult:
    """Re-sign snapshot and timestamp (only if one expires within ``within``, when given).

    ``targets=True`` re-signs targets as well (needs ``signers["targets"]``); it is then
    done regardless of ``within``.

    Raises ``ThresholdError`` before writing anything if ``signers`` do not meet root's
    threshold for snapshot or timestamp, ``UntrustedRepositoryError`` if the published
    metadata does not verify.
    """
    check_now(now)
    if within is not None and within < timedelta(0):
        raise UsageError(f"--within: expected a non-negative duration, found {within}")
    expiries = expiries or Expiries()
    with publisher_lock(repo_dir):
        state = load_state(repo_dir)
        due = due_roles(state, now, None if targets else within)
        renew = {
            p: names
            for p, names in delegated_due(delegated_roles(state), now, warn_within).items()
            if p in signers
        }
        if not due and not renew:
            reason = f"nothing due: snapshot and timestamp are valid for more than {within}"
            demo = warn_demo_keys(root=state.root.signed, repo=repo_dir, signers=[signers])
            return dataclasses.replace(_result(state, (), now, warn_within, reason), demo_keys=demo)
        check_root_current(state.root.signed, now)
        release = sign_refresh(state, signers, now, expiries, targets=targets, renew=renew)
        publish(repo_dir, release, disk=disk or PublishDisk(), progress=progress)
        state = load_state(repo_dir)
        if within is None or targets or not due:
            reason = "requested" if due else ""
        else:
            reason = f"{' and '.join(due)} expire(s) within {within}"
        if renew:
            products = ", ".join(sorted(renew))
            reason = "; ".join(filter(None, [reason, f"{products} expire(s) within {warn_within}"]))
        renewed = tuple(md.role for md in release.delegated)
        roles = (*(CHAIN_ROLES if targets else ONLINE_ROLES), *renewed)
        demo = warn_demo_keys(root=state.root.signed, repo=repo_dir, signers=[signers])
        return dataclasses.replace(_result(state, roles, now, warn_within, reason), demo_keys=demo)


def _result(
    state: RepoState,
    refreshed: tuple[str, ...],
    now: datetime,
    warn_within: timedelta,
    reason: str,
) -> RefreshResult:
    delegated = tuple(delegated_roles(state))
    return RefreshResult(
        refreshed=refreshed,
        versions={r: _role_md(state, r).signed.version for r in TOP_LEVEL_ROLES},
        expires={r: _role_md(state, r).signed.expires for r in TOP_LEVEL_ROLES},
        warnings=offline_expiry_warnings(state, now, warn_within, delegated),
        reason=reason,
        delegated=delegated,
    )


def _role_md(state: RepoState, role: str) -> Metadata[Any]:
    md: Metadata[Any] = getattr(state, role)
    return md


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
