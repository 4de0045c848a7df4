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

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

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


def env_primary(env: Mapping[str, str], where: str, hint: str) -> Slot:
    """``otakit_primary`` from a bootloader environment (GRUB's block, U-Boot's environment).

    A missing one is an error carrying the setup step (``hint``), never a default: guessing the
    committed slot could make the fallback a slot that holds no good image.
    """
    if "otakit_primary" not in env:
        raise BootControlError(f"{where}: expected variable otakit_primary, found none", hint=hint)
    return parse_slot(env["otakit_primary"], f"{where} otakit_primary")


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
    @property
    def name(self) -> str: ...

    def read(self) -> BootState: ...
    def set_trial(self, slot: Slot, tries: int) -> None: ...
    def mark_good(self, slot: Slot) -> None: ...
    def mark_bad(self, slot: Slot) -> None: ...


def check_tries(tries: int) -> int:
    if not (1 <= tries <= MAX_TRIES):
        raise BootControlError(f"trial tries: expected 1..{MAX_TRIES}, found {tries}")
    return tries


# --- the transitions, shared by every backend ----------------------------------------------
# Each backend only translates a BootState to and from its own variables; what set-trial,
# mark-good, mark-bad and a reboot *mean* is decided once, here, as pure functions.


def with_trial(st: BootState, slot: Slot, tries: int) -> BootState:
    """The next boots try ``slot`` ``tries`` times; primary (the fallback) is unchanged."""
    if slot == st.booted:
        raise BootControlError(f"refusing to set a trial on the booted slot {slot}")
    return BootState(st.booted, st.primary, slot, check_tries(tries))


def committed(st: BootState, slot: Slot) -> BootState:
    """mark-good: the running slot becomes primary and any trial ends.

    Only the booted slot can be committed: committing a slot that never came up would turn a
    failed image into the fallback.
    """
    if slot != st.booted:
        raise BootControlError(
            f"mark-good: only the booted slot can be committed; booted is {st.booted}, asked {slot}"
        )
    return BootState(st.booted, slot, None, 0)


def marked_bad(st: BootState, slot: Slot) -> BootState:
    """mark-bad: ``slot`` must not be booted again until a new trial is set on it.

    A trial on it is cancelled; if it was primary, the other slot becomes primary (an operator
    marking the running slot bad asks for the next boot to go to the other one).
    """
    primary = other(slot) if slot == st.primary else st.primary
    if st.trial == slot:
        return BootState(st.booted, primary, None, 0)
    return BootState(st.booted, primary, st.trial, st.tries_left)


def after_boot(st: BootState) -> BootState:
    """What the bootloader does on a reboot: spend one try of a pending trial, else fall back.

    Used by the file backend's ``boot()`` and by the tests' bootloader simulations, so every
    backend is held to the same rules.
    """
    if st.trial is not None and st.tries_left > 0:
        return BootState(st.trial, st.primary, st.trial, st.tries_left - 1)
    return BootState(st.primary, st.primary, None, 0)


@dataclass(frozen=True)
class Change:
    """One requested change: the state it must produce (decided by the functions above) and the
    request as asked, e.g. ``("set-state", "b", "good")`` (the words the command backend hands
    its handler; the others write ``new`` as their own variables)."""

    new: BootState
    request: tuple[str, ...]


class TranslatingBootControl(ABC):
    """A backend that only translates: it reads its variables into a ``BootState`` and makes
    the bootloader act on a ``Change``. What set-trial, mark-good and mark-bad mean is decided
    here, once, from the state read just before."""

    name: ClassVar[str]

    @abstractmethod
    def read(self) -> BootState: ...

    @abstractmethod
    def apply(self, change: Change) -> None: ...

    def set_trial(self, slot: Slot, tries: int) -> None:
        new = with_trial(self.read(), slot, tries)
        self.apply(Change(new, ("set-trial", slot, str(tries))))

    def mark_good(self, slot: Slot) -> None:
        self.apply(Change(committed(self.read(), slot), ("set-state", slot, "good")))

    def mark_bad(self, slot: Slot) -> None:
        self.apply(Change(marked_bad(self.read(), slot), ("set-state", slot, "bad")))
