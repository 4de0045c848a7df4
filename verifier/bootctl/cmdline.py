"""Which slot is running, as told by the bootloader on the kernel command line.

The bootloader is the only party that knows for sure which slot it booted, so the GRUB snippet
and the U-Boot script in ``docs/boot/`` both append ``otakit.slot=a|b`` to the kernel command
line. Trusting a file the running system wrote itself would let a stale state file make the
updater write over the running slot (invariant I1).
"""

from __future__ import annotations

from pathlib import Path

from verifier.bootctl.base import Slot, parse_slot
from verifier.errors import BootControlError

PROC_CMDLINE = Path("/proc/cmdline")
SLOT_PARAMETER = "otakit.slot"
#: /proc/cmdline is at most a few KiB; refuse anything that is obviously not a command line.
_MAX_CMDLINE = 64 * 1024


def booted_slot(cmdline_path: Path = PROC_CMDLINE) -> Slot:
    """Return the slot named by ``otakit.slot=`` on the kernel command line in ``cmdline_path``."""
    try:
        with cmdline_path.open("rb") as f:
            raw = f.read(_MAX_CMDLINE + 1)
    except OSError as e:
        raise BootControlError(f"cannot read the kernel command line {cmdline_path}: {e}") from e
    if len(raw) > _MAX_CMDLINE:
        raise BootControlError(
            f"kernel command line {cmdline_path}: expected at most {_MAX_CMDLINE} bytes"
        )
    return parse_cmdline(raw.decode("utf-8", errors="replace"), str(cmdline_path))


def parse_cmdline(text: str, where: str = "kernel command line") -> Slot:
    """Find exactly one ``otakit.slot=`` parameter; zero or two conflicting ones are errors."""
    prefix = SLOT_PARAMETER + "="
    found = {word[len(prefix) :] for word in text.split() if word.startswith(prefix)}
    if not found:
        raise BootControlError(
            f"{where}: expected a parameter {prefix}a or {prefix}b, found none",
            hint="add it to the kernel command line in the bootloader configuration "
            "(see docs/OPERATIONS.md, 'Boot backends')",
        )
    if len(found) > 1:
        raise BootControlError(f"{where}: expected one {prefix} value, found {sorted(found)}")
    return parse_slot(found.pop(), f"{where} {SLOT_PARAMETER}")
