"""The simulated disk itself: it must lose exactly what a real file system may lose."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.simdisk import FAULT_KINDS, Fault, PowerCut, SimDisk, applies
from verifier.effects import RealDisk, copy_stream, write_atomic
from verifier.errors import StorageError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_write_atomic_survives_a_cut_at_every_effect(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    clean = SimDisk(tmp_path)
    write_atomic(clean, target, b"new")
    n = clean.count
    assert [e.op for e in clean.effects] == ["open_write", "pwrite", "fsync", "rename", "fsync_dir"]
    seen = set()
    for k in range(n + 1):
        target.write_bytes(b"old")
        for p in tmp_path.glob(".*"):
            p.unlink()
        disk = SimDisk(tmp_path, crash_after=k)
        try:
            write_atomic(disk, target, b"new")
        except PowerCut:
            assert k < n
        disk.reboot()
        seen.add(target.read_bytes())
        assert _tree(tmp_path) == {"state.json": target.read_bytes()}  # no temp file survives
    assert seen == {b"old", b"new"}


def test_unsynced_data_is_lost(tmp_path: Path) -> None:
    f = tmp_path / "slot"
    f.write_bytes(b"A" * 8)
    disk = SimDisk(tmp_path)
    h = disk.open_write(f, new=False)
    h.pwrite(b"BB", 0)
    h.fsync()
    h.pwrite(b"CC", 2)
    h.close()
    assert f.read_bytes() == b"BBCCAAAA"  # the running system sees everything
    disk.reboot()
    assert f.read_bytes() == b"BBAAAAAA"  # the rebooted one only what was synced


def test_truncate_without_fsync_is_undone(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"data")
    disk = SimDisk(tmp_path)
    disk.open_write(f, new=False, truncate=True).close()
    assert f.read_bytes() == b""
    disk.reboot()
    assert f.read_bytes() == b"data"


def test_rename_needs_fsync_of_the_directory(tmp_path: Path) -> None:
    disk = SimDisk(tmp_path)
    h = disk.open_write(tmp_path / "a.tmp", new=True)
    h.pwrite(b"x", 0)
    h.fsync()
    h.close()
    disk.fsync_dir(tmp_path)
    disk.rename(tmp_path / "a.tmp", tmp_path / "a")
    disk.reboot()
    assert _tree(tmp_path) == {"a.tmp": b"x"}


def test_new_file_without_fsync_dir_vanishes(tmp_path: Path) -> None:
    disk = SimDisk(tmp_path)
    h = disk.open_write(tmp_path / "new", new=True)
    h.pwrite(b"x", 0)
    h.fsync()
    h.close()
    disk.reboot()
    assert _tree(tmp_path) == {}


def test_renamed_but_never_synced_file_is_empty(tmp_path: Path) -> None:
    """The classic ext4 zero-length file: directory entry durable, data not."""
    disk = SimDisk(tmp_path)
    h = disk.open_write(tmp_path / "f.tmp", new=True)
    h.pwrite(b"content", 0)
    h.close()
    disk.rename(tmp_path / "f.tmp", tmp_path / "f")
    disk.fsync_dir(tmp_path)
    disk.reboot()
    assert _tree(tmp_path) == {"f": b""}


def test_unlink_needs_fsync_of_the_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    disk = SimDisk(tmp_path)
    disk.unlink(tmp_path / "f")
    assert not (tmp_path / "f").exists()
    disk.reboot()
    assert _tree(tmp_path) == {"f": b"x"}
    disk.unlink(tmp_path / "f")
    disk.fsync_dir(tmp_path)
    disk.reboot()
    assert _tree(tmp_path) == {}


def test_directory_contents_vanish_with_an_unsynced_directory(tmp_path: Path) -> None:
    disk = SimDisk(tmp_path)
    disk.mkdir(tmp_path / "d" / "e")
    write_atomic(disk, tmp_path / "d" / "e" / "f", b"x")  # syncs e, not d nor root
    disk.reboot()
    assert list(tmp_path.iterdir()) == []
    disk.mkdir(tmp_path / "d" / "e")
    write_atomic(disk, tmp_path / "d" / "e" / "f", b"x")
    disk.fsync_dir(tmp_path / "d")
    disk.fsync_dir(tmp_path)
    disk.reboot()
    assert _tree(tmp_path) == {"d/e/f": b"x"}


def test_writes_behind_the_disks_back_are_lost(tmp_path: Path) -> None:
    (tmp_path / "kept").write_bytes(b"1")
    disk = SimDisk(tmp_path)
    (tmp_path / "kept").write_bytes(b"changed without Disk")
    (tmp_path / "stray").write_bytes(b"2")
    disk.reboot()
    assert _tree(tmp_path) == {"kept": b"1"}


def test_power_stays_off_until_reboot(tmp_path: Path) -> None:
    disk = SimDisk(tmp_path, crash_after=1)
    h = disk.open_write(tmp_path / "f", new=True)
    with pytest.raises(PowerCut):
        h.pwrite(b"x", 0)
    with pytest.raises(PowerCut):
        disk.fsync_dir(tmp_path)
    h.close()  # closing after the cut works (finally blocks)
    assert disk.count == 1
    disk.reboot()
    disk.mkdir(tmp_path / "d")  # and after reboot everything works again
    assert disk.count == 1


def test_powercut_is_not_an_exception(tmp_path: Path) -> None:
    assert not issubclass(PowerCut, Exception)


def test_paths_outside_root_are_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    disk = SimDisk(tmp_path / "in")
    with pytest.raises(AssertionError, match="outside its root"):
        disk.open_write(tmp_path / "out", new=True)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_faults_raise_the_real_disks_error(tmp_path: Path, kind: str) -> None:
    op = {"short_write": "pwrite", "rename_fail": "rename"}.get(kind, "pwrite")
    (tmp_path / "f").write_bytes(b"")
    disk = SimDisk(tmp_path, fault=Fault(2, kind))  # type: ignore[arg-type]
    h = disk.open_write(tmp_path / "f", new=False, truncate=True)
    try:
        with pytest.raises(StorageError) as e:
            if op == "pwrite":
                h.pwrite(b"abcd", 0)
            else:
                disk.rename(tmp_path / "f", tmp_path / "g")
    finally:
        h.close()
    assert disk.fault_fired
    assert str(tmp_path / ("f" if op == "pwrite" else "g")) in e.value.message
    if kind == "enospc":
        assert "ENOSPC" in e.value.message and e.value.hint and "free space" in e.value.hint
    if kind == "short_write":
        assert (tmp_path / "f").read_bytes() == b"ab"  # half written, then no space


def test_fault_kinds_apply_to_the_right_primitives() -> None:
    assert applies("short_write", "pwrite") and not applies("short_write", "fsync")
    assert applies("rename_fail", "rename") and not applies("rename_fail", "unlink")
    assert applies("eio", "fsync_dir") and applies("enospc", "mkdir")


def test_a_clean_run_matches_the_real_disk(tmp_path: Path) -> None:
    def work(disk: RealDisk | SimDisk, root: Path) -> None:
        disk.mkdir(root / "s" / "t")
        write_atomic(disk, root / "s" / "j.json", b"{}")
        (root / "src").write_bytes(b"z" * 5000)
        with (root / "src").open("rb") as f:
            copy_stream(disk, f, root / "s" / "t" / "copy", chunk=1000)
        disk.rename(root / "s" / "t" / "copy", root / "s" / "t" / "moved")
        disk.unlink(root / "s" / "j.json")

    (tmp_path / "real").mkdir()
    (tmp_path / "sim").mkdir()
    work(RealDisk(), tmp_path / "real")
    sim = SimDisk(tmp_path / "sim")
    work(sim, tmp_path / "sim")
    assert _tree(tmp_path / "real") == _tree(tmp_path / "sim")
    assert sim.count == 1 + 5 + 1 + 5 + 1 + 1 + 1  # mkdir, atomic, open+5 writes+fsync, mv, rm
