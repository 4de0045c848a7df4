"""``otakit image diff`` on hostile and broken input: a clear report or a clear error (exit 2
or 5), never a traceback, a hang, or a file written to a path taken from the image."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from repo.errors import ImageFormatError, UsageError
from signer.imagediff.report import diff_images
from tests.cli.helpers_cli import run
from tests.conftest import require
from tests.signer.helpers_image_diff import build


def _tree(root: Path, files: int = 40) -> Path:
    r = random.Random(3)
    for i in range(files):
        d = root / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(r.randbytes(r.randrange(1, 20_000)))
    (root / "inline").write_text("tiny")
    return root


def _assert_clean_failure(args: list[str], code: int, says: str) -> None:
    r = run("otakit", "image", "diff", *args, timeout=60)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert says in r.stderr, r.stderr
    r = run("otakit", "--json", "image", "diff", *args, timeout=60)
    assert r.returncode == code and json.loads(r.stdout)["error"]["code"] == code


def test_a_truncated_ext4_image_is_a_clear_error(tmp_path: Path) -> None:
    img = build("ext4", _tree(tmp_path / "t"), tmp_path / "a.ext4")
    cut = tmp_path / "cut.ext4"
    cut.write_bytes(img.read_bytes()[: 4 << 20])
    with pytest.raises(ImageFormatError, match="truncated"):
        diff_images(str(img), str(cut))
    _assert_clean_failure([str(img), str(cut)], 5, "not a readable ext4 image")


def test_corrupted_ext4_metadata_never_crashes_or_hangs(tmp_path: Path) -> None:
    """Random bytes over the superblock, group descriptors, inode table and directory blocks:
    every run ends, within seconds, in a result or an ImageFormatError."""
    img = build("ext4", _tree(tmp_path / "t"), tmp_path / "a.ext4", size="4M")
    good = img.read_bytes()
    r = random.Random(11)
    bad = tmp_path / "bad.ext4"
    bad.write_bytes(good)
    fd = os.open(bad, os.O_RDWR)
    for trial in range(300):
        # the metadata of a small mkfs image lives in its first MiB
        offsets = [
            r.choice((1024 + r.randrange(256), r.randrange(4096, 1 << 20)))
            for _ in range(r.choice((1, 4, 32)))
        ]
        for off in offsets:
            os.pwrite(fd, bytes([r.randrange(256)]), off)
        t0 = time.monotonic()
        with contextlib.suppress(ImageFormatError):
            diff_images(str(img), str(bad))
        for off in offsets:
            os.pwrite(fd, good[off : off + 1], off)
        assert time.monotonic() - t0 < 10, f"trial {trial} took too long"
    os.close(fd)


def test_a_directory_loop_in_ext4_is_reported_not_followed(tmp_path: Path) -> None:
    img = build("ext4", _tree(tmp_path / "t"), tmp_path / "a.ext4")
    loop = tmp_path / "loop.ext4"
    loop.write_bytes(img.read_bytes())
    debugfs = require("debugfs")
    subprocess.run(  # a hard link from inside d0 back to the root directory
        [debugfs, "-w", "-R", "ln / /d0/up", str(loop)], check=True, capture_output=True
    )
    d = diff_images(str(img), str(loop))
    assert any("/d0/up: directory inode 2 reached twice" in u for u in d.unsafe_b)
    r = run("otakit", "image", "diff", str(img), str(loop))
    assert r.returncode == 0 and "not compared: /d0/up" in r.stderr


def test_symlink_loops_are_recorded_never_followed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for t in (a, b):
        (t / "x").mkdir(parents=True)
        (t / "x/self").symlink_to(".")
    (b / "p").symlink_to("q")
    (b / "q").symlink_to("p")
    (b / "x/up").symlink_to("..")
    for fmt in ("dir", "ext4", "squashfs", "erofs", "tar"):
        d = diff_images(
            str(build(fmt, a, tmp_path / "a.img")), str(build(fmt, b, tmp_path / "b.img"))
        )
        assert d.files is not None
        assert {c.path: c.b.target for c in d.files.changes if c.b} == {
            "/p": "q",
            "/q": "p",
            "/x/up": "..",
        }, fmt


def _crafted_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("./etc/ok", b"fine"),
            ("../../escape", b"owned"),
            ("/etc/absolute", b"owned"),
            ("./a/../../b", b"owned"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./hl")
        link.type, link.linkname = tarfile.LNKTYPE, "../../escape"
        tar.addfile(link)
    return path


def test_escaping_tar_members_are_reported_and_nothing_is_written(tmp_path: Path) -> None:
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    evil = _crafted_tar(work / "evil.tar")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        info = tarfile.TarInfo("./etc/ok")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"fine"))
    before = sorted(p for p in tmp_path.rglob("*"))
    d = diff_images(str(plain), str(evil))
    assert d.files is not None and d.files.changes == ()
    assert len(d.unsafe_b) == 4 and any("'/etc/absolute'" in u for u in d.unsafe_b)
    r = subprocess.run(
        [*_otakit(), "image", "diff", str(plain), str(evil)], cwd=work, capture_output=True
    )
    assert r.returncode == 0 and b"not compared: '../../escape'" in r.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no file appeared anywhere
    assert not Path("/etc/absolute").exists()


def _otakit() -> list[str]:
    from tests.cli.helpers_cli import command

    return command("otakit")


def test_a_corrupt_or_truncated_squashfs_is_a_clear_error(tmp_path: Path) -> None:
    img = build("squashfs", _tree(tmp_path / "t"), tmp_path / "a.sqfs")
    data = img.read_bytes()
    cut = tmp_path / "cut.sqfs"
    cut.write_bytes(data[: len(data) // 2])
    _assert_clean_failure([str(img), str(cut)], 5, "not a readable squashfs image")
    garbled = tmp_path / "garbled.sqfs"
    garbled.write_bytes(data[:96] + random.Random(2).randbytes(len(data) - 96))
    _assert_clean_failure([str(img), str(garbled)], 5, "not a readable squashfs image")


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """tmpfs when there is one: 20,000 small files on a VM's disk take a minute to create."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm) as d:
        yield Path(d)


def test_a_huge_tree_is_read_with_bounded_records(fast_tmp: Path) -> None:
    """20,000 files: 3,000 in one hash-indexed (htree) directory, the rest 1,000 a directory
    (mke2fs -d inserts directory entries one by one, so a 20,000-entry directory takes it a
    minute to build; the reader's cost is per entry either way)."""
    a = fast_tmp / "a"
    for i in range(20_000):
        d = a / ("big" if i < 3000 else f"d{i // 1000}")
        if i % 1000 == 0 or i == 3000:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"file-{i:05d}").write_bytes(b"%d" % i)
    b = fast_tmp / "b"
    (b / "big").mkdir(parents=True)
    t0 = time.monotonic()
    d = diff_images(str(a), str(b))
    assert d.files is not None and d.files.count("removed") == 20_000 + 17
    img = fast_tmp / "a.ext4"
    subprocess.run(
        [require("mkfs.ext4"), "-q", "-F", "-N", "30000", "-d", str(a), str(img), "256M"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run([require("e2fsck"), "-fyD", str(img)], check=False, capture_output=True)
    htree = subprocess.run(
        [require("debugfs"), "-R", "htree /big", str(img)], capture_output=True, text=True
    )
    assert "Root node dump" in htree.stdout, htree.stdout + htree.stderr
    d = diff_images(str(a), str(img))
    assert d.files is not None
    assert {c.path for c in d.files.changes} == {"/lost+found"}
    assert time.monotonic() - t0 < 60


def test_missing_unreadable_and_mismatched_inputs(tmp_path: Path) -> None:
    (tmp_path / "raw").write_bytes(bytes(8192))
    (tmp_path / "dir").mkdir()
    _assert_clean_failure([str(tmp_path / "nowhere"), str(tmp_path / "raw")], 5, "nowhere")
    with pytest.raises(UsageError, match="cannot compare a directory with a raw image"):
        diff_images(str(tmp_path / "dir"), str(tmp_path / "raw"))
    _assert_clean_failure([str(tmp_path / "dir"), str(tmp_path / "raw")], 2, "directory")


def test_an_image_that_is_not_what_its_name_says_is_read_as_what_it_is(tmp_path: Path) -> None:
    """The reader follows the bytes, never the extension: a tar named .ext4 is a tar."""
    t = _tree(tmp_path / "t", files=3)
    as_tar = build("tar", t, tmp_path / "really-a-tar.ext4")
    d = diff_images(str(as_tar), str(t))
    assert d.a.type == "tar" and d.files is not None
    assert os.path.exists(as_tar)


def _crafted_ext4(tmp_path: Path, *commands: str) -> tuple[Path, Path]:
    """An ext4 image of a small tree (a sparse file, a slow symlink, a directory), and a copy
    with ``debugfs -w`` commands applied to it."""
    t = tmp_path / "t"
    (t / "d0").mkdir(parents=True)
    (t / "d0/f").write_text("a file\n")
    (t / "link").symlink_to("x" * 100)  # past 60 bytes: a slow symlink, in a data block
    with (t / "huge.sparse").open("wb") as f:
        f.truncate(100 << 30)  # 100 GiB of holes in a 16 MiB filesystem
        f.seek(5_000_000)
        f.write(b"data")
    img = build("ext4", t, tmp_path / "a.ext4", size="16M")
    crafted = tmp_path / "b.ext4"
    crafted.write_bytes(img.read_bytes())
    for command in commands:
        subprocess.run(
            [require("debugfs"), "-w", "-R", command, str(crafted)], check=True, capture_output=True
        )
    return img, crafted


def test_a_sparse_file_larger_than_the_filesystem_is_reported_not_hashed(tmp_path: Path) -> None:
    """Legal, but hashing 100 GiB of holes is not a diff: reported, compared by metadata."""
    img, _ = _crafted_ext4(tmp_path)
    t0 = time.monotonic()
    d = diff_images(str(img), str(img))
    assert time.monotonic() - t0 < 10
    assert d.files is not None and d.files.changes == ()
    assert d.unsafe_a == (
        "/huge.sparse: content not hashed: a sparse file of 107374182400 bytes is larger "
        "than the filesystem (16777216 bytes)",
    )
    r = run("otakit", "image", "diff", str(img), str(img))
    assert r.returncode == 0 and "not compared: /huge.sparse: content not hashed" in r.stderr


def test_a_symlink_target_past_4_kib_is_reported_not_read(tmp_path: Path) -> None:
    img, crafted = _crafted_ext4(tmp_path, "sif /link size 10000")
    d = diff_images(str(img), str(crafted))
    assert d.files is not None
    [change] = d.files.changes
    assert change.path == "/link" and change.b is not None
    assert change.b.target == "<10000 bytes, not read>"
    assert any("/link: a symlink target of 10000 bytes" in u for u in d.unsafe_b)


def test_a_directory_claiming_more_bytes_than_the_filesystem_is_not_walked(
    tmp_path: Path,
) -> None:
    """A crafted 1 TiB directory: its hole would be read as entries for ever; it is reported
    and the rest of the image is still compared."""
    img, crafted = _crafted_ext4(tmp_path, "sif /d0 size 0x10000000000")
    t0 = time.monotonic()
    d = diff_images(str(img), str(crafted))
    assert time.monotonic() - t0 < 10
    assert d.files is not None
    assert {c.path: c.change for c in d.files.changes} == {"/d0/f": "removed"}
    assert any("/d0: a directory of 1099511627776 bytes" in u for u in d.unsafe_b)
