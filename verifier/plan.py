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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from verifier.artifact import ArtifactInfo, ImageRef, ImageVersion, Withdrawal
from verifier.errors import (
    DowngradeError,
    IncompatibleTargetError,
    NoSuchVersionError,
    WithdrawnVersionError,
)
from verifier.imagetype import ImageType


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


@dataclass(frozen=True)
class Policy:
    #: Install exactly this version (operator request) instead of the newest.
    version: ImageVersion | None = None
    allow_delta: bool = True


@dataclass(frozen=True)
class UpdatePlan:
    version: ImageVersion
    image: ImageRef
    artifact: Candidate
    #: The full artifact to use if the delta path fails (None when ``artifact`` is full).
    fallback: Candidate | None
    downgrade: bool = False


@dataclass(frozen=True)
class NothingToDo:
    reason: str


def resolve(
    candidates: Iterable[Candidate], facts: DeviceFacts, policy: Policy = Policy()
) -> UpdatePlan | NothingToDo:
    everything = [c for c in candidates if c.info.product == facts.product]
    withdrawn = withdrawn_versions(everything)
    ours = [c for c in everything if c.info.version not in withdrawn]
    compat = [c for c in ours if facts.hardware in c.info.hardware]
    by_version: dict[ImageVersion, list[Candidate]] = {}
    for c in compat:
        by_version.setdefault(c.info.version, []).append(c)
    newest_any = max((c.info.version for c in ours), default=None)
    installed = facts.installed

    if policy.version is not None:
        if (w := withdrawn.get(policy.version)) is not None:
            raise WithdrawnVersionError(
                f"version {policy.version} of {facts.product!r} was withdrawn by the publisher "
                f"at {w.time}: {w.reason}",
                hint="run 'otakit-device update' without --version for the newest version "
                "that is not withdrawn",
            )
        return _resolve_requested(policy.version, ours, by_version, facts, policy)

    note = _withdrawn_note(withdrawn, installed.version)
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
        return _choose(version, image, _of_type(version, group, facts), facts, policy)
    why = f"version {installed.version} is installed and no newer image is published"
    if skipped:
        why += f" except {', '.join(skipped)}, which failed its trial (not retried)"
    return NothingToDo(why + note)


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
    return "".join(f"; {v} was withdrawn: {withdrawn[v].reason}" for v in newer)


def _resolve_requested(
    version: ImageVersion,
    ours: list[Candidate],
    by_version: dict[ImageVersion, list[Candidate]],
    facts: DeviceFacts,
    policy: Policy,
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
    if version < facts.installed.version and not _downgrade_allowed(group):
        raise DowngradeError(
            f"version {version} is older than the installed {facts.installed.version} and its "
            f"signed metadata does not allow a downgrade",
            hint="publish the older image with allow_downgrade if going back is intended",
        )
    if facts.pending is not None and facts.pending.image == image:
        return NothingToDo(f"version {version} is already pending its trial boot")
    # An explicit request overrides the failed-image memory: the operator asked.
    return _choose(version, image, _of_type(version, group, facts), facts, policy)


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
