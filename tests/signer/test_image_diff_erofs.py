"""The erofs reader on real ``mkfs.erofs`` images: the layouts mkfs writes (tail-inline,
plain, chunk-based with holes and shared chunks) read as the tree they were built from, and
broken or crafted images end in a clear report or error. Nothing is extracted: the reader is
our own, never ``fsck.erofs --extract`` (docs/IMAGE-DIFF.md says why)."""

from __future__ import annotations

import contextlib
import os
import random
import struct
import subprocess
import time
from pathlib import Path

import pytest

from repo.errors import ImageFormatError
from signer.imagediff.erofs import ErofsReader
from signer.imagediff.report import diff_images
from tests.cli.helpers_cli import run
from tests.conftest import require


def _mkfs(tree: Path, out: Path, *options: str) -> Path:
    subprocess.run(
        [require("mkfs.erofs"), *options, str(out), str(tree)], check=True, capture_output=True
    )
    return out


def _tree(root: Path, sparse: bool = True) -> Path:
    r = random.Random(4)
    for d in ("etc", "usr/bin", "up", "uq"):
        (root / d).mkdir(parents=True)
    (root / "etc/motd").write_text("welcome\n")
    (root / "usr/bin/tool").write_bytes(r.randbytes(300_000))  # plain blocks + inline tail
    (root / "usr/bin/zero").write_bytes(bytes(200_000))  # identical chunks
    if sparse:
        with (root / "usr/bin/sparse").open("wb") as f:
            f.truncate(40 << 20)
            f.seek(20 << 20)
            f.write(b"data in the middle")
    (root / "usr/bin/sh").symlink_to("dash")
    return root


@pytest.mark.parametrize("options", [(), ("--chunksize=65536",)], ids=["inline", "chunked"])
def test_erofs_layouts_read_like_their_tree(options: tuple[str, ...], tmp_path: Path) -> None:
    tree = _tree(tmp_path / "t")
    img = _mkfs(tree, tmp_path / "a.erofs", *options)
    d = diff_images(str(tree), str(img))
    assert d.b.type == "erofs" and d.files is not None
    assert d.files.changes == () and d.unsafe_b == ()


def test_compressed_erofs_is_refused_clearly(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "text").write_text("compress me " * 20_000)
    img = _mkfs(tree, tmp_path / "z.erofs", "-zlz4")
    with pytest.raises(ImageFormatError, match="compressed; this reader reads uncompressed"):
        diff_images(str(tree), str(img))
    r = run("otakit", "image", "diff", str(img), str(img))
    assert r.returncode == 5 and "Traceback" not in r.stderr


def test_a_truncated_erofs_is_a_clear_error(tmp_path: Path) -> None:
    img = _mkfs(_tree(tmp_path / "t"), tmp_path / "a.erofs")
    cut = tmp_path / "cut.erofs"
    cut.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    with pytest.raises(ImageFormatError, match="truncated"):
        diff_images(str(img), str(cut))


def test_corrupted_erofs_metadata_never_crashes_or_hangs(tmp_path: Path) -> None:
    img = _mkfs(_tree(tmp_path / "t", sparse=False), tmp_path / "a.erofs")
    good = img.read_bytes()
    bad = tmp_path / "bad.erofs"
    bad.write_bytes(good)
    r = random.Random(12)
    fd = os.open(bad, os.O_RDWR)
    for trial in range(300):
        offsets = [r.randrange(1024, min(len(good), 1 << 16)) for _ in range(r.choice((1, 4, 16)))]
        for off in offsets:
            os.pwrite(fd, bytes([r.randrange(256)]), off)
        t0 = time.monotonic()
        with contextlib.suppress(ImageFormatError):
            diff_images(str(img), str(bad))
        for off in offsets:
            os.pwrite(fd, good[off : off + 1], off)
        assert time.monotonic() - t0 < 10, f"trial {trial} took too long"
    os.close(fd)


def _root_dirents(img: Path) -> dict[bytes, int]:
    """Byte offset of each root directory entry (its nid field), by name (white box: the
    crafting below needs to know where mkfs put them)."""
    fd = os.open(img, os.O_RDONLY)
    try:
        reader = ErofsReader(fd, os.fstat(fd).st_size, str(img))
        root = reader.inode(reader.root_nid)
        assert root.layout == 2 and root.size < reader.bs  # one inline block, as mkfs writes
        start = root.meta_end
        block = os.pread(fd, root.size, start)
    finally:
        os.close(fd)
    count = struct.unpack_from("<H", block, 8)[0] // 12
    out = {}
    for i in range(count):
        nameoff = struct.unpack_from("<H", block, 12 * i + 8)[0]
        end = struct.unpack_from("<H", block, 12 * i + 20)[0] if i + 1 < count else len(block)
        out[block[nameoff:end].split(b"\0", 1)[0]] = (start + 12 * i, start + nameoff)
    return {k: v[0] for k, v in out.items()} | {b"@" + k: v[1] for k, v in out.items()}


def test_crafted_erofs_loops_slashes_and_duplicates_are_reported(tmp_path: Path) -> None:
    img = _mkfs(_tree(tmp_path / "t", sparse=False), tmp_path / "a.erofs")
    crafted = tmp_path / "crafted.erofs"
    crafted.write_bytes(img.read_bytes())
    at = _root_dirents(img)
    with crafted.open("r+b") as f:
        root_nid = struct.unpack_from("<H", img.read_bytes(), 1024 + 14)[0]
        f.seek(at[b"up"])
        f.write(struct.pack("<Q", root_nid))  # /up is the root again: a loop
        f.seek(at[b"@uq"])
        f.write(b"up")  # a second entry named "up"
        f.seek(at[b"@etc"])
        f.write(b"e/c")  # a name holding a slash
    before = sorted(tmp_path.rglob("*"))
    d = diff_images(str(img), str(crafted))
    assert any("/up: directory inode" in u and "reached twice" in u for u in d.unsafe_b)
    assert any("a second entry of the same name" in u for u in d.unsafe_b)
    assert any("'/e/c'" in u for u in d.unsafe_b)
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted anywhere
