"""Shared helpers for the boot-control tests: real-tool gating, fake kernel command lines and
bootloader simulations that play GRUB's and U-Boot's part on a reboot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from verifier.bootctl.base import Slot

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS_BOOT = REPO_ROOT / "docs" / "boot"


def require_tool(name: str) -> str:
    """Path of a system tool; skip without it, but fail in CI where it must be installed."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but was not found on PATH")
        pytest.skip(f"{name} not installed")
    return path


def write_cmdline(path: Path, slot: Slot) -> None:
    """What the bootloader hands the kernel: the tests' stand-in for /proc/cmdline."""
    path.write_text(f"BOOT_IMAGE=/boot/vmlinuz root=LABEL=rootfs_{slot} ro otakit.slot={slot}\n")


# --- GRUB ------------------------------------------------------------------------------------


def grub_snippet() -> str:
    return (DOCS_BOOT / "grub.cfg").read_text()


def snippet_try_regex(snippet: str) -> str:
    """The regular expression the snippet uses to spend one try (GRUB uses POSIX ERE; this
    pattern means the same in Python's re)."""
    m = re.search(r"regexp --set=1:otakit_tries '([^']+)'", snippet)
    assert m, "the grub.cfg snippet no longer spends tries with regexp --set=1:otakit_tries"
    return m.group(1)


def grub_list(envfile: Path) -> dict[str, str]:
    out = subprocess.run(
        ["grub-editenv", str(envfile), "list"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def grub_boot(envfile: Path, cmdline: Path) -> Slot:
    """Play the grub.cfg snippet's part on a reboot (its logic, its regexp, its save_env)."""
    env = grub_list(envfile)
    primary: Slot = "b" if env.get("otakit_primary") == "b" else "a"
    slot: Slot = primary
    trial = env.get("otakit_trial", "")
    if trial:
        m = re.match(snippet_try_regex(grub_snippet()), env.get("otakit_tries", ""))
        if m:
            assert trial in ("a", "b")
            slot = "a" if trial == "a" else "b"
            tries = m.group(1)
        else:
            trial, tries = "", ""
        # GRUB's save_env rewrites the block in place, as here.
        subprocess.run(
            ["grub-editenv", str(envfile), "set", f"otakit_trial={trial}", f"otakit_tries={tries}"],
            check=True,
        )
    write_cmdline(cmdline, slot)
    return slot
