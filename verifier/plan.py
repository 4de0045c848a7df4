"""Resolve: which artifact, if any, this device should install. Pure — no I/O, no clock.

Input is what TUF has verified (each target's path, signed length and hashes, and parsed
``ArtifactInfo``) plus the device's facts; output is an ``UpdatePlan``, a ``NothingToDo`` with
its reason, or a typed error. Everything the update pipeline later executes was decided here,
so the policy can be read (and tested as tables) in one place:

* only targets for our product and hardware are ever chosen;
* the newest compatible version wins; an image that failed its trial is skipped until a newer
  version appears or an operator clears the failure;
* image anti-rollback: never a version lower than the installed one unless that target's signed
  ``allow_downgrade`` says so (TUF's metadata rollback protection does not cover this);
* a delta is preferred when its signed base is exactly the booted slot's signed image, with the
  full artifact of the same version as the fallback;
* a device configured with the image type its slots hold (``init --image-type``) installs only
  targets signed as that type (see ``_of_type``);
* a withdrawn version (``custom.otakit.withdrawn``, ``otakit release withdraw``) is never
  started: not as the newest, not as a requested version, neither its full artifact nor any
  delta to it. A version counts as withdrawn when any of its targets says so (the publisher
  marks them all; the strictest reading wins). A delta *from* a withdrawn version to a good
  one stays usable: its base is the image the device already runs, its output is checked
  against the signed image of the good version, and it is how devices leave the withdrawn one.
* staged rollouts (``custom.otakit.rollout``, ``verifier.rollout``): a version the device is
  not running is started only when ``rollout.decide`` allows it for this device's seed at
  ``facts.now``; the device takes the newest version that is installable *and* allowed, so a
  new release still in its 5 % wave does not hold back an older one rolled out fully. A
  version whose targets carry different policies is not started at all (fail closed, logged).
  ``Policy.override_waves`` (``update --now``) skips the waves, never a halt. A device on
  the release is not affected by its policy: a halt stops starts, nobody is moved off it;
* a recall (``withdrawn.recall`` on any target of the *running* version) is the signed
  permission to go back: if the other slot holds the journal's previous image, still
  published and neither withdrawn nor failed, the plan is a ``SwitchBack`` to it (no
  download; the shell re-hashes the slot first and resolves again without it if it does not
  match); otherwise the newest version that is neither withdrawn nor recalled, even an older
  one. Going back respects a halt but ignores the waves of an older version: a device must
  not be stranded on a recalled image waiting for a wave of the release it ran before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from verifier.artifact import ArtifactInfo, ImageRef, ImageVersion, Withdrawal
from verifier.errors import (
    DowngradeError,
    HaltedReleaseError,
    IncompatibleTargetError,
    NoSuchVersionError,
    RolloutWaitError,
    WithdrawnVersionError,
)
from verifier.imagetype import ImageType
from verifier.rollout import WHOLE_FLEET, RolloutDecision, decide

log = logging.getLogger("otakit.plan")


@dataclass(frozen=True)
class Candidate:
    """One verified target: path, signed length and hashes, and its otakit metadata."""

    path: str
    length: int
    hashes: tuple[tuple[str, str], ...]
    info: ArtifactInfo

    @classmethod
    def of(cls, path: str, length: int, hashes: Mapping[str, str], info: ArtifactInfo) -> Candidate:
        return cls(path, length, tuple(sorted(hashes.items())), info)


@dataclass(frozen=True)
class Installed:
    """An image as signed: what a slot holds."""

    version: ImageVersion
    image: ImageRef


@dataclass(frozen=True)
class DeviceFacts:
    product: str
    hardware: str
    installed: Installed
    failed: frozenset[str] = frozenset()
    pending: Installed | None = None
    #: The image type this device's slots hold, if its operator said so at init.
    image_type: ImageType | None = None
    #: The device's secret rollout seed (``STATE/rollout-seed``); None: no release with a
    #: rollout policy is started (fail closed).
    seed: bytes | None = None
    #: The time the waves are compared with (passed in: the plan reads no clock).
    now: datetime | None = None
    #: What the other slot holds by the journal (the previous image), for a recall.
    other: Installed | None = None


@dataclass(frozen=True)
class Policy:
    #: Install exactly this version (operator request) instead of the newest.
    version: ImageVersion | None = None
    allow_delta: bool = True
    #: ``update --now``: skip the waves of a rollout (never a halt, withdrawal or recall).
    override_waves: bool = False


@dataclass(frozen=True)
class UpdatePlan:
    version: ImageVersion
    image: ImageRef
    artifact: Candidate
    #: The full artifact to use if the delta path fails (None when ``artifact`` is full).
    fallback: Candidate | None
    downgrade: bool = False
    #: the rollout decision that allowed this version (None: decided before rollouts)
    rollout: RolloutDecision | None = None
    #: set when the running version is recalled and this plan goes away from it
    recall: Withdrawal | None = None


@dataclass(frozen=True)
class SwitchBack:
    """The running version is recalled and the other slot holds the previous image, still
    published and good: arm that slot for a trial, with nothing downloaded. The shell first
    re-hashes the slot against ``image`` (the signed hash of ``version``)."""

    version: ImageVersion
    image: ImageRef
    recall: Withdrawal
    #: the recalled running version (for messages)
    leaving: ImageVersion


@dataclass(frozen=True)
class NothingToDo:
    reason: str


def resolve(
    candidates: Iterable[Candidate], facts: DeviceFacts, policy: Policy = Policy()
) -> UpdatePlan | SwitchBack | NothingToDo:
    everything = [c for c in candidates if c.info.product == facts.product]
    withdrawn = withdrawn_versions(everything)
    ours = [c for c in everything if c.info.version not in withdrawn]
    compat = [c for c in ours if facts.hardware in c.info.hardware]
    by_version: dict[ImageVersion, list[Candidate]] = {}
    for c in compat:
        by_version.setdefault(c.info.version, []).append(c)
    newest_any = max((c.info.version for c in ours), default=None)
    installed = facts.installed
    recall = _recall_of(everything, installed.version)

    if policy.version is not None:
        if (w := withdrawn.get(policy.version)) is not None:
            raise WithdrawnVersionError(
                f"version {policy.version} of {facts.product!r} was "
                f"{'recalled' if w.recall else 'withdrawn'} by the publisher at {w.time}: "
                f"{w.reason}",
                hint="run 'otakit-device update' without --version for the newest version "
                "that is not withdrawn",
            )
        return _resolve_requested(policy.version, ours, by_version, facts, policy, recall)

    note = _withdrawn_note(withdrawn, installed.version)
    if recall is not None:
        return _resolve_recalled(by_version, facts, policy, recall, note)
    if newest_any is not None and newest_any not in by_version:
        hw = sorted({h for c in ours if c.info.version == newest_any for h in c.info.hardware})
        note += (
            f"; the newest version {newest_any} of {facts.product!r} is published for "
            f"hardware {hw}, not for {facts.hardware!r}"
        )
    if not by_version:
        return NothingToDo(
            f"no image for product {facts.product!r} and hardware {facts.hardware!r} "
            f"is published{note}"
        )
    skipped: list[str] = []
    waiting: list[tuple[ImageVersion, RolloutDecision]] = []
    for version in sorted(by_version, reverse=True):
        group = by_version[version]
        image = _image_of(group)
        if version < installed.version and not _downgrade_allowed(group):
            break
        if version == installed.version:
            break
        if image.sha256 in facts.failed:
            skipped.append(str(version))
            continue
        if facts.pending is not None and facts.pending.image == image:
            return NothingToDo(f"version {version} is already pending its trial boot{note}")
        typed = _of_type(version, group, facts)
        decision = rollout_decision(version, group, facts, override=policy.override_waves)
        if not decision.allowed:
            waiting.append((version, decision))
            continue
        return replace(_choose(version, image, typed, facts, policy), rollout=decision)
    why = f"version {installed.version} is installed and no newer image is published"
    if waiting:
        why = f"version {installed.version} is installed and stays for now: " + "; ".join(
            f"version {v} {d.reason}" for v, d in waiting
        )
    if skipped:
        why += f"; except {', '.join(skipped)}, which failed its trial (not retried)"
    return NothingToDo(why + note)


def rollout_decision(
    version: ImageVersion, group: list[Candidate], facts: DeviceFacts, *, override: bool
) -> RolloutDecision:
    """May this device start ``version`` (its targets ``group``) now? Fail closed: targets
    that disagree on the policy, or a policy with no seed or time to evaluate it, say no."""
    policies = {c.info.rollout for c in group}
    if len(policies) > 1:
        why = (
            f"is not started: its {len(group)} targets carry {len(policies)} different rollout "
            "policies (the publisher must sign one for all of them)"
        )
        log.warning("rollout: version %s %s", version, why)
        return RolloutDecision(False, why, 0, 0)
    (policy,) = policies
    if policy is None:
        return RolloutDecision(True, "has no rollout policy: the whole fleet", 0, WHOLE_FLEET)
    if facts.seed is None or facts.now is None:
        return RolloutDecision(False, "is rolled out in waves and this device has no seed", 0, 0)
    d = decide(
        policy,
        seed=facts.seed,
        product=facts.product,
        version=str(version),
        now=facts.now,
        override=override,
    )
    return replace(d, reason=("may start: " if d.allowed else "is not started: ") + d.reason)


def rollout_outlook(
    candidates: Iterable[Candidate], facts: DeviceFacts
) -> tuple[ImageVersion, RolloutDecision] | None:
    """The rollout decision for the newest version newer than the installed one (for
    ``status``): what an operator asks first when a device does not update."""
    group = [
        c
        for c in candidates
        if c.info.supports(facts.product, facts.hardware) and c.info.withdrawn is None
    ]
    withdrawn = {c.info.version for c in candidates if c.info.withdrawn is not None}
    newer = sorted(
        {c.info.version for c in group if c.info.version > facts.installed.version} - withdrawn
    )
    if not newer:
        return None
    version = newer[-1]
    same = [c for c in group if c.info.version == version]
    return version, rollout_decision(version, same, facts, override=False)


def recall_of(
    candidates: Iterable[Candidate], product: str, version: ImageVersion
) -> Withdrawal | None:
    """The recall of ``product`` ``version``, if any of its targets carries one."""
    return _recall_of([c for c in candidates if c.info.product == product], version)


def _recall_of(everything: Iterable[Candidate], version: ImageVersion) -> Withdrawal | None:
    for c in sorted(everything, key=lambda c: c.path):
        if c.info.version == version and c.info.withdrawn is not None and c.info.withdrawn.recall:
            return c.info.withdrawn
    return None


def _resolve_recalled(
    by_version: dict[ImageVersion, list[Candidate]],
    facts: DeviceFacts,
    policy: Policy,
    recall: Withdrawal,
    note: str,
) -> UpdatePlan | SwitchBack | NothingToDo:
    """The running version is recalled: back to the previous slot, else the newest good one."""
    installed = facts.installed
    lead = f"version {installed.version} is recalled: {recall.reason}"
    prev = facts.other
    why_not: list[str] = []
    if prev is not None and prev.version != installed.version:
        group = by_version.get(prev.version)
        if facts.pending is not None and facts.pending.image == prev.image:
            return NothingToDo(f"{lead}; version {prev.version} is already pending its trial boot")
        if group is None:
            why_not.append(
                f"the other slot's version {prev.version} is not published (or withdrawn)"
            )
        elif _image_of(group) != prev.image:
            why_not.append(f"the other slot's image is not the signed image of {prev.version}")
        elif prev.image.sha256 in facts.failed:
            why_not.append(f"the other slot's version {prev.version} failed its trial")
        else:
            d = rollout_decision(prev.version, group, facts, override=True)
            if d.allowed:
                return SwitchBack(prev.version, prev.image, recall, installed.version)
            why_not.append(f"the other slot's version {prev.version} {d.reason}")
    waiting: list[str] = []
    for version in sorted(by_version, reverse=True):
        group = by_version[version]
        image = _image_of(group)
        if image.sha256 in facts.failed:
            waiting.append(f"version {version} failed its trial")
            continue
        if facts.pending is not None and facts.pending.image == image:
            return NothingToDo(f"{lead}; version {version} is already pending its trial boot")
        typed = _of_type(version, group, facts)
        # Waves hold back a newer release as usual; an older one is where devices go back to.
        override = policy.override_waves or version < installed.version
        d = rollout_decision(version, group, facts, override=override)
        if not d.allowed:
            waiting.append(f"version {version} {d.reason}")
            continue
        plan = _choose(version, image, typed, facts, policy)
        return replace(plan, rollout=d, recall=recall)
    return NothingToDo(
        f"{lead}; no published version to go back to"
        + "".join(f"; {w}" for w in (*why_not, *waiting))
        + note
    )


def pulled_pending(
    candidates: Iterable[Candidate], facts: DeviceFacts
) -> tuple[ImageVersion, Withdrawal] | None:
    """The armed trial's release, if the publisher has since withdrawn or recalled it.

    Such a trial must not be booted: the device would run a release taken back (a recall
    usually means it breaks devices), and only come back from it after a second reboot.
    """
    p = facts.pending
    if p is None:
        return None
    same = [
        c
        for c in candidates
        if c.info.product == facts.product
        and c.info.version == p.version
        and c.info.image == p.image
    ]
    w = withdrawn_versions(same).get(p.version)
    return None if w is None else (p.version, w)


def withdrawn_versions(candidates: Iterable[Candidate]) -> dict[ImageVersion, Withdrawal]:
    """The withdrawn versions among ``candidates`` (of one product) and why."""
    out: dict[ImageVersion, Withdrawal] = {}
    for c in sorted(candidates, key=lambda c: c.path):
        if c.info.withdrawn is not None:
            out.setdefault(c.info.version, c.info.withdrawn)
    return out


def _withdrawn_note(withdrawn: Mapping[ImageVersion, Withdrawal], installed: ImageVersion) -> str:
    """Why newer versions were passed over: the operator asks when a release does not come."""
    newer = sorted(v for v in withdrawn if v > installed)
    return "".join(
        f"; {v} was {'recalled' if withdrawn[v].recall else 'withdrawn'}: {withdrawn[v].reason}"
        for v in newer
    )


def _resolve_requested(
    version: ImageVersion,
    ours: list[Candidate],
    by_version: dict[ImageVersion, list[Candidate]],
    facts: DeviceFacts,
    policy: Policy,
    recall: Withdrawal | None,
) -> UpdatePlan | NothingToDo:
    group = by_version.get(version)
    if group is None:
        hw = sorted({h for c in ours if c.info.version == version for h in c.info.hardware})
        if hw:
            raise NoSuchVersionError(
                f"version {version} of {facts.product!r} is published for hardware {hw}, "
                f"not for this device's {facts.hardware!r}"
            )
        published = sorted({c.info.version for c in ours if facts.hardware in c.info.hardware})
        raise NoSuchVersionError(
            f"version {version} of product {facts.product!r} is not published; published for "
            f"{facts.hardware!r}: {', '.join(map(str, published)) or 'none'}",
            hint="run 'otakit-device update' without --version for the newest one",
        )
    image = _image_of(group)
    if version == facts.installed.version:
        return NothingToDo(f"version {version} is already installed")
    # A recall of the running version is the signed permission to go back.
    if version < facts.installed.version and not (_downgrade_allowed(group) or recall):
        raise DowngradeError(
            f"version {version} is older than the installed {facts.installed.version} and its "
            f"signed metadata does not allow a downgrade",
            hint="publish the older image with allow_downgrade if going back is intended",
        )
    if facts.pending is not None and facts.pending.image == image:
        return NothingToDo(f"version {version} is already pending its trial boot")
    typed = _of_type(version, group, facts)
    # Waves apply to a request too, unless --now: a fleet-wide script naming the version
    # must not defeat a staged rollout silently. Going back from a recall ignores them.
    override = policy.override_waves or (recall is not None and version < facts.installed.version)
    d = rollout_decision(version, group, facts, override=override)
    if not d.allowed:
        if d.halted:
            raise HaltedReleaseError(
                f"version {version} of {facts.product!r} {d.reason}: no device starts it",
                hint="the publisher resumes it with 'otakit rollout resume'; --now does not "
                "override a halt",
            )
        raise RolloutWaitError(
            f"version {version} of {facts.product!r} {d.reason}",
            hint="add --now to override the waves on this device",
        )
    # An explicit request overrides the failed-image memory: the operator asked.
    return replace(_choose(version, image, typed, facts, policy), rollout=d, recall=recall)


def _of_type(version: ImageVersion, group: list[Candidate], facts: DeviceFacts) -> list[Candidate]:
    """The targets of ``group`` signed as the device's configured image type.

    Refusing (rather than skipping to an older version) is deliberate: a newest release of
    another type means the publisher changed format or released the wrong file, and an
    operator must hear of it; the device stays on its image meanwhile.

    A target that does not say its type (schema 1.0 metadata, from before ``image_type``
    existed) is refused too when a type is configured: the configured type is an assertion
    the operator made about what may be written to the slots, and a target of unknown type
    cannot be shown to satisfy it. Accepting it would turn the check off for every publisher
    that does not record the type. Such a device is served again by republishing the image
    with a publisher that records ``image_type``.
    """
    want = facts.image_type
    if want is None:
        return group
    ok = [c for c in group if c.info.image_type == want]
    if ok:
        return ok
    types = sorted({c.info.image_type or "unknown" for c in group})
    if types == ["unknown"]:
        raise IncompatibleTargetError(
            f"version {version} of {facts.product!r} does not say its image type (schema 1.0 "
            f"metadata); this device is configured for {want} images and installs only targets "
            f"signed as {want}",
            hint="republish the image with an otakit release that records image_type",
        )
    raise IncompatibleTargetError(
        f"version {version} of {facts.product!r} is signed as a {' / '.join(types)} image; "
        f"this device's slots hold {want} images (configured at init)",
        hint="release an image of the configured type, or re-initialise the device "
        "with the image type its slots really hold",
    )


def _image_of(group: list[Candidate]) -> ImageRef:
    fulls = [c for c in group if c.info.kind == "full"]
    return (fulls[0] if fulls else group[0]).info.image


def _downgrade_allowed(group: list[Candidate]) -> bool:
    return any(c.info.allow_downgrade for c in group)


def _choose(
    version: ImageVersion,
    image: ImageRef,
    group: list[Candidate],
    facts: DeviceFacts,
    policy: Policy,
) -> UpdatePlan:
    consistent = [c for c in group if c.info.image == image]
    full = next((c for c in consistent if c.info.kind == "full"), None)
    base = facts.installed.image
    deltas = sorted(
        (
            c
            for c in consistent
            if c.info.kind == "delta" and c.info.base is not None and c.info.base.image == base
        ),
        key=lambda c: (c.length, c.path),
    )
    downgrade = version < facts.installed.version
    if policy.allow_delta and deltas:
        return UpdatePlan(version, image, deltas[0], full, downgrade)
    if full is not None:
        return UpdatePlan(version, image, full, None, downgrade)
    raise IncompatibleTargetError(
        f"version {version} has no full artifact and no delta from the installed image "
        f"(version {facts.installed.version}, sha256 {base.sha256[:16]}…)",
        hint="publish a full artifact for every version",
    )
