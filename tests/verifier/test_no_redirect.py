"""Files that cannot be redirected (issue 9): every file the device writes is opened with
O_NOFOLLOW (O_EXCL when new), temp files have random names, reused files must be regular
files of ours with one link, and the device's directories are private.

Each attack plants something where the device writes, and asserts the clear error, that the
victim the plant points at is unchanged, and that the booted slot, the boot pointer and the
trusted metadata are unchanged."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from tests.simdisk import SimDisk
from tests.verifier.conftest import World, evolve, make_world
from tests.verifier.repo_sim import BASE, RepoSim
from verifier.artifact import ImageVersion
from verifier.device import Device, device_lock, init_device
from verifier.effects import RealDisk, temp_path, write_atomic
from verifier.errors import ConfigError, OtakitError, RedirectedWriteError, UsageError
from verifier.state import DeviceConfig

VICTIM = b"precious bytes that belong to someone else\n"


def _victim(tmp: Path) -> Path:
    v = tmp / "victim"
    v.write_bytes(VICTIM)
    return v


def _publish_v2(w: World) -> TargetFile:
    tf = w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish()
    # learn the 2.0 metadata first, so the attacked run legitimately changes none of it
    w.sim.targets_offline = True
    with pytest.raises(OtakitError):
        w.update()
    w.sim.targets_offline = False
    return tf


def _part(w: World, tf: TargetFile) -> Path:
    return w.state / "staging" / f"{tf.hashes['sha256']}.part"


def test_symlink_planted_as_the_part_file_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    tf = _publish_v2(w)
    victim = _victim(tmp_path)
    _part(w, tf).symlink_to(victim)
    before = w.snapshot()
    with pytest.raises(
        RedirectedWriteError, match=r"refusing to write .*\.part: .*found a symlink"
    ):
        w.update()
    assert victim.read_bytes() == VICTIM
    assert w.snapshot() == before
    assert _part(w, tf).is_symlink()  # the evidence is kept for the operator


def test_hardlink_planted_as_the_part_file_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    tf = _publish_v2(w)
    victim = _victim(tmp_path)
    os.link(victim, _part(w, tf))
    before = w.snapshot()
    with pytest.raises(RedirectedWriteError, match="found a file with 2 hard links"):
        w.update()
    assert victim.read_bytes() == VICTIM
    assert w.snapshot() == before


def test_symlink_planted_as_the_staged_file_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    tf = _publish_v2(w)
    victim = _victim(tmp_path)
    (w.state / "staging" / tf.hashes["sha256"]).symlink_to(victim)
    before = w.snapshot()
    with pytest.raises(RedirectedWriteError, match="found a symlink"):
        w.update()
    assert victim.read_bytes() == VICTIM
    assert w.snapshot() == before


def test_a_genuine_partial_download_still_resumes(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    tf = _publish_v2(w)
    artifact = w.sim.files[w.sim.target_key(tf.path)]
    _part(w, tf).write_bytes(artifact[:1000])  # ours, one link: reused, not refused
    w.update()
    assert (w.sim.target_key(tf.path), 1000) in w.sim.target_requests()


def test_links_at_the_old_predictable_temp_names_are_never_followed(tmp_path: Path) -> None:
    """``.journal.json.tmp`` & co. were fixed names opened with O_TRUNC and no O_NOFOLLOW:
    a link there made the device write its journal, boot state or trusted metadata into the
    link's target. Temp names are random now; a link at the old name is left alone."""
    w = make_world(tmp_path)
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish()
    victim = _victim(tmp_path)
    meta = w.state / "metadata"
    names = [w.state / f".{n}.tmp" for n in ("journal.json", "boot.json", "config.json")]
    names += [meta / ".current.json.tmp", meta / "root" / ".2.root.json.tmp"]
    names += [
        meta / f".{g}.{r}.json.tmp" for g in (1, 2, 3) for r in ("timestamp", "snapshot", "targets")
    ]
    (meta / "root").mkdir(mode=0o700, exist_ok=True)
    for n in names:
        n.symlink_to(victim)
    w.update()
    assert victim.read_bytes() == VICTIM
    for f in (w.state / "journal.json", w.state / "boot.json", meta / "current.json"):
        assert not f.is_symlink() and f.is_file()
    assert w.boot_control().read().trial == "b"  # the update itself went through


@pytest.mark.parametrize("disk_kind", ["real", "sim"])
def test_write_atomic_refuses_an_entry_at_its_temp_name(tmp_path: Path, disk_kind: str) -> None:
    """Even a planted entry at the (random) temp name is refused, never written through."""
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    victim = _victim(tmp_path)
    target = d / "journal.json"
    target.write_bytes(b"old")
    token = bytes(8)
    temp_path(target, token).symlink_to(victim)
    disk = RealDisk() if disk_kind == "real" else SimDisk(d)
    with pytest.raises(RedirectedWriteError, match="found a symlink"):
        write_atomic(disk, target, b"new", token=token)
    temp_path(target, token).unlink()
    temp_path(target, token).write_bytes(b"stale")  # a regular file there: O_EXCL refuses too
    with pytest.raises(RedirectedWriteError, match="found an existing entry"):
        write_atomic(disk, target, b"new", token=token)
    assert victim.read_bytes() == VICTIM and target.read_bytes() == b"old"
    write_atomic(disk, target, b"new")  # a random name: works
    assert target.read_bytes() == b"new"


def test_symlinked_lock_file_is_refused(world: World, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (world.state / ".lock").unlink(missing_ok=True)
    (world.state / ".lock").symlink_to(victim)
    with (
        pytest.raises(ConfigError, match=r"lock file .*\.lock: is a symlink"),
        device_lock(world.state),
    ):
        pass
    assert victim.read_bytes() == VICTIM  # neither truncated nor given our pid


def test_hardlinked_lock_file_is_refused(world: World, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (world.state / ".lock").unlink(missing_ok=True)
    os.link(victim, world.state / ".lock")
    with (
        pytest.raises(ConfigError, match="found a file with 2 hard links"),
        device_lock(world.state),
    ):
        pass
    assert victim.read_bytes() == VICTIM


def test_file_slot_replaced_by_a_hard_link_is_not_written_through(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish()
    victim = _victim(tmp_path)
    w.slot_b.unlink()
    os.link(victim, w.slot_b)  # same path as recorded at init, another file behind it
    before = w.snapshot()
    with pytest.raises(RedirectedWriteError, match=r"slot-b\.img: .*2 hard links"):
        w.update()
    assert victim.read_bytes() == VICTIM
    snap = w.snapshot()
    assert (snap["booted"], snap["booted_slot"], snap["boot"]) == (
        before["booted"],
        before["booted_slot"],
        before["boot"],
    )


# --- directories ------------------------------------------------------------------------------


def test_directories_the_device_creates_are_private(world: World) -> None:
    for d in (world.state, world.state / "metadata", world.state / "staging"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


@pytest.mark.parametrize("sub", ["staging", "metadata", "."])
def test_group_writable_state_directories_are_refused(tmp_path: Path, sub: str) -> None:
    w = make_world(tmp_path)
    tf = _publish_v2(w)
    d = w.state / sub
    d.chmod(0o770)
    before = w.snapshot()
    with pytest.raises(ConfigError, match=r"writable by group or others") as e:
        w.update()
    assert e.value.hint and "chmod 0700" in e.value.hint
    assert not _part(w, tf).exists()  # nothing was downloaded into it
    assert w.snapshot() == before


def test_symlinked_staging_directory_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (w.state / "staging").rmdir()
    (w.state / "staging").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"staging: expected a real directory .* found a symlink"):
        Device.open(w.state, RealDisk())


def test_init_refuses_a_world_writable_state_directory(tmp_path: Path) -> None:
    sim = RepoSim()
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(b"x" * 4096)
    b.write_bytes(b"")
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(UsageError, match="writable by group or others"):
        init_device(
            state,
            RealDisk(),
            DeviceConfig(BASE, "edge-gw", "rpi4", a, b),
            root=sim.root_bytes,
            installed_version=ImageVersion.parse("1.0"),
        )
    assert list(state.iterdir()) == []


def test_an_empty_partial_file_of_ours_is_replaced_not_refused(tmp_path: Path) -> None:
    """A run killed right after creating its ``.part`` leaves it empty: the rerun starts over
    (found by the kill test: an O_EXCL create over it was refused as a plant)."""
    w = make_world(tmp_path)
    tf = _publish_v2(w)
    _part(w, tf).write_bytes(b"")
    w.update()
    assert w.boot_control().read().trial == "b"
