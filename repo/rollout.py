"""The operator's rollout controls: halt, resume, advance, recall, status, and the gate.

Each change is one signed targets change over every target of the release (its full
artifact and every delta to it, ``repo.withdraw.release_targets``): all of them carry the
same policy, so the waves and a halt hold whichever path a device takes. The policy lives in
the target's ``custom`` (docs/FORMAT.md, "Rollout policy"), signed by the targets keys, so
whoever runs the server cannot lift a halt, widen a wave or cancel a recall.

The edits are pure functions of the published policy and the time (``halted``, ``resumed``,
``advanced``, ``recalled``); the commands around them are the same transaction as
``withdraw``: open it, refuse what makes no sense before signing anything
(``RolloutRefusedError``), stage the new ``custom`` of each target that changes, commit once.
A rerun finds nothing to change, signs nothing and says ``already``, so a pipeline that does
not know whether its first attempt published can simply run it again.

Semantics:

* halt: ``halted`` true. A release published without waves gets a policy that says so: it
  starts now, one wave of the whole fleet, halted; resuming it lets the whole fleet go.
* resume: ``halted`` false; the waves keep their times (a wave whose time passed during the
  halt opens at once). A withdrawn or recalled release cannot be resumed: that is final.
* advance: opens the next wave now (``--to SHARE``: every wave up to that share, adding a
  wave at exactly that share if there is none). The signed form stays valid: waves already
  open stay as they were, the new share opens now, later waves keep their times. ``--to``
  is the idempotent form (a share reached already signs nothing); a bare ``advance`` opens
  one more wave each time it runs, which is what an operator at a terminal means.
* recall: ``repo.withdraw``'s withdrawal with ``recall`` true; a release withdrawn plainly is
  upgraded, and the first withdrawal's reason and time stand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from repo.delegation import product_role
from repo.demo_warnings import warn_demo_keys
from repo.errors import RolloutRefusedError, UsageError
from repo.fleet_reports import ReleaseCounts, count_dir
from repo.keys import KeyConfig, PromptFn
from repo.publish import ProgressFn
from repo.repository import Expiries, change_signers, check_now, open_transaction
from repo.roles import RoleSigners
from repo.rollout_spec import describe
from repo.state import RepoState, load_state
from repo.withdraw import (
    ListedArtifact,
    parse_request,
    product_artifacts,
    release_targets,
)
from verifier.artifact import ArtifactInfo, ImageVersion, Withdrawal
from verifier.effects import Disk
from verifier.errors import ArtifactSchemaError
from verifier.rollout import MAX_WAVES, WHOLE_FLEET, RolloutPolicy, Wave

Action = Literal["halt", "resume", "advance", "recall"]
GateAction = Literal["halt", "recall"]
ISO = "%Y-%m-%dT%H:%M:%SZ"


def _pct(bp: int) -> str:
    return f"{bp / 100:g} %"


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.strftime(ISO)


def _valid(policy: RolloutPolicy) -> RolloutPolicy:
    """Judged by the device's own parser: what we sign is what every device accepts."""
    try:
        return RolloutPolicy.from_dict(policy.to_dict())
    except ArtifactSchemaError as e:
        raise RolloutRefusedError(f"the new rollout policy would be invalid: {e.message}") from e


# --- the pure edits ---------------------------------------------------------------------------


def halted(policy: RolloutPolicy | None, now: datetime) -> RolloutPolicy:
    if policy is None:
        return RolloutPolicy(now, (Wave(WHOLE_FLEET, timedelta(0)),), halted=True)
    return dataclasses.replace(policy, halted=True)


def resumed(policy: RolloutPolicy | None) -> RolloutPolicy | None:
    return None if policy is None else dataclasses.replace(policy, halted=False)


def advanced(
    policy: RolloutPolicy | None, now: datetime, to_bp: int | None = None
) -> RolloutPolicy:
    """``policy`` with the next wave (or every wave up to ``to_bp``) open from ``now``."""
    if policy is None:
        raise RolloutRefusedError(
            "advance: expected a release with waves, found one published for the whole fleet "
            "at once (no rollout policy): there is nothing to advance",
            hint="halt it (otakit rollout halt) if it must stop",
        )
    if policy.halted:
        raise RolloutRefusedError(
            "advance: expected a running rollout, found it halted",
            hint="resume it first (otakit rollout resume), then advance",
        )
    current = policy.allowed_bp(now)
    if to_bp is not None and to_bp <= current:
        return policy  # already there: a rerun of ``advance --to`` signs nothing
    if current >= WHOLE_FLEET:
        raise RolloutRefusedError(
            "advance: the whole fleet (100 %) may start this release already; nothing to advance"
        )
    if to_bp is None:
        later = [w.fleet_bp for w in policy.waves if w.fleet_bp > current]
        if not later:
            raise RolloutRefusedError(
                f"advance: every wave is open already ({_pct(current)} of the fleet)",
                hint="go further with --to SHARE, e.g. --to 100%",
            )
        to_bp = min(later)
    start, waves = policy.start, policy.waves
    if now < start:  # not started yet: it starts now, and later waves keep their times
        shift = start - now
        start, waves = now, tuple(Wave(w.fleet_bp, w.after + shift) for w in waves)
    at = now - start
    opened = [w for w in waves if w.after <= at]  # all below ``current``
    later_waves = [w for w in waves if w.fleet_bp > to_bp]  # none open yet
    new = [*opened, Wave(to_bp, at), *later_waves]
    if len(new) > MAX_WAVES:
        new = new[len(opened) :]  # the open waves below the new share no longer matter
    return _valid(RolloutPolicy(start, tuple(new), False))


def recalled(current: Withdrawal | None, request: Withdrawal) -> tuple[Withdrawal, str | None]:
    """The recall to sign, and a warning when an earlier reason stands over ``request``'s."""
    if current is None:
        return dataclasses.replace(request, recall=True), None
    note = None
    if current.reason != request.reason:
        note = (
            f"already withdrawn at {current.time} with reason {current.reason!r}; that reason "
            "stands"
        )
    return dataclasses.replace(current, recall=True), note


@dataclass(frozen=True)
class Request:
    """What the operator asked for: one action, at ``now`` (UTC, whole seconds)."""

    action: Action
    now: datetime
    to_bp: int | None = None
    withdrawal: Withdrawal | None = None


@dataclass(frozen=True)
class ReleaseEdit:
    """The release-wide outcome: every target gets this policy and this withdrawal."""

    rollout: RolloutPolicy | None
    withdrawn: Withdrawal | None
    warnings: tuple[str, ...] = ()


def plan_edit(release: ArtifactInfo, request: Request) -> ReleaseEdit:
    """What ``request`` makes of a release whose (full artifact's) metadata is ``release``."""
    policy, withdrawn = release.rollout, release.withdrawn
    name = f"{release.product} {release.version}"
    if request.action == "halt":
        return ReleaseEdit(halted(policy, request.now), withdrawn)
    if request.action == "resume":
        if withdrawn is not None:
            what = "recalled" if withdrawn.recall else "withdrawn"
            raise RolloutRefusedError(
                f"resume: {name} was {what} at {withdrawn.time} ({withdrawn.reason}): "
                f"expected a halted release, found a {what} one; that is final",
                hint="publish a new release (with --waves) instead",
            )
        return ReleaseEdit(resumed(policy), withdrawn)
    if request.action == "advance":
        if withdrawn is not None:
            raise RolloutRefusedError(
                f"advance: {name} was withdrawn at {withdrawn.time} ({withdrawn.reason}); "
                "no device starts it, whatever its waves say",
                hint="publish a new release instead",
            )
        return ReleaseEdit(advanced(policy, request.now, request.to_bp), withdrawn)
    assert request.withdrawal is not None
    recall, note = recalled(withdrawn, request.withdrawal)
    return ReleaseEdit(policy, recall, () if note is None else (f"{name} was {note}",))


def edited(info: ArtifactInfo, edit: ReleaseEdit) -> ArtifactInfo:
    return dataclasses.replace(info, rollout=edit.rollout, withdrawn=edit.withdrawn)


def release_info(found: Sequence[ListedArtifact]) -> ArtifactInfo:
    """The release's own metadata: its full artifact's (every target carries the same)."""
    fulls = [a.info for a in found if a.info.kind == "full"]
    return (fulls or [found[0].info])[0]


# --- the signed changes -----------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutChange:
    product: str
    version: ImageVersion
    action: Action
    rollout: RolloutPolicy | None
    withdrawn: Withdrawal | None
    #: every target of the release
    targets: tuple[str, ...]
    #: the targets this run changed (empty: it was so already, nothing was signed)
    changed: tuple[str, ...]
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    warnings: tuple[str, ...] = ()

    @property
    def already(self) -> bool:
        return not self.changed

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": str(self.version),
            "action": self.action,
            "rollout": None if self.rollout is None else self.rollout.to_dict(),
            "withdrawn": None if self.withdrawn is None else self.withdrawn.to_dict(),
            "targets": list(self.targets),
            "changed": list(self.changed),
            "already": self.already,
            "metadata": {
                "targets": self.targets_version,
                "snapshot": self.snapshot_version,
                "timestamp": self.timestamp_version,
            },
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Publisher:
    """How a change is signed and written (the same for every rollout command)."""

    keyconf: KeyConfig
    signers: RoleSigners | None = None
    #: a delegated product's own keys: its role (or bin) is re-signed with them alone
    product_keys: KeyConfig | None = None
    expiries: Expiries | None = None
    disk: Disk | None = None
    env: Mapping[str, str] | None = None
    prompt: PromptFn | None = None
    progress: ProgressFn | None = None


def _version(text: str) -> ImageVersion:
    try:
        return ImageVersion.parse(text)
    except ArtifactSchemaError as e:
        raise UsageError(e.message, hint=e.hint) from e


def change(
    repo_dir: Path, product: str, version: str, request: Request, pub: Publisher
) -> RolloutChange:
    """Apply ``request`` to every target of ``product`` ``version`` in one signed change."""
    check_now(request.now)
    wanted = _version(version)
    signers = pub.signers
    with open_transaction(repo_dir) as tx:
        _check_product_keys(tx.state, product, pub)
        found = release_targets(product_artifacts(tx.state, product), product, wanted)
        edit = plan_edit(release_info(found), request)
        todo = [(a, edited(a.info, edit)) for a in found]
        todo = [(a, new) for a, new in todo if new != a.info]
        for a, new in todo:
            tx.set_custom(a.path, {**a.custom, **new.to_custom()})
        if todo:
            if signers is None:
                signers = _signers(tx.state, product, pub, tx.signing_roles())
            tx.commit(
                signers, request.now, expiries=pub.expiries, disk=pub.disk, progress=pub.progress
            )
        st = tx.state
    warn_demo_keys(root=st.root.signed, repo=repo_dir, signers=[signers] if signers else [])
    return RolloutChange(
        product=product,
        version=wanted,
        action=request.action,
        rollout=edit.rollout,
        withdrawn=edit.withdrawn,
        targets=tuple(a.path for a in found),
        changed=tuple(a.path for a, _ in todo),
        targets_version=st.targets.signed.version,
        snapshot_version=st.snapshot.signed.version,
        timestamp_version=st.timestamp.signed.version,
        warnings=edit.warnings,
    )


def _check_product_keys(state: RepoState, product: str, pub: Publisher) -> None:
    if pub.product_keys is not None and product_role(state.targets.signed, product) is None:
        raise UsageError(
            f"{product} is not delegated: its releases are signed with the top-level "
            "targets keys, expected no product key file"
        )


def _signers(state: RepoState, product: str, pub: Publisher, roles: Collection[str]) -> RoleSigners:
    """The keys a change of ``roles`` needs (a delegated product's own, or the targets')."""
    keys = {} if pub.product_keys is None else {product: pub.product_keys}
    return change_signers(state, pub.keyconf, roles, keys, env=pub.env, prompt=pub.prompt)


def _at(now: datetime) -> datetime:
    check_now(now)
    return now.replace(microsecond=0)


def halt(
    repo_dir: Path, product: str, version: str, now: datetime, pub: Publisher
) -> RolloutChange:
    return change(repo_dir, product, version, Request("halt", _at(now)), pub)


def resume(
    repo_dir: Path, product: str, version: str, now: datetime, pub: Publisher
) -> RolloutChange:
    return change(repo_dir, product, version, Request("resume", _at(now)), pub)


def advance(
    repo_dir: Path,
    product: str,
    version: str,
    now: datetime,
    pub: Publisher,
    to_bp: int | None = None,
) -> RolloutChange:
    return change(repo_dir, product, version, Request("advance", _at(now), to_bp=to_bp), pub)


def recall(
    repo_dir: Path, product: str, version: str, reason: str, now: datetime, pub: Publisher
) -> RolloutChange:
    """Withdraw with ``recall``: devices running the release go back (module docstring)."""
    at = _at(now)
    _, withdrawal = parse_request(version, reason, at)
    return change(repo_dir, product, version, Request("recall", at, withdrawal=withdrawal), pub)


# --- status (read-only) -------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutStatus:
    product: str
    version: ImageVersion
    now: datetime
    rollout: RolloutPolicy | None
    withdrawn: Withdrawal | None
    targets: tuple[str, ...]
    reports: ReleaseCounts | None = None

    @property
    def allowed_bp(self) -> int:
        """The share of the fleet that may start the release now (0 once withdrawn)."""
        if self.withdrawn is not None:
            return 0
        return WHOLE_FLEET if self.rollout is None else self.rollout.allowed_bp(self.now)

    @property
    def next_opening(self) -> datetime | None:
        if self.withdrawn is not None or self.rollout is None:
            return None
        return self.rollout.next_opening(self.now)

    def to_json(self) -> dict[str, Any]:
        p, w = self.rollout, self.withdrawn
        return {
            "product": self.product,
            "version": str(self.version),
            "at": self.now.strftime(ISO),
            "rollout": None if p is None else p.to_dict(),
            "allowed_bp": self.allowed_bp,
            "next_opening": _iso(self.next_opening),
            "halted": p is not None and p.halted,
            "withdrawn": None if w is None else w.to_dict(),
            "recalled": w is not None and w.recall,
            "targets": list(self.targets),
            "reports": None if self.reports is None else self.reports.to_json(),
        }

    def text(self) -> str:
        p, w = self.rollout, self.withdrawn
        lines = [
            f"{self.product} {self.version}: {_pct(self.allowed_bp)} of the fleet may start it now"
        ]
        if p is None:
            lines.append("rollout: no waves (the whole fleet at once)")
        else:
            lines.append("rollout: halted" if p.halted else "rollout: running")
            lines += [f"  wave: {line}" for line in describe(p)]
        if self.next_opening is not None:
            lines.append(f"next opening: {_iso(self.next_opening)}")
        if w is not None:
            what = "recalled" if w.recall else "withdrawn"
            lines.append(f"{what} at {w.time}: {w.reason}")
        if self.reports is not None:
            lines.append(self.reports.text())
        return "\n".join(lines)


def status(
    repo_dir: Path,
    product: str,
    version: str,
    now: datetime,
    *,
    reports_dir: Path | None = None,
    warn: Callable[[str], None] = lambda _m: None,
) -> RolloutStatus:
    """Where the rollout of ``product`` ``version`` stands: verified, read-only, no keys."""
    check_now(now)
    wanted = _version(version)
    st = load_state(repo_dir)  # every signature verified, as ``repo list``
    warn_demo_keys(root=st.root.signed, repo=repo_dir)
    found = release_targets(product_artifacts(st, product), product, wanted)
    info = release_info(found)
    counts = None if reports_dir is None else count_dir(reports_dir, product, wanted, warn)
    return RolloutStatus(
        product, wanted, _at(now), info.rollout, info.withdrawn,
        tuple(a.path for a in found), counts,
    )  # fmt: skip


# --- the gate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """What the gate saw and did: ``tripped`` means it signed (or found) the ``action``."""

    product: str
    counts: ReleaseCounts
    max_failure_rate: float
    min_reports: int
    action: GateAction
    tripped: bool
    reason: str
    change: RolloutChange | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "version": self.counts.version,
            "reports": self.counts.to_json(),
            "max_failure_rate": self.max_failure_rate,
            "min_reports": self.min_reports,
            "action": self.action,
            "tripped": self.tripped,
            "reason": self.reason,
            "change": None if self.change is None else self.change.to_json(),
        }

    def text(self) -> str:
        c = self.counts
        head = (
            f"failure rate {c.failed}/{c.attempted} = {c.failure_rate:.1%} "
            f"(limit {self.max_failure_rate:.1%}, at least {self.min_reports} attempted)"
        )
        if not self.tripped:
            return f"{head}: not tripped ({self.reason}); nothing signed"
        assert self.change is not None
        done = "already so, nothing signed" if self.change.already else "signed"
        return f"{head}: TRIPPED: {self.action} {c.version} ({done})"


def check_rate(rate: float) -> float:
    if not 0 <= rate <= 1:
        raise UsageError(f"--max-failure-rate: expected a fraction in 0..1, found {rate!r}")
    return rate


def gate(
    repo_dir: Path,
    product: str,
    version: str,
    reports_dir: Path,
    now: datetime,
    pub: Publisher,
    *,
    max_failure_rate: float,
    min_reports: int = 10,
    action: GateAction = "halt",
    warn: Callable[[str], None] = lambda _m: None,
) -> GateResult:
    """Halt (or recall) ``product`` ``version`` when the reports say it fails too often.

    Trips when at least ``min_reports`` devices attempted the version and more than
    ``max_failure_rate`` of them failed on it (``repo.fleet_reports``). The reports only
    inform this decision; what it does is a signed change made with the operator's keys.
    Keys are loaded first either way, so a gate that could not act fails on its first run.
    """
    check_rate(max_failure_rate)
    if min_reports < 1:
        raise UsageError(f"--min-reports: expected at least 1, found {min_reports}")
    seen = status(repo_dir, product, version, now, reports_dir=reports_dir, warn=warn)
    counts = seen.reports
    assert counts is not None
    if pub.signers is None:
        state = load_state(repo_dir)
        delegated = product_role(state.targets.signed, product) is not None
        roles = {product} if delegated else {"targets"}
        pub = dataclasses.replace(pub, signers=_signers(state, product, pub, roles))
    rate = counts.failure_rate
    if counts.attempted < min_reports:
        why = f"{counts.attempted} device(s) attempted it, fewer than {min_reports}"
        return GateResult(product, counts, max_failure_rate, min_reports, action, False, why)
    if rate <= max_failure_rate:
        why = f"{rate:.1%} is not above {max_failure_rate:.1%}"
        return GateResult(product, counts, max_failure_rate, min_reports, action, False, why)
    why = (
        f"rollout gate: {counts.failed} of {counts.attempted} devices failed on "
        f"{product} {version} ({rate:.1%} > {max_failure_rate:.1%})"
    )
    if action == "halt":
        done = halt(repo_dir, product, version, now, pub)
    else:
        done = recall(repo_dir, product, version, why, now, pub)
    return GateResult(product, counts, max_failure_rate, min_reports, action, True, why, done)
