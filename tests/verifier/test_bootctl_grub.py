"""GrubBootControl against the real grub-editenv, and the grub.cfg snippet it must agree with."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers_bootctl import (
    DOCS_BOOT,
    grub_boot,
    grub_list,
    grub_snippet,
    require_tool,
    snippet_try_regex,
    write_cmdline,
)
from tests.simdisk import PowerCut, SimDisk
from verifier.bootctl.base import BootState
from verifier.bootctl.grub import ENVBLK_SIZE, VARIABLES, GrubBootControl, encode
from verifier.effects import RealDisk
from verifier.errors import BootControlError

pytestmark = pytest.mark.integration

#: Variables of the snippet's own that never go into the environment block.
SNIPPET_LOCALS = {"otakit_slot", "otakit_envfile", "otakit_root"}


@pytest.fixture
def grub(tmp_path: Path) -> GrubBootControl:
    require_tool("grub-editenv")
    cmdline = tmp_path / "cmdline"
    write_cmdline(cmdline, "a")
    return GrubBootControl(tmp_path / "grubenv", RealDisk(), cmdline=cmdline).create("a")


def _boot(bc: GrubBootControl) -> BootState:
    grub_boot(bc.envfile, bc.cmdline)
    return bc.read()


# --- the snippet and the backend agree on the variables ---------------------------------------


def test_snippet_reads_and_saves_exactly_our_variables() -> None:
    snippet = grub_snippet()
    loads = re.findall(r"^\s*load_env\s+--file\s+\S+\s+(.+)$", snippet, re.M)
    saves = re.findall(r"^\s*save_env\s+--file\s+\S+\s+(.+)$", snippet, re.M)
    assert len(loads) == 1 and set(loads[0].split()) == set(VARIABLES)
    assert saves and all(set(s.split()) <= set(VARIABLES) for s in saves)
    used = set(re.findall(r"\botakit_[a-z_]+", snippet)) - SNIPPET_LOCALS
    assert used == set(VARIABLES)
    assert set(encode(BootState("a", "a", "b", 3))) == set(VARIABLES)
    assert "otakit.slot=${otakit_slot}" in snippet


def test_snippet_is_valid_grub_script() -> None:
    tool = require_tool("grub-script-check")
    subprocess.run([tool, str(DOCS_BOOT / "grub.cfg")], check=True)


def test_snippet_regexp_spends_exactly_one_try() -> None:
    pattern = snippet_try_regex(grub_snippet())
    assert re.match(pattern, "xxx").group(1) == "xx"  # type: ignore[union-attr]
    assert re.match(pattern, "x").group(1) == ""  # type: ignore[union-attr]
    assert re.match(pattern, "") is None
    assert re.match(pattern, "xyx") is None


# --- the backend ------------------------------------------------------------------------------


def test_create_then_read(grub: GrubBootControl) -> None:
    assert grub.read() == BootState("a", "a", None, 0)
    assert grub.envfile.stat().st_size == ENVBLK_SIZE
    assert grub_list(grub.envfile) == {
        "otakit_primary": "a",
        "otakit_trial": "",
        "otakit_tries": "",
    }


def test_set_trial_writes_tries_as_marks(grub: GrubBootControl) -> None:
    grub.set_trial("b", 3)
    assert grub_list(grub.envfile) == {
        "otakit_primary": "a",
        "otakit_trial": "b",
        "otakit_tries": "xxx",
    }
    assert grub.read() == BootState("a", "a", "b", 3)


def test_trial_then_commit(grub: GrubBootControl) -> None:
    grub.set_trial("b", 2)
    st = _boot(grub)
    assert st == BootState("b", "a", "b", 1) and st.in_trial
    grub.mark_good("b")
    assert grub.read() == BootState("b", "b", None, 0)
    assert _boot(grub) == BootState("b", "b", None, 0)
    assert _boot(grub).booted == "b"


def test_never_confirmed_trial_rolls_back_after_exactly_n_boots(grub: GrubBootControl) -> None:
    grub.set_trial("b", 3)
    booted = [_boot(grub).booted for _ in range(5)]
    assert booted == ["b", "b", "b", "a", "a"]
    st = grub.read()
    assert st == BootState("a", "a", None, 0)  # rolled back, trial forgotten: no loop


def test_mark_bad_cancels_a_pending_trial(grub: GrubBootControl) -> None:
    grub.set_trial("b", 3)
    grub.mark_bad("b")
    assert grub.read() == BootState("a", "a", None, 0)
    assert _boot(grub).booted == "a"


def test_mark_bad_on_running_trial_falls_back_on_next_boot(grub: GrubBootControl) -> None:
    grub.set_trial("b", 3)
    _boot(grub)
    grub.mark_bad("b")
    assert _boot(grub) == BootState("a", "a", None, 0)


def test_refusals(grub: GrubBootControl) -> None:
    with pytest.raises(BootControlError, match="booted slot a"):
        grub.set_trial("a", 3)
    with pytest.raises(BootControlError, match=r"expected 1\.\.16, found 0"):
        grub.set_trial("b", 0)
    with pytest.raises(BootControlError, match=r"found 17"):
        grub.set_trial("b", 17)
    with pytest.raises(BootControlError, match="only the booted slot"):
        grub.mark_good("b")
    assert grub.read() == BootState("a", "a", None, 0)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("otakit_tries=yyy", "otakit_tries: expected 0..16 'x' characters, found 'yyy'"),
        ("otakit_tries=" + "x" * 17, "otakit_tries: expected 0..16"),
        ("otakit_primary=c", "otakit_primary: expected 'a' or 'b', found 'c'"),
        ("otakit_trial=ab", "otakit_trial: expected 'a' or 'b', found 'ab'"),
    ],
)
def test_invalid_variables_are_errors(grub: GrubBootControl, assignment: str, message: str) -> None:
    subprocess.run(["grub-editenv", str(grub.envfile), "set", assignment], check=True)
    with pytest.raises(BootControlError, match=re.escape(message)):
        grub.read()


def test_uninitialised_block_is_an_error(tmp_path: Path) -> None:
    require_tool("grub-editenv")
    env = tmp_path / "grubenv"
    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    write_cmdline(tmp_path / "cmdline", "a")
    bc = GrubBootControl(env, RealDisk(), cmdline=tmp_path / "cmdline")
    with pytest.raises(BootControlError, match="expected variable otakit_primary, found none"):
        bc.read()


def test_missing_or_damaged_block_is_an_error(grub: GrubBootControl) -> None:
    grub.envfile.write_bytes(b"# GRUB Environment Block\n" + b"#" * 10)
    with pytest.raises(BootControlError, match="expected a 1024-byte block"):
        grub.read()
    grub.envfile.unlink()
    with pytest.raises(BootControlError, match="cannot read GRUB environment"):
        grub.read()


def test_missing_slot_on_cmdline_is_an_error(grub: GrubBootControl) -> None:
    grub.cmdline.write_text("root=/dev/sda2 ro quiet\n")
    with pytest.raises(BootControlError, match=r"expected a parameter otakit\.slot=a"):
        grub.read()


def test_missing_tool_is_a_clear_error(grub: GrubBootControl) -> None:
    bc = GrubBootControl(grub.envfile, RealDisk(), cmdline=grub.cmdline, editenv="/nonexistent/ge")
    with pytest.raises(BootControlError, match="program '/nonexistent/ge' not found"):
        bc.read()


def test_no_temporary_copy_is_left_behind(grub: GrubBootControl) -> None:
    grub.set_trial("b", 3)
    assert sorted(p.name for p in grub.envfile.parent.iterdir()) == ["cmdline", "grubenv"]


def test_a_power_cut_anywhere_leaves_the_old_or_the_new_block(tmp_path: Path) -> None:
    require_tool("grub-editenv")
    boot = tmp_path / "boot"
    boot.mkdir()
    write_cmdline(tmp_path / "cmdline", "a")
    envfile = boot / "grubenv"
    GrubBootControl(envfile, RealDisk(), cmdline=tmp_path / "cmdline").create("a")
    before = envfile.read_bytes()

    clean = SimDisk(boot)
    GrubBootControl(envfile, clean, cmdline=tmp_path / "cmdline").set_trial("b", 3)
    n = clean.count
    assert {e.op for e in clean.effects} >= {"fsync", "rename", "fsync_dir"}

    seen = set()
    for k in range(n + 1):  # n: the power goes out right after the last effect
        for p in boot.iterdir():
            p.unlink()
        envfile.write_bytes(before)
        disk = SimDisk(boot, crash_after=k)
        bc = GrubBootControl(envfile, disk, cmdline=tmp_path / "cmdline")
        try:
            bc.set_trial("b", 3)
        except PowerCut:
            assert k < n
        disk.reboot()
        seen.add(bc.read())
    assert seen == {BootState("a", "a", None, 0), BootState("a", "a", "b", 3)}
