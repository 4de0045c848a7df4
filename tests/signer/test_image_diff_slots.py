"""``otakit image diff SLOT IMAGE``: a device's slot (a block device, or a raw file standing
for one, larger than the image written into it) against the published image; and the deadline
on every external tool a reader runs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from repo.errors import ImageReadError
from signer.imagediff.report import diff_images
from tests.cli.helpers_cli import run
from tests.conftest import require
from tests.signer.helpers_image_diff import build

SLOT_FORMATS = ("ext4", "squashfs", "erofs")


def _tree(root: Path) -> Path:
    r = random.Random(5)
    for d in ("etc", "usr/bin", "usr/lib"):
        (root / d).mkdir(parents=True)
    (root / "etc/motd").write_text("welcome\n")
    (root / "etc/hostname").write_text("edge\n")
    (root / "usr/bin/tool").write_bytes(r.randbytes(200_000))
    (root / "usr/lib/libx.so").write_bytes(r.randbytes(50_000))
    return root


def _write_into_slot(image: Path, slot: Path) -> None:
    """What the device's apply does: the image's bytes at the start of the slot, the rest of
    the slot (older, larger content) left as it was."""
    with slot.open("r+b") as f:
        f.write(image.read_bytes())


def _slot(tmp: Path, size: int) -> Path:
    slot = tmp / "slot-b.raw"
    slot.write_bytes(random.Random(9).randbytes(size))  # what an older image left behind
    return slot


@pytest.mark.parametrize("fmt", SLOT_FORMATS)
def test_a_slot_holding_the_published_image_has_no_differences(fmt: str, tmp_path: Path) -> None:
    published = build(fmt, _tree(tmp_path / "t"), tmp_path / f"v2.{fmt}", size="16M")
    slot = _slot(tmp_path, published.stat().st_size + (8 << 20))
    _write_into_slot(published, slot)
    d = diff_images(str(slot), str(published))
    assert d.a.type == d.b.type == fmt and d.level == "files"
    assert d.files is not None and d.files.changes == () and d.bytes_changed == 0
    r = run("otakit", "image", "diff", str(slot), str(published))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith("0 added, 0 removed, 0 modified")


@pytest.mark.parametrize("fmt", SLOT_FORMATS)
def test_a_changed_file_in_the_slot_is_named(fmt: str, tmp_path: Path) -> None:
    """The slot's image rebuilt from a tree with one file changed (``mke2fs -d`` for ext4),
    written over the slot: the diff names exactly that file."""
    tree = _tree(tmp_path / "t")
    published = build(fmt, tree, tmp_path / f"v2.{fmt}", size="16M")
    (tree / "etc/motd").write_text("welcomE\n")  # same size, other bytes
    drifted = build(fmt, tree, tmp_path / f"drifted.{fmt}", size="16M")
    slot = _slot(tmp_path, published.stat().st_size + (8 << 20))
    _write_into_slot(drifted, slot)
    d = diff_images(str(slot), str(published))
    assert d.files is not None
    assert [(c.path, c.change, c.fields) for c in d.files.changes] == [
        ("/etc/motd", "modified", ("sha256",))
    ]


@contextlib.contextmanager
def _loop_device(backing: Path) -> Iterator[str]:
    losetup = require("losetup")
    r = subprocess.run(
        [losetup, "--find", "--show", "--read-only", str(backing)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"no loop device here: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run([losetup, "--detach", dev], check=False, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="attaching a loop device needs root")
def test_a_block_device_slot_is_read_like_its_image(tmp_path: Path) -> None:
    """A block device has size 0 to stat(): its length comes from seeking to its end."""
    published = build("ext4", _tree(tmp_path / "t"), tmp_path / "v2.ext4", size="16M")
    slot = _slot(tmp_path, 24 << 20)
    _write_into_slot(published, slot)
    with _loop_device(slot) as dev:
        d = diff_images(dev, str(published))
        assert d.a.type == "ext4" and d.files is not None and d.files.changes == ()
        raw = diff_images(dev, str(slot))  # the device against its own backing file
        assert raw.files is not None and raw.files.changes == ()


# --- deadlines on external tools ---------------------------------------------------------------


def _fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text("#!/bin/sh\n" + body + "\n")
    tool.chmod(0o755)


def test_a_tool_that_never_finishes_is_killed_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake sqfs2tar that starts a child holding the pipe open and waits for it: the whole
    process group is killed at the deadline, and the diff ends with a clear error."""
    img = build("squashfs", _tree(tmp_path / "t"), tmp_path / "a.sqfs")
    _fake_tool(tmp_path / "bin", "sqfs2tar", "sleep 60 &\nwait")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    t0 = time.monotonic()
    with pytest.raises(ImageReadError, match=r"sqfs2tar did not finish within 0\.5 s; killed"):
        diff_images(str(img), str(img), tool_timeout=0.5)
    assert time.monotonic() - t0 < 10
    r = run("otakit", "image", "diff", str(img), str(img), "--tool-timeout", "0.5", timeout=30)
    assert r.returncode == 5 and "Traceback" not in r.stderr
    assert "sqfs2tar did not finish within 0.5 s" in r.stderr
    r = run("otakit", "--json", "image", "diff", str(img), str(img), "--tool-timeout", "0.5")
    assert json.loads(r.stdout)["error"]["kind"] == "image-read"


def test_a_tool_that_fails_is_a_format_error_not_a_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = build("squashfs", _tree(tmp_path / "t"), tmp_path / "a.sqfs")
    _fake_tool(tmp_path / "bin", "sqfs2tar", "echo 'cannot read inode table' >&2\nexit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    r = run("otakit", "image", "diff", str(img), str(img), "--tool-timeout", "30")
    assert r.returncode == 5 and "not a readable squashfs image: cannot read inode" in r.stderr


def test_the_real_tool_finishes_well_within_the_default_deadline(tmp_path: Path) -> None:
    img = build("squashfs", _tree(tmp_path / "t"), tmp_path / "a.sqfs")
    t0 = time.monotonic()
    d = diff_images(str(img), str(img), tool_timeout=30)
    assert d.files is not None and d.files.changes == () and time.monotonic() - t0 < 30
