"""UBootBootControl against the real fw_printenv/fw_setenv on a file-backed redundant
environment, U-Boot's boot counter simulated around the shipped bootcmd/altbootcmd."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers_bootctl import (
    DOCS_BOOT,
    UBOOT_ENV_SIZE,
    require_tool,
    uboot_boot,
    uboot_copies,
    uboot_copy_state,
    uboot_image,
    uboot_printenv,
    uboot_setup,
    write_cmdline,
)
from verifier.bootctl.base import BootState
from verifier.bootctl.uboot import VARIABLES, UBootBootControl, encode
from verifier.errors import BootControlError

pytestmark = pytest.mark.integration


@pytest.fixture
def uboot(tmp_path: Path) -> UBootBootControl:
    require_tool("fw_setenv")
    require_tool("fw_printenv")
    config = uboot_setup(tmp_path)
    cmdline = tmp_path / "cmdline"
    write_cmdline(cmdline, "a")
    return UBootBootControl(config, cmdline=cmdline)


def _boot(bc: UBootBootControl) -> BootState:
    assert bc.config is not None
    uboot_boot(bc.config, bc.cmdline)
    return bc.read()


def _newest_copy(config: Path) -> Path:
    states = {p: uboot_copy_state(p) for p in uboot_copies(config)}
    assert all(valid for valid, _ in states.values())
    a, b = states
    fa, fb = states[a][1], states[b][1]
    # incremental flags; the newer copy is one ahead of the older one, modulo 256
    return a if (fa - fb) % 256 == 1 else b


# --- the shipped environment and the backend agree --------------------------------------------


def test_shipped_environment_uses_our_variables() -> None:
    text = (DOCS_BOOT / "uboot-env.txt").read_text()
    env = dict(line.split("=", 1) for line in text.splitlines())
    assert {"bootcmd", "altbootcmd", "bootlimit", "bootcount"} <= set(env)
    assert set(encode(BootState("a", "a", "b", 3))) == set(VARIABLES)
    scripts = " ".join(env.values())
    for name in ("otakit_primary", "otakit_trial", "upgrade_available"):
        assert "${" + name + "}" in scripts
    assert "otakit.slot=${otakit_slot}" in env["otakit_args"]
    # altbootcmd must end the trial and persist that, or a failed image boots in a loop
    assert re.search(r"setenv upgrade_available 0;.*saveenv", env["altbootcmd"])


def test_initialised_environment_reads_as_committed(uboot: UBootBootControl) -> None:
    assert uboot.read() == BootState("a", "a", None, 0)


def test_set_trial_sets_bootcount_semantics(uboot: UBootBootControl) -> None:
    uboot.set_trial("b", 3)
    env = uboot.variables()
    assert {k: env.get(k) for k in VARIABLES} == {
        "otakit_primary": "a",
        "otakit_trial": "b",
        "upgrade_available": "1",
        "bootcount": "0",
        "bootlimit": "3",
    }
    assert uboot.read() == BootState("a", "a", "b", 3)


def test_trial_boot_then_commit(uboot: UBootBootControl) -> None:
    uboot.set_trial("b", 3)
    st = _boot(uboot)
    assert st == BootState("b", "a", "b", 2) and st.in_trial
    uboot.mark_good("b")
    assert uboot.read() == BootState("b", "b", None, 0)
    assert uboot.variables()["upgrade_available"] == "0"
    for _ in range(3):  # committed: no counting, no fallback
        assert _boot(uboot) == BootState("b", "b", None, 0)


def test_never_confirmed_trial_rolls_back_once_and_does_not_loop(uboot: UBootBootControl) -> None:
    uboot.set_trial("b", 3)
    booted = [_boot(uboot).booted for _ in range(6)]
    assert booted == ["b", "b", "b", "a", "a", "a"]
    assert uboot.read() == BootState("a", "a", None, 0)
    env = uboot.variables()
    assert env["upgrade_available"] == "0" and env["bootcount"] == "0"


def test_trial_with_one_try(uboot: UBootBootControl) -> None:
    uboot.set_trial("b", 1)
    assert _boot(uboot) == BootState("b", "a", "b", 0)
    assert _boot(uboot) == BootState("a", "a", None, 0)


def test_exhausted_trial_is_never_written_as_bootlimit_zero() -> None:
    env = encode(BootState("b", "a", "b", 0))
    assert env["bootlimit"] == "1" and env["bootcount"] == "1"


def test_mark_bad_of_running_trial_falls_back(uboot: UBootBootControl) -> None:
    uboot.set_trial("b", 3)
    _boot(uboot)
    uboot.mark_bad("b")
    assert uboot.read() == BootState("b", "a", None, 0)
    assert _boot(uboot) == BootState("a", "a", None, 0)


def test_refusals(uboot: UBootBootControl) -> None:
    with pytest.raises(BootControlError, match="booted slot a"):
        uboot.set_trial("a", 2)
    with pytest.raises(BootControlError, match="only the booted slot"):
        uboot.mark_good("b")
    assert uboot.read() == BootState("a", "a", None, 0)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("upgrade_available=yes", "upgrade_available: expected 0 or 1, found 'yes'"),
        ("bootcount=-1", "bootcount: expected a decimal number, found '-1'"),
        ("otakit_primary=c", "otakit_primary: expected 'a' or 'b', found 'c'"),
    ],
)
def test_invalid_variables_are_errors(
    uboot: UBootBootControl, assignment: str, message: str
) -> None:
    uboot.set_trial("b", 3)
    subprocess.run(
        ["fw_setenv", "-c", str(uboot.config), "-s", "-"],
        input=assignment.encode() + b"\n",
        check=True,
    )
    with pytest.raises(BootControlError, match=re.escape(message)):
        uboot.read()


def test_trial_flag_without_trial_slot_is_an_error(uboot: UBootBootControl) -> None:
    subprocess.run(["fw_setenv", "-c", str(uboot.config), "upgrade_available", "1"], check=True)
    with pytest.raises(BootControlError, match="otakit_trial: expected 'a' or 'b', found ''"):
        uboot.read()


# --- redundancy: a torn write of one copy --------------------------------------------------------


def test_a_write_goes_to_the_older_copy(uboot: UBootBootControl) -> None:
    assert uboot.config is not None
    before = _newest_copy(uboot.config)
    uboot.set_trial("b", 3)
    after = _newest_copy(uboot.config)
    assert after != before


def test_torn_write_of_the_newest_copy_falls_back_to_the_other(uboot: UBootBootControl) -> None:
    assert uboot.config is not None
    newest = _newest_copy(uboot.config)
    (older,) = [p for p in uboot_copies(uboot.config) if p != newest]  # the next write's target
    old_bytes = older.read_bytes()
    uboot.set_trial("b", 3)
    assert _newest_copy(uboot.config) == older
    new_bytes = older.read_bytes()
    # power cut half-way through the write: first 512 bytes new, the rest still old
    older.write_bytes(new_bytes[:512] + old_bytes[512:])
    valid, _ = uboot_copy_state(older)
    assert not valid
    assert uboot.read() == BootState("a", "a", None, 0)  # the valid (previous) copy wins
    # and the next write repairs the torn copy
    uboot.set_trial("b", 2)
    assert uboot.read() == BootState("a", "a", "b", 2)
    assert all(uboot_copy_state(p)[0] for p in uboot_copies(uboot.config))


def test_corrupt_crc_of_newest_copy_falls_back(uboot: UBootBootControl) -> None:
    assert uboot.config is not None
    uboot.set_trial("b", 3)
    newest = _newest_copy(uboot.config)
    data = bytearray(newest.read_bytes())
    data[0] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert uboot.read() == BootState("a", "a", None, 0)


def test_both_copies_invalid_is_an_error_not_a_default(uboot: UBootBootControl) -> None:
    assert uboot.config is not None
    for p in uboot_copies(uboot.config):
        p.write_bytes(b"\xff" * UBOOT_ENV_SIZE)
    with pytest.raises(BootControlError, match="fw_printenv exited with status"):
        uboot.read()
    with pytest.raises(BootControlError):
        uboot.set_trial("b", 3)


def test_truncated_copy_fails_closed(uboot: UBootBootControl) -> None:
    """libubootenv 0.3.2 refuses the whole environment when a file-backed copy is shorter than
    the configured size (flash cannot shrink; a file can): an error, never a guessed state."""
    assert uboot.config is not None
    uboot_copies(uboot.config)[1].write_bytes(b"\0" * 100)
    with pytest.raises(BootControlError, match="read U-Boot environment"):
        uboot.read()


def test_an_image_built_to_the_format_is_read_by_the_real_tool(tmp_path: Path) -> None:
    require_tool("fw_printenv")
    copies = [tmp_path / "e0", tmp_path / "e1"]
    copies[0].write_bytes(uboot_image({"otakit_primary": "a", "upgrade_available": "0"}, 7))
    copies[1].write_bytes(
        uboot_image({"otakit_primary": "a", "otakit_trial": "b", "upgrade_available": "1"}, 8)
    )
    config = tmp_path / "fw_env.config"
    config.write_text("".join(f"{c} 0x0 {UBOOT_ENV_SIZE:#x}\n" for c in copies))
    assert uboot_printenv(config)["otakit_trial"] == "b"  # flag 8 is newer than 7
    copies[0].write_bytes(uboot_image({"otakit_primary": "b"}, 9))
    assert uboot_printenv(config) == {"otakit_primary": "b"}


def test_missing_tool_is_a_clear_error(uboot: UBootBootControl) -> None:
    bc = UBootBootControl(uboot.config, cmdline=uboot.cmdline, printenv="/nonexistent/pe")
    with pytest.raises(BootControlError, match="program '/nonexistent/pe' not found"):
        bc.read()
