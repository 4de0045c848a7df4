"""The boot-control interface and the state it reports.

Semantics (the same for every backend, modelled on RAUC's and U-Boot's bootcount):

* ``primary`` is the slot the bootloader boots when no trial is pending: the committed slot.
* ``set_trial(slot, tries)`` makes the next boots try ``slot``; each boot attempt consumes one
  try; when none are left the bootloader boots ``primary`` again (automatic rollback).
* ``mark_good(slot)`` — called from the running system after its health check — makes the
  booted trial slot primary and clears the trial (commit).
* ``mark_bad(slot)`` makes ``slot`` unbootable: clears any trial on it. Called before the first
  byte is written to a slot (invariant I2) and by an operator.
* ``booted`` is the slot the running system came from. It is never written by an update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from verifier.errors import BootControlError

Slot = Literal["a", "b"]
SLOTS: tuple[Slot, Slot] = ("a", "b")
DEFAULT_TRIES = 3
MAX_TRIES = 16


def other(slot: Slot) -> Slot:
    return "b" if slot == "a" else "a"


def parse_slot(value: object, what: str = "slot") -> Slot:
    if value == "a":
        return "a"
    if value == "b":
        return "b"
    raise BootControlError(f"{what}: expected 'a' or 'b', found {value!r}")


@dataclass(frozen=True)
class BootState:
    booted: Slot
    primary: Slot
    trial: Slot | None
    tries_left: int

    @property
    def inactive(self) -> Slot:
        return other(self.booted)

    @property
    def in_trial(self) -> bool:
        """True when the running system is itself an uncommitted trial."""
        return self.trial is not None and self.booted == self.trial and self.booted != self.primary


class BootControl(Protocol):
    name: str

    def read(self) -> BootState: ...
    def set_trial(self, slot: Slot, tries: int) -> None: ...
    def mark_good(self, slot: Slot) -> None: ...
    def mark_bad(self, slot: Slot) -> None: ...


def check_tries(tries: int) -> int:
    if not (1 <= tries <= MAX_TRIES):
        raise BootControlError(f"trial tries: expected 1..{MAX_TRIES}, found {tries}")
    return tries
