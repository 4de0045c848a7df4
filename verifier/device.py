"""The device as a value (state directory, configuration, Disk, boot control) and the
operations around an update: init, status, trial bookkeeping, mark-good / mark-bad /
rollback, and the drift check.

Trial bookkeeping (issue 4, invariant I4): every operation first ``reconcile``s the journal
with what the bootloader reports. A pending trial whose tries ran out (the bootloader is back
on the primary slot) becomes a recorded failure of that image hash, so ``update`` does not
install the same image again in a loop; a committed trial clears the pending entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from verifier.artifact import ImageRef, ImageVersion
from verifier.bootctl.base import SLOTS, BootControl, BootState, Slot, other
from verifier.bootctl.factory import file_boot_path, make_boot_control
from verifier.effects import Disk, write_atomic
from verifier.errors import (
    ConfigError,
    ImageHashMismatchError,
    LocalError,
    MetadataError,
    NothingToDoError,
    SlotError,
)
from verifier.state import (
    DeviceConfig,
    Failure,
    Journal,
    Pending,
    SlotRecord,
    StatePaths,
    load_config,
    load_journal,
    save_config,
    save_journal,
    timestamp,
)

log = logging.getLogger("otakit.device")


@dataclass(frozen=True)
class Device:
    paths: StatePaths
    config: DeviceConfig
    disk: Disk
    boot: BootControl

    @classmethod
    def open(cls, state_dir: Path, disk: Disk, *, boot: BootControl | None = None) -> Device:
        paths = StatePaths(state_dir)
        config = load_config(paths)
        if boot is None:
            boot = make_boot_control(config.boot_backend, config.options, disk, state_dir)
        return cls(paths, config, disk, boot)

    def journal(self) -> Journal:
        return load_journal(self.paths)

    def save(self, journal: Journal) -> None:
        save_journal(self.disk, self.paths, journal)


# --- init ------------------------------------------------------------------------------------


def init_device(
    state_dir: Path,
    disk: Disk,
    config: DeviceConfig,
    *,
    root: bytes,
    installed_version: ImageVersion,
) -> Device:
    """Pin the trust root, record slot a (booted) as holding ``installed_version``.

    The configuration is written last: a state directory with a config is complete.
    """
    paths = StatePaths(state_dir)
    if paths.config.exists():
        raise ConfigError(
            f"{state_dir} is already initialized",
            hint="use a new state directory, or remove this one to start over",
        )
    disk.mkdir(state_dir)
    disk.mkdir(paths.metadata)
    disk.mkdir(paths.staging)
    write_atomic(disk, paths.pinned_root, root)
    image = hash_slot(config.slot_a, None)
    journal = Journal(slots=(SlotRecord(installed_version, image), None))
    save_journal(disk, paths, journal)
    if config.boot_backend == "file":
        from verifier.bootctl.file import FileBootControl

        boot: BootControl = FileBootControl.create(
            file_boot_path(config.options, state_dir), disk, "a"
        )
    else:
        boot = make_boot_control(config.boot_backend, config.options, disk, state_dir)
        boot.read()
    save_config(disk, paths, config)
    log.info("init: slot a holds version %s (sha256 %s)", installed_version, image.sha256)
    return Device(paths, config, disk, boot)


def hash_slot(path: Path, length: int | None) -> ImageRef:
    """sha256 of the first ``length`` bytes of a slot (all of it when None), read afresh."""
    digest = hashlib.sha256()
    done = 0
    try:
        with path.open("rb") as f:
            while length is None or done < length:
                want = 1 << 20 if length is None else min(1 << 20, length - done)
                block = f.read(want)
                if not block:
                    break
                digest.update(block)
                done += len(block)
    except OSError as e:
        raise SlotError(f"cannot read slot {path}: {e.strerror}") from e
    if length is not None and done != length:
        raise ImageHashMismatchError(f"slot {path}: expected at least {length} bytes, found {done}")
    if done == 0:
        raise SlotError(f"slot {path} is empty")
    return ImageRef(done, digest.hexdigest())


# --- trial bookkeeping -----------------------------------------------------------------------


def reconcile(dev: Device, now: datetime) -> tuple[Journal, BootState]:
    """Bring the journal in line with the boot state; persist it if it changed."""
    journal = dev.journal()
    st = dev.boot.read()
    new = reconcile_journal(journal, st, now)
    if new != journal:
        if new.pending is None and journal.pending is not None:
            failed = new.last_failure
            if failed is not None and failed != journal.last_failure:
                log.warning("trial failed: %s", failed.reason)
                if st.trial == failed.slot:
                    dev.boot.mark_bad(failed.slot)
                    st = dev.boot.read()
            else:
                log.info("trial of slot %s committed", journal.pending.slot)
        dev.save(new)
    return new, st


def reconcile_journal(journal: Journal, st: BootState, now: datetime) -> Journal:
    """Pure: the journal after taking the boot state into account."""
    p = journal.pending
    if p is None:
        return journal
    if not p.armed:
        if st.trial != p.slot and st.booted != p.slot:
            return journal  # the boot pointer never moved; update will finish the job
        p = replace(p, armed=True)
        journal = replace(journal, pending=p)
    if st.booted == p.slot and st.primary == p.slot:
        return replace(journal, pending=None).with_slot(p.slot, p.record)
    if st.trial == p.slot and (st.tries_left > 0 or st.booted == p.slot):
        return journal
    if st.booted == p.slot:
        why = f"slot {p.slot} was marked bad while running it"
    else:
        why = f"its tries ran out and the device booted slot {st.booted} again"
    failure = Failure(
        version=p.record.version,
        sha256=p.record.image.sha256,
        slot=p.slot,
        reason=f"trial boot of version {p.record.version} on slot {p.slot} was not "
        f"confirmed: {why}",
        at=timestamp(now),
    )
    return replace(journal, pending=None).with_failure(failure)


# --- operator commands -----------------------------------------------------------------------


def mark_good(dev: Device, now: datetime) -> str:
    """Commit the running trial slot (called by the health check after a successful boot)."""
    journal, st = reconcile(dev, now)
    if not st.in_trial:
        raise NothingToDoError(f"slot {st.booted} is already committed; nothing to mark good")
    dev.boot.mark_good(st.booted)
    record = journal.pending.record if journal.pending else journal.slot(st.booted)
    journal = replace(journal, pending=None)
    if record is not None:
        journal = journal.with_slot(st.booted, record)
    dev.save(journal)
    log.info("mark-good: slot %s committed", st.booted)
    return f"slot {st.booted} committed" + (f" (version {record.version})" if record else "")


def mark_bad(dev: Device, slot: Slot, now: datetime, *, reason: str = "marked bad") -> str:
    journal, st = reconcile(dev, now)
    if slot == st.booted and not st.in_trial:
        raise SlotError(
            f"slot {slot} is the running, committed slot; marking it bad would leave no "
            f"known-good slot to boot",
        )
    dev.boot.mark_bad(slot)
    p = journal.pending
    if p is not None and p.slot == slot:
        journal = replace(journal, pending=None).with_failure(
            Failure(
                p.record.version,
                p.record.image.sha256,
                slot,
                f"{reason} by operator (version {p.record.version} on slot {slot})",
                timestamp(now),
            )
        )
        dev.save(journal)
    log.info("mark-bad: slot %s", slot)
    return f"slot {slot} marked bad; next boot: slot {dev.boot.read().primary}"


def rollback(dev: Device, now: datetime) -> str:
    """Go back: abandon a running or pending trial, or trial-boot the other slot."""
    journal, st = reconcile(dev, now)
    if st.in_trial:
        return mark_bad(dev, st.booted, now, reason="rolled back")
    if st.trial is not None:
        return mark_bad(dev, st.trial, now, reason="cancelled")
    target = other(st.booted)
    rec = journal.slot(target)
    if rec is None or rec.image.sha256 in journal.failed_hashes:
        raise SlotError(
            f"rollback: slot {target} holds no known-good image "
            f"({'unknown content' if rec is None else f'version {rec.version} failed'})"
        )
    journal = replace(journal, pending=Pending(target, rec, armed=False))
    dev.save(journal)
    dev.boot.set_trial(target, dev.config.tries)
    dev.save(replace(journal, pending=Pending(target, rec, armed=True)))
    log.info("rollback: next boot tries slot %s (version %s)", target, rec.version)
    return (
        f"next boot tries slot {target} (version {rec.version}); run mark-good there to commit it"
    )


def clear_failures(dev: Device, now: datetime) -> str:
    """Operator: forget failed images so the newest may be tried again."""
    journal, _ = reconcile(dev, now)
    if not journal.failures:
        raise NothingToDoError("no failed images are recorded")
    dev.save(replace(journal, failures=()))
    versions = ", ".join(str(f.version) for f in journal.failures)
    log.info("clear-failed: forgot failed images %s", versions)
    return f"forgot failed images ({versions}); the next update may install them again"


@contextlib.contextmanager
def device_lock(state_dir: Path) -> Iterator[None]:
    """One otakit-device at a time per state directory (a timer and an operator may race).

    The lock file carries no state, so it is created directly rather than through a Disk.
    """
    try:
        fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        yield  # not initialized: the command itself reports that
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise LocalError(
                f"another otakit-device is working on {state_dir}; expected to be alone",
                hint="wait for it to finish and retry",
            ) from e
        yield
    finally:
        os.close(fd)


# --- status and drift check ------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    config: DeviceConfig
    boot: BootState
    journal: Journal

    def to_dict(self) -> dict[str, Any]:
        slots: dict[str, Any] = {}
        for s in SLOTS:
            rec = self.journal.slot(s)
            slots[s] = {
                "path": str(self.config.slot_path(s)),
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
            "booted": self.boot.booted,
            "primary": self.boot.primary,
            "trial": self.boot.trial,
            "tries_left": self.boot.tries_left,
            "in_trial": self.boot.in_trial,
            "slots": slots,
            "pending": None if p is None else p.to_dict(),
            "last_failure": None if last is None else last.to_dict(),
            "failed_images": [f.to_dict() for f in self.journal.failures],
        }


def status(dev: Device, now: datetime) -> Status:
    journal, st = reconcile(dev, now)
    return Status(dev.config, st, journal)


@dataclass(frozen=True)
class DriftReport:
    slot: Slot
    version: ImageVersion
    expected: ImageRef
    found_sha256: str

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
        }


def verify_installed(dev: Device) -> DriftReport:
    """Re-hash the booted slot against the signed image hash of its version (offline)."""
    from verifier.tuf.client import trusted_candidates

    st = dev.boot.read()
    rec = dev.journal().slot(st.booted)
    if rec is None:
        raise ConfigError(f"the journal does not know which version slot {st.booted} holds")
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
    found = hash_slot(dev.config.slot_path(st.booted), expected.length)
    return DriftReport(st.booted, rec.version, expected, found.sha256)
