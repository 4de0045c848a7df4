"""A/B boot through the U-Boot environment, with the real ``fw_printenv`` / ``fw_setenv``.

Why U-Boot's own boot counter (``bootcount``/``bootlimit``/``upgrade_available``/``altbootcmd``)
rather than RAUC-style ``BOOT_ORDER``/``BOOT_x_LEFT`` counters kept by a boot script: with
``CONFIG_BOOTCOUNT_LIMIT`` and ``CONFIG_BOOTCOUNT_ENV`` U-Boot counts in C before any script runs,
so the count is spent even when the script, the kernel or the device tree is what fails; it
saves the environment only while ``upgrade_available=1`` (no flash wear on normal boots); it
needs no ``setexpr`` arithmetic in hush; and it is the contract SWUpdate and Mender already use,
so many board configurations have it switched on. Its rule: on every boot with
``upgrade_available=1`` U-Boot increments ``bootcount`` and saves it; when ``bootcount`` exceeds
``bootlimit`` it runs ``altbootcmd`` instead of ``bootcmd``.

Variables (``docs/boot/uboot-env.txt`` holds the matching ``bootcmd``/``altbootcmd``):

* ``otakit_primary`` — ``a`` or ``b``: the committed slot;
* ``otakit_trial`` — the slot on trial, meaningful while ``upgrade_available=1``;
* ``upgrade_available`` — ``1`` while a trial is pending;
* ``bootlimit``, ``bootcount`` — tries left = ``bootlimit - bootcount``.

``altbootcmd`` ends the trial (``upgrade_available=0``, trial cleared) and boots the primary, so
a failed image is not retried in a loop. The booted slot comes from ``otakit.slot=`` on the
kernel command line, which ``bootcmd`` puts into ``bootargs``.

All variables of one change go to ``fw_setenv`` in one script (``-s -``), so they land in one
environment write: libubootenv writes the *other* copy of the redundant environment, fsyncs it,
and only its incremented flag byte makes it current, so a power cut leaves the old or the new
environment. Those writes happen inside the tool, not through ``Disk``.
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

#: The variables this backend writes (``bootlimit`` only while a trial is pending).
VARIABLES: tuple[str, ...] = (
    "otakit_primary",
    "otakit_trial",
    "upgrade_available",
    "bootcount",
    "bootlimit",
)
_COUNT_RE = re.compile(r"^[0-9]{1,9}$")


def _count(env: dict[str, str], name: str, where: str) -> int:
    raw = env.get(name, "0") or "0"
    if not _COUNT_RE.match(raw):
        raise BootControlError(
            f"U-Boot environment {where} {name}: expected a decimal number, found {raw!r}"
        )
    return int(raw)


def decode(env: dict[str, str], booted: Slot, where: str) -> BootState:
    """Read the state back from the variables; an inconsistent environment is an error."""
    primary = env_primary(
        env,
        f"U-Boot environment {where}",
        "load docs/boot/uboot-env.txt into the environment once: fw_setenv -c CONFIG "
        "-f uboot-env.txt -s uboot-env.txt (see docs/OPERATIONS.md, 'Boot backends')",
    )
    upgrade = env.get("upgrade_available", "0") or "0"
    if upgrade not in ("0", "1"):
        raise BootControlError(
            f"U-Boot environment {where} upgrade_available: expected 0 or 1, found {upgrade!r}"
        )
    if upgrade == "0":
        return BootState(booted, primary, None, 0)
    trial = parse_slot(env.get("otakit_trial", ""), f"U-Boot environment {where} otakit_trial")
    left = _count(env, "bootlimit", where) - _count(env, "bootcount", where)
    return BootState(booted, primary, trial, min(max(left, 0), MAX_TRIES))


def encode(st: BootState) -> dict[str, str]:
    """The variables that make U-Boot act on ``st``.

    ``bootlimit=0`` would switch U-Boot's limit off and boot the trial forever, so a trial with
    no try left is written as ``bootlimit=1, bootcount=1``: the next boot exceeds it.
    """
    if st.trial is None:
        return {
            "otakit_primary": st.primary,
            "otakit_trial": "",
            "upgrade_available": "0",
            "bootcount": "0",
        }
    limit = max(st.tries_left, 1)
    return {
        "otakit_primary": st.primary,
        "otakit_trial": st.trial,
        "upgrade_available": "1",
        "bootlimit": str(limit),
        "bootcount": str(limit - st.tries_left),
    }


def setenv_script(values: dict[str, str]) -> bytes:
    """A ``fw_setenv -s`` script: one ``name=value`` per line, an empty value deletes."""
    for name, value in values.items():
        if "\n" in value or "=" in name or not name:
            raise BootControlError(f"cannot write U-Boot variable {name!r}={value!r}")
    return "".join(f"{k}={v}\n" for k, v in values.items()).encode()


@dataclass(frozen=True)
class UBootBootControl(TranslatingBootControl):
    """``config`` is the fw_env.config describing the environment; None: the tools' default
    (/etc/fw_env.config)."""

    name: ClassVar[str] = "uboot"

    config: Path | None = None
    _: KW_ONLY
    cmdline: Path = PROC_CMDLINE
    printenv: str = "fw_printenv"
    setenv: str = "fw_setenv"
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(
        cls, options: Mapping[str, str], disk: Disk, state_dir: Path
    ) -> UBootBootControl:
        """Device configuration options: ``config`` (fw_env.config; default: the tools'
        /etc/fw_env.config), ``cmdline`` (default /proc/cmdline), ``printenv``, ``setenv``
        (programs), ``timeout`` (seconds). The environment is written by fw_setenv, not
        through ``disk``."""
        check_options(options, "uboot")
        return cls(
            Path(options["config"]) if "config" in options else None,
            cmdline=Path(options.get("cmdline", str(PROC_CMDLINE))),
            printenv=options.get("printenv", "fw_printenv"),
            setenv=options.get("setenv", "fw_setenv"),
            timeout=timeout_option(options),
        )

    def _config_args(self) -> list[str]:
        return [] if self.config is None else ["-c", str(self.config)]

    @property
    def _where(self) -> str:
        return str(self.config) if self.config else "(default fw_env.config)"

    def variables(self) -> dict[str, str]:
        out = run_tool(
            [self.printenv, *self._config_args()],
            timeout=self.timeout,
            what=f"read U-Boot environment {self._where}",
        )
        return parse_assignments(out)

    def set_variables(self, values: dict[str, str]) -> None:
        """Write all ``values`` in one environment update (one redundant-copy switch)."""
        run_tool(
            [self.setenv, *self._config_args(), "-s", "-"],
            stdin=setenv_script(values),
            timeout=self.timeout,
            what=f"write U-Boot environment {self._where}",
        )

    def read(self) -> BootState:
        return decode(self.variables(), booted_slot(self.cmdline), self._where)

    def apply(self, change: Change) -> None:
        self.set_variables(encode(change.new))
