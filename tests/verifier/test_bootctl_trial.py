"""Trial boot end to end through the update pipeline, with every boot backend and its
bootloader simulated (GRUB snippet, U-Boot bootcount + shipped bootcmd, the example handler):
a health check that never confirms ends on the old slot, recorded, and is not retried; one that
confirms commits the new slot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers_bootctl import (
    DOCS_BOOT,
    grub_boot,
    require_tool,
    uboot_boot,
    uboot_setup,
    write_cmdline,
)
from tests.helpers_crash import Scenario, make_scenario, publish_full, sha
from tests.verifier.conftest import NOW
from verifier.artifact import ImageVersion
from verifier.bootctl.base import BootControl, BootState, Slot, after_boot
from verifier.bootctl.command import CommandBootControl
from verifier.bootctl.file import FileBootControl
from verifier.bootctl.grub import GrubBootControl
from verifier.bootctl.uboot import UBootBootControl
from verifier.device import Device, mark_good, rollback
from verifier.effects import RealDisk
from verifier.errors import NothingToDoError
from verifier.report import status
from verifier.state import load_journal
from verifier.update import UpdateOptions, UpdateResult, update


@dataclass
class Rig:
    s: Scenario
    bc: BootControl
    reboot: Callable[[], object]

    def device(self) -> Device:
        return Device.open(self.s.work / "state", RealDisk(), boot=self.bc)

    def update(self) -> UpdateResult:
        options = UpdateOptions(mountinfo=self.s.work / "mountinfo")
        return update(self.device(), NOW, options=options, fetcher=self.s.sim)

    def booted(self) -> Slot:
        self.reboot()
        return self.bc.read().booted


def _command_boot(bc: CommandBootControl, state: Path, cmdline: Path) -> None:
    st = after_boot(bc.read())
    (state / "primary").write_text(st.primary + "\n")
    (state / "trial").write_text((st.trial or "") + "\n")
    (state / "tries").write_text(f"{st.tries_left}\n")
    write_cmdline(cmdline, st.booted)


@pytest.fixture(params=["file", "grub", "uboot", "command"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Rig:
    s = make_scenario(tmp_path, "full", publish_full)
    cmdline = tmp_path / "cmdline"
    write_cmdline(cmdline, "a")
    name = request.param
    if name == "file":
        fb = FileBootControl(s.work / "state" / "boot.json", RealDisk())
        return Rig(s, fb, fb.boot)
    if name == "grub":
        require_tool("grub-editenv")
        env = tmp_path / "grubenv"
        gb = GrubBootControl(env, RealDisk(), cmdline=cmdline).create("a")
        return Rig(s, gb, lambda: grub_boot(env, cmdline))
    if name == "uboot":
        require_tool("fw_setenv")
        (tmp_path / "ub").mkdir()
        config = uboot_setup(tmp_path / "ub")
        ub = UBootBootControl(config, cmdline=cmdline)
        return Rig(s, ub, lambda: uboot_boot(config, cmdline))
    state = tmp_path / "handler-state"
    state.mkdir()
    (state / "primary").write_text("a\n")
    cb = CommandBootControl(
        ["sh", str(DOCS_BOOT / "bootctl-handler.sh"), str(state)], cmdline=cmdline
    )
    return Rig(s, cb, lambda: _command_boot(cb, state, cmdline))


def test_health_check_never_confirming_rolls_back_and_does_not_loop(rig: Rig) -> None:
    r = rig.update()
    assert (r.slot, r.tries) == ("b", 3)
    assert rig.bc.read() == BootState("a", "a", "b", 3)
    assert [rig.booted() for _ in range(5)] == ["b", "b", "b", "a", "a"]
    with pytest.raises(NothingToDoError, match="failed its trial"):
        rig.update()
    failure = load_journal(rig.device().paths).last_failure
    assert failure is not None and failure.sha256 == sha(rig.s.v2)
    assert "tries ran out and the device booted slot a again" in failure.reason
    st = status(rig.device(), NOW).to_dict()
    assert "tries ran out" in str(st)
    assert rig.bc.read() == BootState("a", "a", None, 0)
    assert (rig.s.work / "slot-a.img").read_bytes() == rig.s.v1


def test_health_check_confirming_commits(rig: Rig) -> None:
    rig.update()
    assert rig.booted() == "b"
    assert rig.bc.read().in_trial
    mark_good(rig.device(), NOW)
    assert rig.bc.read() == BootState("b", "b", None, 0)
    assert [rig.booted() for _ in range(4)] == ["b"] * 4
    with pytest.raises(NothingToDoError):
        rig.update()
    slot_b = load_journal(rig.device().paths).slot("b")
    assert slot_b is not None and slot_b.version == ImageVersion.parse("2.0")


def test_operator_rollback_of_a_running_trial(rig: Rig) -> None:
    rig.update()
    assert rig.booted() == "b"
    rollback(rig.device(), NOW)
    assert rig.booted() == "a"
    assert rig.bc.read() == BootState("a", "a", None, 0)
