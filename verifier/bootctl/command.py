"""Boot control through a user-supplied handler program, for bootloaders otakit has no backend
for (in the spirit of RAUC's custom backend).

The handler is an argv prefix (no shell is involved: arguments are never re-parsed), called with
one subcommand at a time:

=============================  ===========================================================
``get-primary``                print ``a`` or ``b``: the committed slot
``get-trial``                  print ``none``, or ``SLOT TRIES_LEFT`` (e.g. ``b 2``)
``set-trial SLOT TRIES``       next boots try SLOT, at most TRIES times, then fall back
``set-state SLOT good``        commit: SLOT becomes primary, the trial ends
``set-state SLOT bad``         SLOT is not booted again: a trial on it ends; if it was
                               primary, the other slot becomes primary
``get-booted``                 print ``a`` or ``b`` (only used when no kernel command line
                               is configured)
=============================  ===========================================================

Exit status 0 means success; anything else is an error whose stderr is shown to the operator.
After every change the state is read back and compared with what the change should have
produced (the transitions in ``base``), so a handler that silently ignores a request is caught
at once instead of at the next boot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import ClassVar

from verifier.bootctl.base import (
    MAX_TRIES,
    BootState,
    Change,
    Slot,
    TranslatingBootControl,
    parse_slot,
)
from verifier.bootctl.cmdline import PROC_CMDLINE, booted_slot
from verifier.bootctl.external import run_tool
from verifier.bootctl.options import DEFAULT_TIMEOUT, check_options, split_command, timeout_option
from verifier.effects import Disk
from verifier.errors import BootControlError


@dataclass(frozen=True)
class CommandBootControl(TranslatingBootControl):
    """``cmdline``: where to find ``otakit.slot=``; None asks the handler (``get-booted``)."""

    name: ClassVar[str] = "command"

    handler: Sequence[str]
    _: KW_ONLY
    cmdline: Path | None = PROC_CMDLINE
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not self.handler:
            raise BootControlError("command boot backend: expected a handler program, found none")
        object.__setattr__(self, "handler", tuple(self.handler))  # a list passed in stays ours

    @classmethod
    def from_options(
        cls, options: Mapping[str, str], disk: Disk, state_dir: Path
    ) -> CommandBootControl:
        """Device configuration options: ``handler`` (required: the program and its leading
        arguments, split like a shell would split them, but never run through a shell),
        ``cmdline`` (default /proc/cmdline; ``none`` asks the handler's ``get-booted``),
        ``timeout`` (seconds). The handler does its own writes, not through ``disk``."""
        check_options(options, "command")
        raw = options.get("cmdline", str(PROC_CMDLINE))
        return cls(
            split_command(options["handler"], "boot backend 'command' option handler"),
            cmdline=None if raw == "none" else Path(raw),
            timeout=timeout_option(options),
        )

    def _call(self, *args: str) -> str:
        return run_tool(
            [*self.handler, *args],
            timeout=self.timeout,
            what=f"boot handler {' '.join(args)}",
        ).strip()

    def _booted(self) -> Slot:
        if self.cmdline is not None:
            return booted_slot(self.cmdline)
        return parse_slot(self._call("get-booted"), "boot handler get-booted")

    def read(self) -> BootState:
        booted = self._booted()
        primary = parse_slot(self._call("get-primary"), "boot handler get-primary")
        raw = self._call("get-trial")
        if raw == "none":
            return BootState(booted, primary, None, 0)
        words = raw.split()
        if len(words) != 2 or not words[1].isdigit() or int(words[1]) > MAX_TRIES:
            raise BootControlError(
                f"boot handler get-trial: expected 'none' or 'SLOT TRIES' with TRIES in "
                f"0..{MAX_TRIES}, found {raw[:80]!r}"
            )
        trial = parse_slot(words[0], "boot handler get-trial")
        return BootState(booted, primary, trial, int(words[1]))

    def apply(self, change: Change) -> None:
        """Ask the handler, then read back: a handler that reports success without applying
        the change is caught now rather than at the next boot."""
        self._call(*change.request)
        got = self.read()
        if got != change.new:
            raise BootControlError(
                f"boot handler {' '.join(change.request)}: expected the state to become "
                f"{change.new}, found {got}",
                hint="the handler reported success but did not apply the change; fix the handler",
            )
