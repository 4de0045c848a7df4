"""A device cannot be pointed at the wrong file (issue 7): slot paths are absolute, resolved
at init, and every command that touches a slot refuses when a path now means another file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.verifier.conftest import NOW, World, evolve, make_image
from tests.verifier.repo_sim import BASE, RepoSim
from verifier.artifact import ImageVersion
from verifier.device import Device, init_device
from verifier.effects import RealDisk
from verifier.errors import ConfigError, SlotError, UsageError
from verifier.report import verify_installed
from verifier.state import DeviceConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
V1 = ImageVersion.parse("1.0")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _init(w: World, a: Path, b: Path) -> Device:
    return init_device(
        w.state,
        w.disk,
        DeviceConfig(BASE, "edge-gw", "rpi4", a, b),
        root=w.sim.root_bytes,
        installed_version=V1,
    )


def _world(tmp: Path) -> World:
    w = World(tmp, RepoSim(now=NOW), make_image(1))
    w.mountinfo.write_text("")
    return w


def _publish_v2(w: World) -> bytes:
    v2 = evolve(w.v1, 2)
    w.sim.add_full(v2, "2.0")
    w.sim.publish()
    return v2


# --- relative paths --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["a", "b"])
def test_relative_slot_path_is_refused_with_the_absolute_one_suggested(which: str) -> None:
    a, b = Path("/dev/a"), Path("/dev/b")
    if which == "a":
        a = Path("dev/a.img")
    else:
        b = Path("dev/b.img")
    with pytest.raises(UsageError) as exc:
        DeviceConfig(BASE, "edge-gw", "rpi4", a, b)
    msg = exc.value.message
    assert f"slot {which}: expected an absolute path, found 'dev/{which}.img'" in msg
    assert f"did you mean {Path.cwd() / f'dev/{which}.img'}?" in msg


def test_relative_slot_path_via_the_cli_exits_2_without_traceback(tmp_path: Path) -> None:
    sim = RepoSim()
    (tmp_path / "root.json").write_bytes(sim.root_bytes)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "a.img").write_bytes(make_image(1))
    (tmp_path / "dev" / "b.img").write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(tmp_path / "state"), "init",
         "--repo-url", BASE, "--root", str(tmp_path / "root.json"), "--product", "edge-gw",
         "--slot-a", "dev/a.img", "--slot-b", "dev/b.img", "--installed-version", "1.0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "slot a: expected an absolute path, found 'dev/a.img'" in r.stderr
    assert str(tmp_path / "dev" / "a.img") in r.stderr  # the suggestion
    assert not (tmp_path / "state").exists()


def test_update_from_another_directory_writes_the_recorded_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported defect: a same-named file in the working directory must not be written."""
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    w.slot_b.write_bytes(b"")
    _init(w, w.slot_a, w.slot_b)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / w.slot_b.name).write_bytes(b"decoy")
    monkeypatch.chdir(elsewhere)
    v2 = _publish_v2(w)
    w.update()
    assert w.slot_b.read_bytes() == v2
    assert (elsewhere / w.slot_b.name).read_bytes() == b"decoy"


def test_stored_relative_slot_path_is_refused_on_load(tmp_path: Path) -> None:
    d = DeviceConfig(BASE, "edge-gw", "rpi4", Path("/a"), Path("/b")).to_dict()
    d["slots"]["b"] = "dev/b.img"
    with pytest.raises(ConfigError, match=r"config.slots.b: expected an absolute path"):
        DeviceConfig.from_dict(d)


def test_config_without_recorded_targets_still_loads_and_updates(tmp_path: Path) -> None:
    """Older configurations (no ``slot_targets``) load; the device still checks what it can."""
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    w.slot_b.write_bytes(b"")
    _init(w, w.slot_a, w.slot_b)
    data = json.loads((w.state / "config.json").read_text())
    del data["slot_targets"]
    (w.state / "config.json").write_text(json.dumps(data))
    assert w.device().config.slot_targets is None
    v2 = _publish_v2(w)
    w.update()
    assert w.slot_b.read_bytes() == v2


def test_recorded_targets_round_trip(tmp_path: Path) -> None:
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    w.slot_b.write_bytes(b"")
    _init(w, w.slot_a, w.slot_b)
    config = load_config(w.device().paths)
    assert config.slot_targets == (w.slot_a.resolve(), w.slot_b.resolve())
    assert DeviceConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --- symlinks --------------------------------------------------------------------------------


def _by_name(tmp: Path, w: World) -> tuple[Path, Path, Path, Path]:
    """Slots named like /dev/disk/by-partlabel/root-{a,b}: links to the real 'devices'."""
    dev = tmp / "dev"
    links = tmp / "by-partlabel"
    dev.mkdir()
    links.mkdir()
    real_a, real_b = dev / "sda2", dev / "sda3"
    real_a.write_bytes(w.v1)
    real_b.write_bytes(b"")
    (links / "root-a").symlink_to(real_a)
    (links / "root-b").symlink_to(real_b)
    return links / "root-a", links / "root-b", real_a, real_b


def test_by_name_symlinks_that_keep_their_target_are_fine(tmp_path: Path) -> None:
    w = _world(tmp_path)
    a, b, real_a, real_b = _by_name(tmp_path, w)
    dev = _init(w, a, b)
    assert dev.config.slot_a == a  # the name the operator chose is what is stored
    assert dev.config.slot_targets == (real_a.resolve(), real_b.resolve())
    v2 = _publish_v2(w)
    w.update()
    assert real_b.read_bytes() == v2
    assert real_a.read_bytes() == w.v1


def test_retargeted_slot_link_makes_update_refuse_before_writing(tmp_path: Path) -> None:
    w = _world(tmp_path)
    a, b, real_a, real_b = _by_name(tmp_path, w)
    _init(w, a, b)
    _publish_v2(w)
    other = tmp_path / "dev" / "sdb1"  # e.g. a USB stick that took the name
    other.write_bytes(b"someone else's data")
    b.unlink()
    b.symlink_to(other)
    before = {p: _sha(p) for p in (real_a, real_b, other, w.state / "journal.json")}
    boot = (w.state / "boot.json").read_bytes()
    with pytest.raises(SlotError, match=r"slot b .* now resolves to .*sdb1; at init it resolved"):
        w.update()
    assert {p: _sha(p) for p in before} == before
    assert (w.state / "boot.json").read_bytes() == boot
    assert not any((w.state / "metadata").rglob("*.json")), "trusted metadata was touched"
    assert w.sim.requests == []  # refused before even refreshing


def test_retargeted_booted_slot_makes_verify_installed_refuse(tmp_path: Path) -> None:
    w = _world(tmp_path)
    a, b, _, _ = _by_name(tmp_path, w)
    _init(w, a, b)
    copy = tmp_path / "dev" / "copy"
    copy.write_bytes(w.v1)
    a.unlink()
    a.symlink_to(copy)
    with pytest.raises(SlotError, match=r"slot a .* now resolves to"):
        verify_installed(w.device())


def test_same_file_twice_is_refused_at_init(tmp_path: Path) -> None:
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    link = tmp_path / "also-a"
    link.symlink_to(w.slot_a)
    hard = tmp_path / "hard-a"
    os.link(w.slot_a, hard)
    for b in (link, hard):
        with pytest.raises(UsageError, match="are the same file"):
            _init(w, w.slot_a, b)
    with pytest.raises(ConfigError, match="must differ"):
        _init(w, w.slot_a, w.slot_a)
    assert not w.state.exists()


def test_slot_inside_the_state_directory_is_refused(tmp_path: Path) -> None:
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    w.state.mkdir()
    inside = w.state / "journal.json"
    inside.write_bytes(b"x")
    link = tmp_path / "sneaky"
    link.symlink_to(inside)
    with pytest.raises(SlotError, match="inside the state directory"):
        _init(w, w.slot_a, link)


def test_missing_slot_is_refused_at_init(tmp_path: Path) -> None:
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    with pytest.raises(SlotError, match=r"slot b .* does not exist"):
        _init(w, w.slot_a, tmp_path / "nope")


def test_symlinked_state_directory_is_refused(tmp_path: Path) -> None:
    w = _world(tmp_path)
    w.slot_a.write_bytes(w.v1)
    w.slot_b.write_bytes(b"")
    real = tmp_path / "real-state"
    real.mkdir()
    w.state.symlink_to(real)
    with pytest.raises(UsageError, match=r"state directory .* is a symlink"):
        _init(w, w.slot_a, w.slot_b)
    assert list(real.iterdir()) == []
    w.state.unlink()
    init_device(
        real,
        RealDisk(),
        DeviceConfig(BASE, "edge-gw", "rpi4", w.slot_a, w.slot_b),
        root=w.sim.root_bytes,
        installed_version=V1,
    )
    w.state.symlink_to(real)  # a link put in place later is refused too
    with pytest.raises(ConfigError, match="is a symlink"):
        Device.open(w.state, RealDisk())
