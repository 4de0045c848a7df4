"""The example systemd units of docs/boot (update timer, file-backend boot, health check)
pass ``systemd-analyze verify``: an integrator can drop them into an image as they are."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require

BOOT = Path(__file__).resolve().parents[2] / "docs" / "boot"
UNITS = sorted([*BOOT.glob("*.service"), *BOOT.glob("*.timer")])
#: the programs the units start, which a build machine does not have at those paths
PROGRAMS = ("/usr/bin/otakit-device", "/usr/lib/otakit/health-check")


def verify(units: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of copies whose programs point at an existing one (verify
    checks that each ExecStart= is executable)."""
    copies = []
    for name, text in units.items():
        for program in PROGRAMS:
            text = text.replace(program, "/bin/true")
        (tmp_path / name).write_text(text)
        copies.append(str(tmp_path / name))
    return subprocess.run([require("systemd-analyze"), "verify", *copies],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_units_are_all_there() -> None:
    names = {u.name for u in UNITS}
    assert {"otakit-update.service", "otakit-update.timer", "otakit-boot.service",
            "otakit-health.service"} <= names  # fmt: skip


def test_the_example_units_verify(tmp_path: Path) -> None:
    r = verify({u.name: u.read_text() for u in UNITS}, tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.parametrize(
    "edit",
    [("OnUnitActiveSec=6h", "OnUnitActiveSec=six hours"), ("Type=oneshot", "Type=oneshoot")],
    ids=["bad-timespan", "bad-service-type"],
)
def test_verify_rejects_a_broken_unit(tmp_path: Path, edit: tuple[str, str]) -> None:
    """The check can fail: a broken copy of the units is refused."""
    units = {u.name: u.read_text().replace(*edit) for u in UNITS}
    r = verify(units, tmp_path)
    assert r.returncode != 0 or r.stderr != "", "systemd-analyze accepted a broken unit"
