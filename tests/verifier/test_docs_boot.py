"""The boot-loader setup steps in docs/OPERATIONS.md, run as written on blank environments.

A block the doc marks with ``<!-- tested: NAME -->`` just before a ```` ```sh ```` fence is run
here literally with ``sh -eu``; the only change is that the device paths (the environment's
location on a real board) are replaced with files in a temporary directory. The result is then
read with the real tools and with otakit's own backend, which must see the state ``init``
expects: slot a booted and committed, no trial.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers_bootctl import (
    DOCS_BOOT,
    REPO_ROOT,
    UBOOT_ENV_SIZE,
    grub_boot,
    grub_list,
    require_tool,
    uboot_boot,
    uboot_printenv,
    write_cmdline,
)
from verifier.bootctl.base import BootState
from verifier.bootctl.grub import GrubBootControl
from verifier.bootctl.uboot import UBootBootControl
from verifier.effects import RealDisk

pytestmark = pytest.mark.integration

OPERATIONS = REPO_ROOT / "docs" / "OPERATIONS.md"
COMMITTED_A = BootState("a", "a", None, 0)


def doc_block(name: str) -> str:
    """The ```sh block the doc marks ``<!-- tested: name -->`` (exactly one)."""
    text = OPERATIONS.read_text()
    found = re.findall(
        rf"<!-- tested: {re.escape(name)} -->\n[ \t]*```sh\n(.*?)\n[ \t]*```", text, re.S
    )
    assert len(found) == 1, f"docs/OPERATIONS.md: expected one block marked 'tested: {name}'"
    return "\n".join(line.strip() for line in found[0].splitlines())


def run_block(block: str, cwd: Path, substitute: dict[str, Path]) -> None:
    """Run the doc's commands with only the device paths replaced; every one must appear."""
    for doc_path, test_path in substitute.items():
        assert doc_path in block, f"the tested block no longer names {doc_path}"
        block = block.replace(doc_path, str(test_path))
    r = subprocess.run(["sh", "-eu", "-c", block], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"exit {r.returncode}\n--- script\n{block}\n--- stderr\n{r.stderr}"


# --- U-Boot --------------------------------------------------------------------------------


def _blank(kind: str) -> bytes | None:
    """Erased NOR/NAND flash reads 0xff, a new eMMC or a zeroed file 0x00; None: no file yet."""
    return {"erased": b"\xff" * UBOOT_ENV_SIZE, "zeroed": bytes(UBOOT_ENV_SIZE), "absent": None}[
        kind
    ]


@pytest.fixture
def uboot_board(tmp_path: Path) -> tuple[Path, Path]:
    """A working directory holding uboot-env.txt (as the integrator copies it to the board) and
    an fw_env.config naming two file-backed copies of a redundant environment."""
    require_tool("fw_setenv")
    require_tool("fw_printenv")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(DOCS_BOOT / "uboot-env.txt", work / "uboot-env.txt")
    config = tmp_path / "fw_env.config"
    copies = [tmp_path / "boot" / "uboot.env", tmp_path / "boot" / "uboot-redund.env"]
    copies[0].parent.mkdir()
    config.write_text("".join(f"{c} 0x0 {UBOOT_ENV_SIZE:#x}\n" for c in copies))
    return work, config


def _copies(config: Path) -> dict[str, Path]:
    """The file-backed copies, by the names of example 2 in docs/boot/fw_env.config."""
    boot = config.parent / "boot"
    return {
        "/boot/uboot.env": boot / "uboot.env",
        "/boot/uboot-redund.env": boot / "uboot-redund.env",
    }


def _load_as_documented(work: Path, config: Path) -> None:
    run_block(doc_block("uboot-file-backed"), work, _copies(config))
    run_block(doc_block("uboot-first-load"), work, {"/etc/fw_env.config": config})


def _check_uboot_committed_a(config: Path, tmp_path: Path) -> None:
    env = uboot_printenv(config)
    assert (env["otakit_primary"], env["upgrade_available"], env["bootlimit"]) == ("a", "0", "3")
    assert env.get("otakit_trial", "") == ""
    cmdline = tmp_path / "cmdline"
    write_cmdline(cmdline, "a")
    bc = UBootBootControl(config, cmdline=cmdline)
    assert bc.read() == COMMITTED_A
    # the loaded bootcmd boots slot a, and a trial set by otakit then boots b
    assert uboot_boot(config, cmdline) == "a"
    bc.set_trial("b", 2)
    assert uboot_boot(config, cmdline) == "b"
    assert bc.read() == BootState("b", "a", "b", 1)


@pytest.mark.parametrize("blank", ["erased", "zeroed", "absent"])
def test_uboot_first_load_runs_as_written_on_a_blank_environment(
    uboot_board: tuple[Path, Path], tmp_path: Path, blank: str
) -> None:
    work, config = uboot_board
    content = _blank(blank)
    if content is not None:
        for copy in _copies(config).values():
            copy.write_bytes(content)
    _load_as_documented(work, config)
    _check_uboot_committed_a(config, tmp_path)


def test_uboot_first_load_keeps_an_existing_environment(
    uboot_board: tuple[Path, Path], tmp_path: Path
) -> None:
    """On a board whose U-Boot already saved its own environment the same steps merge the
    otakit variables into it instead of replacing it."""
    work, config = uboot_board
    run_block(doc_block("uboot-file-backed"), work, _copies(config))
    subprocess.run(
        ["fw_setenv", "-c", str(config), "-f", "/dev/null", "board_serial", "X1"], check=True
    )
    assert uboot_printenv(config) == {"board_serial": "X1"}
    _load_as_documented(work, config)
    assert uboot_printenv(config)["board_serial"] == "X1"
    _check_uboot_committed_a(config, tmp_path)


# --- GRUB ----------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["absent", "default-block", "other-variables"])
def test_grub_first_setup_runs_as_written(tmp_path: Path, blank: str) -> None:
    """A fresh install has no grubenv or grub-install's empty block; a used one may hold
    GRUB's own variables (saved_entry), which must survive."""
    require_tool("grub-editenv")
    envfile = tmp_path / "grub" / "grubenv"
    envfile.parent.mkdir()
    if blank != "absent":
        subprocess.run(["grub-editenv", str(envfile), "create"], check=True)
    if blank == "other-variables":
        subprocess.run(["grub-editenv", str(envfile), "set", "saved_entry=otakit"], check=True)
    run_block(doc_block("grub-first-setup"), tmp_path, {"/boot/grub/grubenv": envfile})
    env = grub_list(envfile)
    assert {k: env[k] for k in ("otakit_primary", "otakit_trial", "otakit_tries")} == {
        "otakit_primary": "a",
        "otakit_trial": "",
        "otakit_tries": "",
    }
    assert env.get("saved_entry") == ("otakit" if blank == "other-variables" else None)
    cmdline = tmp_path / "cmdline"
    write_cmdline(cmdline, "a")
    bc = GrubBootControl(envfile, RealDisk(), cmdline=cmdline)
    assert bc.read() == COMMITTED_A
    assert grub_boot(envfile, cmdline) == "a"
