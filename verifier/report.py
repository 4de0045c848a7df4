"""What a device reports about itself: ``status`` and the offline drift check.

``status`` never writes and never waits: it runs without the device lock (an update may
hold it for hours), reads the journal and configuration (both replaced atomically, so a read
sees a whole old or a whole new file), and shows the journal reconciled with the boot state
in memory; the next command that holds the lock persists that. It says when another command
holds the lock (``device.update_in_progress``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from verifier import transitions
from verifier.artifact import ImageRef, ImageVersion
from verifier.bootctl.base import SLOTS, BootState, Slot
from verifier.device import (
    Device,
    demo_warnings,
    hash_slot,
    update_in_progress,
    warn_demo_keys,
)
from verifier.errors import ConfigError, MetadataError
from verifier.state import DeviceConfig, Journal


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
            "warnings": list(self.warnings),
            "in_progress": self.in_progress,
            "retry": None if self.journal.retry is None else self.journal.retry.to_dict(),
        }


def status(dev: Device, now: datetime) -> Status:
    busy = update_in_progress(dev.paths.root)
    step = transitions.reconcile(dev.journal(), dev.boot.read(), now)
    return Status(
        dev.config,
        step.boot,
        step.journal,
        tuple(dev.demo_keys()),
        tuple(demo_warnings(dev)),
        busy,
    )


@dataclass(frozen=True)
class DriftReport:
    slot: Slot
    version: ImageVersion
    expected: ImageRef
    found_sha256: str
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.expected.sha256 == self.found_sha256

    def to_dict(self) -> dict[str, Any]:
        return {
            "slot": self.slot,
            "version": str(self.version),
            "expected": self.expected.to_dict(),
            "found_sha256": self.found_sha256,
            "ok": self.ok,
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
    signed = [
        c.info.image
        for c in trusted_candidates(dev.paths)
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
    return DriftReport(st.booted, rec.version, expected, found.sha256, warnings)
