"""What a device reports about itself: ``status`` and the offline drift check.

``status`` never writes and never waits: it runs without the device lock (an update may
hold it for hours), reads the journal and configuration (both replaced atomically, so a read
sees a whole old or a whole new file), and shows the journal reconciled with the boot state
in memory; the next command that holds the lock persists that. It says when another command
holds the lock (``device.update_in_progress``).

Both show a slot's image the way a reviewer sees a published one (``verifier.artifact_view``,
the fields ``otakit inspect`` prints): the signed artifact metadata of the image the journal
records for the slot, looked up in the trusted targets metadata already on the device. When a
slot's bytes no longer hash to it, ``otakit image diff SLOT IMAGE`` on the slot and the
published image explains the drift file by file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from verifier import transitions
from verifier.artifact import ArtifactInfo, ImageRef, ImageVersion, Withdrawal
from verifier.artifact_view import artifact_fields, withdrawn_warning
from verifier.bootctl.base import SLOTS, BootState, Slot
from verifier.device import (
    Device,
    demo_warnings,
    hash_slot,
    update_in_progress,
    warn_demo_keys,
)
from verifier.errors import ConfigError, LocalError, MetadataError
from verifier.plan import Candidate, DeviceFacts, Installed, rollout_outlook
from verifier.rollout import RolloutDecision
from verifier.state import DeviceConfig, Journal, load_seed
from verifier.trusted_memo import trusted_answer


@dataclass(frozen=True)
class Published:
    """The signed target a slot's image was published as: the artifact to fetch (``target``)
    and its metadata. A full image is preferred to a delta that writes the same image: it is
    the file a reviewer decompresses and compares a slot with."""

    target: str
    info: ArtifactInfo

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "artifact": artifact_fields(self.info)}


def find_published(
    candidates: list[Candidate], config: DeviceConfig, image: ImageRef
) -> Published | None:
    """The trusted target for this device whose image is exactly ``image``, if any."""
    matches = [
        c
        for c in candidates
        if c.info.supports(config.product, config.hardware) and c.info.image == image
    ]
    matches.sort(key=lambda c: (c.info.kind != "full", c.path))
    return Published(matches[0].path, matches[0].info) if matches else None


def explain_command(slot_path: str, published: Published) -> str:
    """How a reviewer explains a slot that differs from its published image."""
    image = f"IMAGE-{published.info.version}"
    if published.info.kind == "full":
        fetch = f"the published image ('zstd -d' of target {published.target})"
    else:
        fetch = (
            f"the published image of version {published.info.version} "
            f"(target {published.target} is a delta: rebuild it on its base)"
        )
    return f"compare the slot with {fetch}: otakit image diff {slot_path} {image}"


@dataclass(frozen=True)
class Status:
    config: DeviceConfig
    boot: BootState
    journal: Journal
    #: public demo key ids the pinned root trusts (see ``device.demo_warnings``)
    demo_keys: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: who holds the device lock while status ran ("pid 123, update"), None if nobody
    in_progress: str | None = None
    #: the signed artifact of each slot's recorded image (a, b); None when not found
    published: tuple[Published | None, Published | None] = (None, None)
    #: why the trusted targets metadata could not be read (then nothing is ``published``)
    published_problem: str | None = None
    #: the rollout decision for the newest version newer than the running one, if any
    rollout: tuple[ImageVersion, RolloutDecision] | None = None
    #: the signed recall of the running version, if it is recalled
    recalled: Withdrawal | None = None

    def to_dict(self) -> dict[str, Any]:
        slots: dict[str, Any] = {}
        for i, s in enumerate(SLOTS):
            rec = self.journal.slot(s)
            targets = self.config.slot_targets
            slots[s] = {
                "path": str(self.config.slot_path(s)),
                "resolved": None if targets is None else str(targets[i]),
                "version": None if rec is None else str(rec.version),
                "image": None if rec is None else rec.image.to_dict(),
                "booted": self.boot.booted == s,
                "primary": self.boot.primary == s,
                "failed": rec is not None and rec.image.sha256 in self.journal.failed_hashes,
                "published": None if (pub := self.published[i]) is None else pub.to_dict(),
                "withdrawn": None if pub is None else artifact_fields(pub.info)["withdrawn"],
            }
        p = self.journal.pending
        last = self.journal.last_failure
        return {
            "product": self.config.product,
            "hardware": self.config.hardware,
            "repo_url": self.config.repo_url,
            "boot_backend": self.config.boot_backend,
            "image_type": self.config.image_type,
            "booted": self.boot.booted,
            "primary": self.boot.primary,
            "trial": self.boot.trial,
            "tries_left": self.boot.tries_left,
            "in_trial": self.boot.in_trial,
            "slots": slots,
            "pending": None if p is None else p.to_dict(),
            "last_failure": None if last is None else last.to_dict(),
            "failed_images": [f.to_dict() for f in self.journal.failures],
            "demo_keys": bool(self.demo_keys),
            "published_problem": self.published_problem,
            "warnings": list(self.warnings),
            "in_progress": self.in_progress,
            "retry": None if self.journal.retry is None else self.journal.retry.to_dict(),
            "rollout": None
            if self.rollout is None
            else {"version": str(self.rollout[0]), **self.rollout[1].to_dict()},
            "recalled": None if self.recalled is None else self.recalled.to_dict(),
        }


def status(dev: Device, now: datetime) -> Status:
    busy = update_in_progress(dev.paths.root)
    step = transitions.reconcile(dev.journal(), dev.boot.read(), now)
    journal, st = step.journal, step.boot
    problem = None
    published: list[Published | None] = [None, None]
    # status is what an operator runs when something is wrong: it still answers
    answer = trusted_answer(dev.paths, dev.disk, dev.config.product)
    if isinstance(answer, str):
        problem = answer
        candidates = []
    else:
        candidates = answer
        for i, s in enumerate(SLOTS):
            rec = journal.slot(s)
            if rec is not None:
                published[i] = find_published(candidates, dev.config, rec.image)
    warnings = list(demo_warnings(dev))
    booted = published[SLOTS.index(st.booted)]
    recalled = None
    if booted is not None and booted.info.recalled:
        recalled = booted.info.withdrawn
        assert recalled is not None
        warnings.append(
            f"slot {st.booted} runs {booted.info.product} {booted.info.version}, which the "
            f"publisher recalled at {recalled.time}: recalled: {recalled.reason}; the next "
            "update goes back"
        )
    elif booted is not None and (w := withdrawn_warning(st.booted, artifact_fields(booted.info))):
        warnings.append(w)
    outlook = None
    running = journal.slot(st.booted)
    if problem is None and running is not None:
        try:
            seed = load_seed(dev.paths)
        except LocalError as e:
            warnings.append(e.message)
            seed = None
        facts = DeviceFacts(
            dev.config.product,
            dev.config.hardware,
            Installed(running.version, running.image),
            seed=seed,
            now=now,
        )
        outlook = rollout_outlook(candidates, facts)
    return Status(
        dev.config,
        st,
        journal,
        tuple(dev.demo_keys()),
        tuple(warnings),
        busy,
        (published[0], published[1]),
        problem,
        outlook,
        recalled,
    )


@dataclass(frozen=True)
class DriftReport:
    slot: Slot
    version: ImageVersion
    expected: ImageRef
    found_sha256: str
    warnings: tuple[str, ...] = field(default=())
    #: the slot's file (as resolved), and the signed target its image was published as
    path: str = ""
    published: Published | None = None

    @property
    def ok(self) -> bool:
        return self.expected.sha256 == self.found_sha256

    @property
    def explain(self) -> str | None:
        """On drift, the command that shows what changed (None when the slot is intact)."""
        if self.ok or self.published is None:
            return None
        return explain_command(self.path, self.published)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "path": self.path,
            "version": str(self.version),
            "expected": self.expected.to_dict(),
            "found_sha256": self.found_sha256,
            "ok": self.ok,
            "published": None if self.published is None else self.published.to_dict(),
            "explain": self.explain,
            "warnings": list(self.warnings),
        }


def verify_installed(dev: Device) -> DriftReport:
    """Re-hash the booted slot against the signed image hash of its version (offline)."""
    from verifier.tuf.client import trusted_candidates

    warnings = tuple(warn_demo_keys(dev))
    st = dev.boot.read()
    rec = dev.journal().slot(st.booted)
    if rec is None:
        raise ConfigError(f"the journal does not know which version slot {st.booted} holds")
    path = dev.slot_path(st.booted)
    candidates = trusted_candidates(dev.paths, dev.config.product)
    signed = [
        c.info.image
        for c in candidates
        if c.info.supports(dev.config.product, dev.config.hardware)
        and c.info.version == rec.version
    ]
    if not signed:
        raise MetadataError(
            f"version {rec.version} of {dev.config.product!r} for {dev.config.hardware!r} is "
            f"not in the trusted targets metadata; expected it to be signed",
            hint="run 'otakit-device update' to refresh metadata, or the version was unpublished",
        )
    expected = signed[0]
    if any(img != expected for img in signed):
        raise MetadataError(f"signed targets disagree on the image of version {rec.version}")
    found = hash_slot(path, expected.length)
    published = find_published(candidates, dev.config, expected)
    if published is not None and (
        w := withdrawn_warning(st.booted, artifact_fields(published.info))
    ):
        warnings = (*warnings, w)
    return DriftReport(
        st.booted, rec.version, expected, found.sha256, warnings, str(path), published
    )
