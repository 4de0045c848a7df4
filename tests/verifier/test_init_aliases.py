"""``init`` refuses a slot b that is an alias of the booted slot a (issue 9): a symlink to it,
a hard link of a file slot, a ``..`` spelling, another device node of the same block device.
One check (``preflight.check_slot_paths``) serves init (UsageError: the operator typed both
paths) and every later command (SlotError); nothing is written before it passes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.verifier.conftest import make_image
from tests.verifier.repo_sim import BASE, RepoSim
from verifier.artifact import ImageVersion
from verifier.device import init_device
from verifier.effects import RealDisk
from verifier.errors import UsageError
from verifier.state import DeviceConfig

ROOT = Path(__file__).resolve().parents[2]


def _init(tmp: Path, a: Path, b: Path) -> None:
    init_device(
        tmp / "state",
        RealDisk(),
        DeviceConfig(BASE, "edge-gw", "rpi4", a, b),
        root=RepoSim().root_bytes,
        installed_version=ImageVersion.parse("1.0"),
    )


def _symlink(tmp: Path, a: Path) -> Path:
    (tmp / "by-name").mkdir()
    link = tmp / "by-name" / "root-b"
    link.symlink_to(a)
    return link


def _hardlink(tmp: Path, a: Path) -> Path:
    os.link(a, tmp / "hard-a.img")
    return tmp / "hard-a.img"


def _dotdot(tmp: Path, a: Path) -> Path:
    (tmp / "sub").mkdir()
    return tmp / "sub" / ".." / a.name


ALIASES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "symlink": (_symlink, "resolved"),
    "hardlink": (_hardlink, "hard links to one inode"),
    "dotdot": (_dotdot, "resolved"),
}


@pytest.mark.parametrize("kind", sorted(ALIASES))
def test_alias_of_the_booted_slot_is_refused_at_init(tmp_path: Path, kind: str) -> None:
    a = tmp_path / "slot-a.img"
    a.write_bytes(make_image(1))
    make, how = ALIASES[kind]
    b = make(tmp_path, a)
    with pytest.raises(UsageError) as e:
        _init(tmp_path, a, b)
    assert str(a) in e.value.message and str(b) in e.value.message  # both paths named
    assert how in e.value.message
    assert not (tmp_path / "state").exists()  # nothing written


def test_same_block_device_under_two_names_is_refused_at_init(tmp_path: Path) -> None:
    a, b = tmp_path / "sda2", tmp_path / "root-b"
    try:
        for p in (a, b):
            os.mknod(p, stat.S_IFBLK | 0o600, os.makedev(7, 250))
    except PermissionError:
        pytest.skip("creating device nodes needs CAP_MKNOD")
    with pytest.raises(UsageError, match=r"same block device: .* are both device 7:250") as e:
        _init(tmp_path, a, b)
    assert str(a) in e.value.message and str(b) in e.value.message
    assert not (tmp_path / "state").exists()


def test_alias_via_the_cli_exits_2(tmp_path: Path) -> None:
    (tmp_path / "root.json").write_bytes(RepoSim().root_bytes)
    a = tmp_path / "slot-a.img"
    a.write_bytes(make_image(1))
    b = _symlink(tmp_path, a)
    r = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(tmp_path / "state"), "init",
         "--repo-url", BASE, "--root", str(tmp_path / "root.json"), "--product", "edge-gw",
         "--slot-a", str(a), "--slot-b", str(b), "--installed-version", "1.0"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert f"slots a ({a}) and b ({b}) are the same file" in r.stderr
    assert not (tmp_path / "state").exists()
