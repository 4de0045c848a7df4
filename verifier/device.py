"""The device as a value (state directory, configuration, Disk, boot control), ``init``, and
the shell that runs the trial bookkeeping of ``verifier.transitions``.

Every command first ``reconcile``s the journal with what the bootloader reports, persists
that, then asks the pure transition for the command what to do and applies its effects in
order through the journal file and the boot control. Nothing here decides a transition.

Paths: slot paths are absolute (``DeviceConfig`` refuses others) and resolved at init; what
they resolved to is recorded, and ``Device.slot_path`` re-checks it on every use
(``preflight.check_slot_paths``). The state directory itself must not be a symlink: the
pinned root and the journal would move with the link. Symlinks further up its path (``/var``
on some systems) are the system's layout and are accepted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from verifier import transitions
from verifier.artifact import ImageRef, ImageVersion
from verifier.bootctl.base import BootControl, BootState, Slot
from verifier.bootctl.factory import file_boot_path, make_boot_control
from verifier.demokeys import DEMO_KEY_WARNING, demo_keys_among
from verifier.effects import Disk, check_private_dir, write_atomic
from verifier.errors import (
    ConfigError,
    DeviceBusyError,
    ImageHashMismatchError,
    OtakitError,
    SlotError,
    UsageError,
)
from verifier.hashing import hash_path
from verifier.locking import exclusive_lock, lock_holder
from verifier.preflight import check_slot_paths
from verifier.state import (
    DeviceConfig,
    Journal,
    SlotRecord,
    StatePaths,
    ensure_seed,
    load_config,
    load_journal,
    save_config,
    save_journal,
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
        _check_state_dir(state_dir, ConfigError)
        paths = StatePaths(state_dir)
        config = load_config(paths)
        if boot is None:
            boot = make_boot_control(config.boot_backend, config.options, disk, state_dir)
        return cls(paths, config, disk, boot)

    def journal(self) -> Journal:
        return load_journal(self.paths)

    def save(self, journal: Journal) -> None:
        save_journal(self.disk, self.paths, journal)

    def slot_paths(self) -> tuple[Path, Path]:
        """Slots a and b as they resolve now; raises ``SlotError`` if that is not where they
        resolved at init (or they are one file, or inside the state directory)."""
        return check_slot_paths(
            (self.config.slot_a, self.config.slot_b), self.paths.root, self.config.slot_targets
        )

    def slot_path(self, slot: Slot) -> Path:
        """The checked, resolved file of ``slot``: the path to open for reading or writing."""
        a, b = self.slot_paths()
        return a if slot == "a" else b

    def demo_keys(self) -> list[str]:
        """The public demo key ids the pinned root trusts for any role (see ``demo_warnings``)."""
        try:
            return demo_keys_in_root(self.paths.pinned_root.read_bytes())
        except OSError:
            return []


# --- init ------------------------------------------------------------------------------------


def init_device(
    state_dir: Path,
    disk: Disk,
    config: DeviceConfig,
    *,
    root: bytes,
    installed_version: ImageVersion,
    token: Callable[[int], bytes] = secrets.token_bytes,
) -> Device:
    """Pin the trust root, record slot a (booted) as holding ``installed_version``, and make
    the device's rollout seed from ``token`` (the randomness, passed in).

    Every check comes before the first write; the configuration is written last: a state
    directory with a config is complete.
    """
    _check_state_dir(state_dir, UsageError)
    paths = StatePaths(state_dir)
    if paths.config.exists():
        raise ConfigError(
            f"{state_dir} is already initialized",
            hint="use a new state directory, or remove this one to start over",
        )
    real = check_slot_paths((config.slot_a, config.slot_b), state_dir, None, alias_error=UsageError)
    config = replace(config, slot_targets=real)
    image = hash_slot(real[0], None)
    disk.mkdir(state_dir)
    disk.mkdir(paths.metadata)
    disk.mkdir(paths.staging)
    write_atomic(disk, paths.pinned_root, root)
    ensure_seed(disk, paths, token)
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
    dev = Device(paths, config, disk, boot)
    warn_demo_keys(dev)
    return dev


def _check_state_dir(state_dir: Path, error: type[OtakitError]) -> None:
    """The state directory and those the device made in it must be private (issue 9): a
    symlink, or a directory someone else may write, would let a planted link redirect the
    device's writes. ``error``: ``UsageError`` at init, ``ConfigError`` afterwards."""
    if state_dir.is_symlink():
        raise error(
            f"state directory {state_dir} is a symlink; expected a real directory (the pinned "
            f"root and the journal would follow the link wherever it is pointed next)",
            hint=f"use the directory itself: --state {state_dir.resolve()}",
        )
    paths = StatePaths(state_dir)
    for d in (state_dir, paths.metadata, paths.metadata / "root", paths.staging):
        check_private_dir(d, error)


def hash_slot(path: Path, length: int | None) -> ImageRef:
    """sha256 of the first ``length`` bytes of a slot (all of it when None), read afresh."""
    try:
        found = hash_path(path, length=length)
    except OSError as e:
        raise SlotError(f"cannot read slot {path}: {e.strerror}") from e
    if length is not None and found.length != length:
        raise ImageHashMismatchError(
            f"slot {path}: expected at least {length} bytes, found {found.length}"
        )
    if found.length == 0:
        raise SlotError(f"slot {path} is empty")
    return ImageRef(found.length, found.sha256)


# --- demo keys ---------------------------------------------------------------------------------


def demo_keys_in_root(root: bytes) -> list[str]:
    """Demo key ids listed by any role of a root (unparseable: none found, TUF refuses it)."""
    try:
        roles = json.loads(root)["signed"]["roles"]
        keyids = [k for r in roles.values() for k in r["keyids"] if isinstance(k, str)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    return demo_keys_among(keyids)


def demo_warnings(dev: Device) -> list[str]:
    """The warning to show when the pinned root trusts public demo keys (else none).

    The pinned root, not the newest one: a root rotation signed by demo keys could have been
    signed by anybody, so a device pinned to them stays compromised whatever it trusts now.
    """
    if not dev.demo_keys():
        return []
    return [f"the trusted root {dev.paths.pinned_root} {DEMO_KEY_WARNING}"]


def warn_demo_keys(dev: Device) -> list[str]:
    """``demo_warnings``, logged: every command that verifies with the root calls this."""
    warnings = demo_warnings(dev)
    for w in warnings:
        log.warning("%s", w)
    return warnings


# --- trial bookkeeping: the shell around verifier.transitions ---------------------------------


def apply_step(dev: Device, step: transitions.Step) -> transitions.Step:
    """Carry out a step's effects, in order (each one durable before the next)."""
    for effect in step.effects:
        if isinstance(effect, transitions.SaveJournal):
            dev.save(effect.journal)
        elif isinstance(effect, transitions.BootMarkGood):
            dev.boot.mark_good(effect.slot)
        elif isinstance(effect, transitions.BootMarkBad):
            dev.boot.mark_bad(effect.slot)
        else:
            dev.boot.set_trial(effect.slot, effect.tries)
    return step


def reconcile(dev: Device, now: datetime) -> tuple[Journal, BootState]:
    """Bring the journal in line with the boot state; persist it if it changed."""
    step = transitions.reconcile(dev.journal(), dev.boot.read(), now)
    if step.message:
        (log.warning if step.warning else log.info)("%s", step.message)
    apply_step(dev, step)
    return step.journal, step.boot


def _command(dev: Device, name: str, step: transitions.Step) -> str:
    apply_step(dev, step)
    log.info("%s: %s", name, step.message)
    return step.message


def mark_good(dev: Device, now: datetime) -> str:
    """Commit the running trial slot (called by the health check after a successful boot)."""
    journal, st = reconcile(dev, now)
    return _command(dev, "mark-good", transitions.mark_good(journal, st))


def mark_bad(dev: Device, slot: Slot, now: datetime) -> str:
    journal, st = reconcile(dev, now)
    return _command(dev, "mark-bad", transitions.mark_bad(journal, st, slot, now))


def rollback(dev: Device, now: datetime) -> str:
    """Go back: abandon a running or pending trial, or trial-boot the other slot."""
    journal, st = reconcile(dev, now)
    return _command(dev, "rollback", transitions.rollback(journal, st, dev.config.tries, now))


def clear_failures(dev: Device, now: datetime) -> str:
    """Operator: forget failed images so the newest may be tried again."""
    journal, st = reconcile(dev, now)
    return _command(dev, "clear-failed", transitions.clear_failures(journal, st))


#: how long a command waits for another one to finish before it is refused as busy
LOCK_WAIT_S = 2.0


@contextlib.contextmanager
def device_lock(state_dir: Path, purpose: str = "", *, wait: float = LOCK_WAIT_S) -> Iterator[None]:
    """One otakit-device at a time per state directory (a timer and an operator may race).

    ``purpose`` (the command) goes into the lock file for ``status`` and the busy error.
    A command waits ``wait`` seconds at most (long enough for a ``status`` probe or a
    command finishing, never behind a stalled update) and is then refused as busy.
    No lock before init (there is no directory to hold it): the command reports that itself.
    """
    if not state_dir.is_dir():
        yield
        return
    with exclusive_lock(
        lock_path(state_dir),
        holder="another otakit-device",
        busy=DeviceBusyError,
        cannot_open=ConfigError,
        purpose=purpose,
        wait=wait,
    ):
        yield


def lock_path(state_dir: Path) -> Path:
    return state_dir / ".lock"


def update_in_progress(state_dir: Path) -> str | None:
    """Who holds the device lock now ("pid 123, update"), without waiting for it."""
    return lock_holder(lock_path(state_dir))
