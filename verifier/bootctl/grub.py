"""A/B boot through GRUB's environment block, edited with the real ``grub-editenv``.

GRUB script has no arithmetic, so the try counter is a string of ``x`` characters
(``otakit_tries=xxx`` is three tries): the snippet in ``docs/boot/grub.cfg`` removes one ``x``
with ``regexp`` on every trial boot and saves the block; an empty string means the tries are
spent and GRUB boots ``otakit_primary`` again and clears the trial. The counter is bounded by
``MAX_TRIES`` so the three variables stay far below the block's 1024 bytes.

Variables (the snippet reads exactly these; a test parses the snippet to keep it so):

* ``otakit_primary`` — ``a`` or ``b``: the committed slot, booted when no trial is pending;
* ``otakit_trial`` — ``a``, ``b`` or empty: the slot on trial;
* ``otakit_tries`` — ``x`` repeated once per boot attempt left.

The booted slot comes from the kernel command line (``otakit.slot=``), which the snippet sets.

Writes are made atomic although ``grub-editenv`` rewrites its file in place: the tool edits a
copy next to the block, and the copy is synced and renamed over the block through ``Disk``.
GRUB finds the block by name at every boot, so a renamed file is as good as the old one, and
a power cut leaves either the old or the new block, never a torn one. The tool's own write
of the copy is the one effect that does not pass through ``Disk`` (harmless: the copy is not
the block until the rename). GRUB's ``save_env`` at boot writes in place; that is GRUB's part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import ClassVar

from verifier.bootctl.base import (
    MAX_TRIES,
    BootState,
    Change,
    Slot,
    TranslatingBootControl,
    env_primary,
    parse_slot,
)
from verifier.bootctl.cmdline import PROC_CMDLINE, booted_slot
from verifier.bootctl.external import parse_assignments, run_tool
from verifier.bootctl.options import DEFAULT_TIMEOUT, check_options, timeout_option
from verifier.effects import Disk
from verifier.errors import BootControlError

#: The variables the grub.cfg snippet reads and this backend writes; nothing else.
VARIABLES: tuple[str, ...] = ("otakit_primary", "otakit_trial", "otakit_tries")
TRY_MARK = "x"
ENVBLK_SIZE = 1024
DEFAULT_ENVFILE = Path("/boot/grub/grubenv")
ENVBLK_HEADER = b"# GRUB Environment Block\n"
_TRIES_RE = re.compile(rf"^{TRY_MARK}{{0,{MAX_TRIES}}}$")


def encode(st: BootState) -> dict[str, str]:
    """The GRUB variables that make the bootloader act on ``st``."""
    return {
        "otakit_primary": st.primary,
        "otakit_trial": st.trial or "",
        "otakit_tries": TRY_MARK * st.tries_left if st.trial else "",
    }


def decode(env: dict[str, str], booted: Slot, where: str) -> BootState:
    """Read the state back from the variables; anything unexpected is an error, not a guess."""
    primary = env_primary(
        env,
        f"GRUB environment {where}",
        "initialise it once: grub-editenv FILE set otakit_primary=a otakit_trial= "
        "otakit_tries= (see docs/OPERATIONS.md, 'Boot backends')",
    )
    raw_trial = env.get("otakit_trial", "")
    trial = parse_slot(raw_trial, f"GRUB environment {where} otakit_trial") if raw_trial else None
    tries = env.get("otakit_tries", "")
    if not _TRIES_RE.match(tries):
        raise BootControlError(
            f"GRUB environment {where} otakit_tries: expected 0..{MAX_TRIES} "
            f"'{TRY_MARK}' characters, found {tries!r}"
        )
    return BootState(booted, primary, trial, len(tries) if trial else 0)


@dataclass(frozen=True)
class GrubBootControl(TranslatingBootControl):
    name: ClassVar[str] = "grub"

    envfile: Path
    disk: Disk
    _: KW_ONLY
    cmdline: Path = PROC_CMDLINE
    editenv: str = "grub-editenv"
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(
        cls, options: Mapping[str, str], disk: Disk, state_dir: Path
    ) -> GrubBootControl:
        """Device configuration options: ``envfile`` (default /boot/grub/grubenv),
        ``cmdline`` (default /proc/cmdline), ``editenv`` (program), ``timeout`` (seconds)."""
        check_options(options, "grub")
        return cls(
            Path(options.get("envfile", str(DEFAULT_ENVFILE))),
            disk,
            cmdline=Path(options.get("cmdline", str(PROC_CMDLINE))),
            editenv=options.get("editenv", "grub-editenv"),
            timeout=timeout_option(options),
        )

    def create(self, primary: Slot) -> GrubBootControl:
        """Create (or reset) the block with ``primary`` committed and no trial."""
        self._replace(None, encode(BootState(primary, primary, None, 0)))
        return self

    def _check_block(self) -> bytes:
        # grub-editenv lists a missing file as empty; never mistake that for a state.
        try:
            data = self.envfile.read_bytes()
        except OSError as e:
            raise BootControlError(f"cannot read GRUB environment {self.envfile}: {e}") from e
        if len(data) != ENVBLK_SIZE or not data.startswith(ENVBLK_HEADER):
            raise BootControlError(
                f"GRUB environment {self.envfile}: expected a {ENVBLK_SIZE}-byte block starting "
                f"with {ENVBLK_HEADER!r}, found {len(data)} bytes starting with {data[:25]!r}"
            )
        return data

    def variables(self) -> dict[str, str]:
        self._check_block()
        out = run_tool(
            [self.editenv, str(self.envfile), "list"],
            timeout=self.timeout,
            what=f"read GRUB environment {self.envfile}",
        )
        return parse_assignments(out)

    def read(self) -> BootState:
        return decode(self.variables(), booted_slot(self.cmdline), str(self.envfile))

    def _replace(self, current: bytes | None, values: dict[str, str]) -> None:
        """Edit a copy with grub-editenv, then sync and rename it over the block."""
        tmp = self.envfile.with_name(f".{self.envfile.name}.otakit-tmp")
        self.disk.unlink(tmp)
        if current is None:
            run_tool(
                [self.editenv, str(tmp), "create"],
                timeout=self.timeout,
                what=f"create GRUB environment {tmp}",
            )
        else:
            h = self.disk.open_write(tmp, new=True)
            try:
                h.pwrite(current, 0)
            finally:
                h.close()
        run_tool(
            [self.editenv, str(tmp), "set", *(f"{k}={v}" for k, v in values.items())],
            timeout=self.timeout,
            what=f"write GRUB environment {tmp}",
        )
        size = tmp.stat().st_size
        if size != ENVBLK_SIZE:
            raise BootControlError(
                f"GRUB environment {tmp}: expected {ENVBLK_SIZE} bytes after grub-editenv, "
                f"found {size} (too many variables?)"
            )
        h = self.disk.open_write(tmp, new=False)
        try:
            h.fsync()
        finally:
            h.close()
        self.disk.rename(tmp, self.envfile)
        self.disk.fsync_dir(self.envfile.parent)

    def apply(self, change: Change) -> None:
        self._replace(self._check_block(), encode(change.new))
