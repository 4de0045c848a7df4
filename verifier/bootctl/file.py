"""A JSON boot state for containers, tests and the demo, written through ``Disk``.

``boot()`` plays the bootloader's part (consume a try, fall back to primary) so a test or the
demo can "reboot" the simulated device.
"""

from __future__ import annotations

import json
from pathlib import Path

from verifier.bootctl.base import BootState, Slot, check_tries, other, parse_slot
from verifier.effects import Disk, write_atomic
from verifier.errors import BootControlError


class FileBootControl:
    name = "file"

    def __init__(self, path: Path, disk: Disk) -> None:
        self.path = path
        self.disk = disk

    @classmethod
    def create(cls, path: Path, disk: Disk, booted: Slot) -> FileBootControl:
        bc = cls(path, disk)
        bc._write(BootState(booted=booted, primary=booted, trial=None, tries_left=0))
        return bc

    def read(self) -> BootState:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError as e:
            raise BootControlError(f"boot state {self.path} does not exist") from e
        except (OSError, ValueError) as e:
            raise BootControlError(f"boot state {self.path} is unreadable: {e}") from e
        if not isinstance(raw, dict):
            raise BootControlError(f"boot state {self.path}: expected an object")
        trial = raw.get("trial")
        tries = raw.get("tries_left")
        if not isinstance(tries, int) or tries < 0:
            raise BootControlError(
                f"boot state tries_left: expected an integer >= 0, found {tries!r}"
            )
        return BootState(
            booted=parse_slot(raw.get("booted"), "booted"),
            primary=parse_slot(raw.get("primary"), "primary"),
            trial=None if trial is None else parse_slot(trial, "trial"),
            tries_left=tries,
        )

    def _write(self, st: BootState) -> None:
        data = {
            "booted": st.booted,
            "primary": st.primary,
            "trial": st.trial,
            "tries_left": st.tries_left,
        }
        write_atomic(self.disk, self.path, json.dumps(data, indent=2).encode() + b"\n")

    def set_trial(self, slot: Slot, tries: int) -> None:
        st = self.read()
        if slot == st.booted:
            raise BootControlError(f"refusing to set a trial on the booted slot {slot}")
        self._write(BootState(st.booted, st.primary, slot, check_tries(tries)))

    def mark_good(self, slot: Slot) -> None:
        st = self.read()
        if slot != st.booted:
            raise BootControlError(
                f"mark-good: only the booted slot can be committed; booted is {st.booted}, "
                f"asked {slot}"
            )
        self._write(BootState(st.booted, slot, None, 0))

    def mark_bad(self, slot: Slot) -> None:
        st = self.read()
        primary = st.primary if slot != st.primary else other(slot)
        self._write(
            BootState(
                st.booted,
                primary,
                None if st.trial == slot else st.trial,
                0 if st.trial == slot else st.tries_left,
            )
        )

    def boot(self) -> BootState:
        """Simulate a reboot: take one try of a pending trial, else boot primary."""
        st = self.read()
        if st.trial is not None and st.tries_left > 0:
            new = BootState(st.trial, st.primary, st.trial, st.tries_left - 1)
        else:
            new = BootState(st.primary, st.primary, None, 0)
        self._write(new)
        return new
