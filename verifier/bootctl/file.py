"""A JSON boot state for containers, tests and the demo, written through ``Disk``.

``boot()`` plays the bootloader's part (consume a try, fall back to primary) so a test or the
demo can "reboot" the simulated device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from verifier.bootctl.base import (
    BootState,
    Change,
    Slot,
    TranslatingBootControl,
    after_boot,
    parse_slot,
)
from verifier.effects import Disk, write_atomic
from verifier.errors import BootControlError


@dataclass(frozen=True)
class FileBootControl(TranslatingBootControl):
    name: ClassVar[str] = "file"

    path: Path
    disk: Disk

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

    def apply(self, change: Change) -> None:
        self._write(change.new)

    def boot(self) -> BootState:
        """Simulate a reboot: take one try of a pending trial, else boot primary."""
        new = after_boot(self.read())
        self._write(new)
        return new
