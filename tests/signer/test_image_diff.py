"""``otakit image diff`` on real images built here: every reader sees the same changes.

One pair of trees (A -> B: a file added, one removed, content, mode, owner, symlink target,
xattr and device-node changes, a dpkg database upgraded) is built as ext4, squashfs, tar and a
directory; each format must report exactly the changes made, nothing more.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from signer.imagediff.diff import FileChange
from signer.imagediff.dpkg import compare_versions, diff_packages, parse_status
from signer.imagediff.report import SCHEMA, ImageDiff, diff_images
from tests.cli.helpers_cli import run
from tests.conftest import require
from tests.signer.helpers_image_diff import FORMATS, build, is_root, set_xattr

STATUS_A = """\
Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Description: shell
 continued line: Version: 9.9

Package: openssl
Status: install ok installed
Architecture: amd64
Version: 3.0.11-1~deb12u2

Package: gone
Status: install ok installed
Architecture: all
Version: 1.0

Package: half
Status: deinstall ok config-files
Architecture: all
Version: 2.0
"""
STATUS_B = STATUS_A.replace("3.0.11-1~deb12u2", "3.0.15-1~deb12u1").replace(
    "Package: gone\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0\n",
    "Package: jq\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6-2.1\n",
)


def _trees(tmp: Path) -> tuple[Path, Path]:
    r = random.Random(8)
    a, b = tmp / "a", tmp / "b"
    for t in (a, b):
        (t / "etc").mkdir(parents=True)
        (t / "usr/bin").mkdir(parents=True)
        (t / "var/lib/dpkg").mkdir(parents=True)
        (t / "dev").mkdir()
    blob = r.randbytes(300_000)
    for t in (a, b):
        (t / "etc/hostname").write_text("edge\n")
        (t / "etc/motd").write_text("welcome\n")
        (t / "usr/bin/tool").write_bytes(blob)
        (t / "usr/bin/same").write_bytes(b"unchanged\n" * 100)
        (t / "etc/owned").write_text("owned\n")
        (t / "usr/bin/sh").symlink_to("dash")
    (a / "usr/bin/old").write_bytes(r.randbytes(70_000))
    (b / "usr/bin/new").write_bytes(r.randbytes(5_000))
    (b / "usr/bin/tool").write_bytes(blob[:1000] + b"X" + blob[1001:] + b"more")
    (b / "etc/motd").chmod(0o4755)
    (b / "usr/bin/sh").unlink()
    (b / "usr/bin/sh").symlink_to("bash")
    (a / "var/lib/dpkg/status").write_text(STATUS_A)
    (b / "var/lib/dpkg/status").write_text(STATUS_B)
    if is_root():
        os.chown(b / "etc/owned", 1000, 1000)
        os.mknod(a / "dev/null", 0o20666, os.makedev(1, 3))
        os.mknod(b / "dev/null", 0o20666, os.makedev(1, 5))
    return a, b


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _trees(tmp_path_factory.mktemp("trees"))


def _by_path(d: ImageDiff) -> dict[str, FileChange]:
    assert d.files is not None
    return {c.path: c for c in d.files.changes}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reports_exactly_the_changes_made(
    fmt: str, trees: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = trees
    d = diff_images(str(build(fmt, a, tmp_path / "a.img")), str(build(fmt, b, tmp_path / "b.img")))
    assert d.a.type == d.b.type == fmt and d.level == "files"
    changes = _by_path(d)
    expected = {
        "/usr/bin/new": ("added", ()),
        "/usr/bin/old": ("removed", ()),
        "/usr/bin/tool": ("modified", ("sha256", "size")),
        "/etc/motd": ("modified", ("mode",)),
        "/usr/bin/sh": ("modified", ("target",)),
        "/var/lib/dpkg/status": ("modified", ("sha256", "size")),
    }
    if is_root():
        expected["/etc/owned"] = ("modified", ("uid", "gid"))
        expected["/dev/null"] = ("modified", ("rdev",))
    assert {p: (c.change, c.fields) for p, c in changes.items()} == expected
    # largest first: the 300 KB binary leads, and the total adds up
    assert d.files is not None and d.files.changes[0].path == "/usr/bin/tool"
    status = max(len(STATUS_A), len(STATUS_B))
    assert d.bytes_changed == 300_004 + 70_000 + 5_000 + status + len("bash")
    assert changes["/etc/motd"].b is not None and changes["/etc/motd"].b.mode == 0o4755
    assert d.packages is not None
    assert [p[0][0] for p in d.packages.added] == ["jq"]
    assert [p[0][0] for p in d.packages.removed] == ["gone"]
    assert [(p[0][0], p[1], p[2]) for p in d.packages.upgraded] == [
        ("openssl", "3.0.11-1~deb12u2", "3.0.15-1~deb12u1")
    ]
    assert d.unsafe_a == d.unsafe_b == ()


@pytest.mark.parametrize("fmt", FORMATS)
def test_xattr_changes_are_reported(fmt: str, tmp_path: Path) -> None:
    a, b = tmp_path / "ta", tmp_path / "tb"
    for t in (a, b):
        t.mkdir()
        (t / "ping").write_bytes(b"\x7fELF")
    set_xattr(b / "ping", "user.note", b"reviewed")
    if is_root():  # file capabilities: what a reviewer most wants to see change
        set_xattr(b / "ping", "security.capability", bytes.fromhex("0100000200200000") + bytes(12))
    d = diff_images(str(build(fmt, a, tmp_path / "a.img")), str(build(fmt, b, tmp_path / "b.img")))
    change = _by_path(d)["/ping"]
    assert change.fields == ("xattrs",) and change.b is not None
    assert dict(change.b.xattrs)["user.note"] == b"reviewed".hex()
    if is_root():
        assert "security.capability" in dict(change.b.xattrs)


def test_formats_compare_with_each_other(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """A directory against the ext4 image built from it: only ext4's own lost+found."""
    a, _ = trees
    d = diff_images(str(a), str(build("ext4", a, tmp_path / "a.ext4")))
    assert {c.path: c.change for c in _by_path(d).values()} == {"/lost+found": "added"}


def test_identical_images_have_no_changes(trees: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = trees
    img = build("ext4", a, tmp_path / "a.ext4")
    d = diff_images(str(img), str(img))
    assert d.files is not None and d.files.changes == () and d.bytes_changed == 0


def test_a_raw_pair_gets_a_block_summary(tmp_path: Path) -> None:
    data = bytearray(random.Random(1).randbytes(64 * 4096))
    (tmp_path / "a.raw").write_bytes(data)
    data[5 * 4096 + 7] ^= 1
    data[20 * 4096 : 23 * 4096] = bytes(3 * 4096)
    (tmp_path / "b.raw").write_bytes(bytes(data) + b"tail")
    d = diff_images(str(tmp_path / "a.raw"), str(tmp_path / "b.raw"))
    assert d.level == "blocks" and d.blocks is not None
    assert d.blocks.changed_blocks == 1 + 3 + 1  # one bit, three zeroed, the 4-byte tail
    assert d.blocks.changed_bytes == 4 * 4096 + 4
    assert d.blocks.runs[0] == (20 * 4096, 3 * 4096)  # largest run first


def test_dpkg_versions_order_as_dpkg_does() -> None:
    cases = [
        ("1.0", "1.1", -1),
        ("1.0~rc1", "1.0", -1),
        ("2:1.0", "1:9.9", 1),
        ("1.0a", "1.0", 1),
        ("1.0-1+deb12u1", "1.0-1", 1),
        ("3.0.11-1~deb12u2", "3.0.15-1~deb12u1", -1),
        ("1.0", "1.0-0", 0),
        ("1.10", "1.9", 1),
    ]
    assert [compare_versions(x, y) for x, y, _ in cases] == [c for _, _, c in cases]
    d = diff_packages(parse_status(STATUS_B), parse_status(STATUS_A))
    assert [p[0][0] for p in d.downgraded] == ["openssl"]
    assert ("half", "all") not in parse_status(STATUS_A)  # not installed, only configured


def test_the_cli_prints_an_80_column_table_and_a_versioned_json_document(
    trees: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = trees
    ia, ib = build("ext4", a, tmp_path / "a.ext4"), build("tar", b, tmp_path / "b.tar")
    r = run("otakit", "image", "diff", str(ia), str(ib))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[2].split() == ["CHANGE", "BYTES", "WHAT", "PATH"]
    assert lines[3].split()[0] == "modified" and lines[3].endswith("/usr/bin/tool")
    assert "packages (dpkg): 1 added, 1 removed, 1 upgraded" in r.stdout
    assert "  ~ openssl 3.0.11-1~deb12u2 -> 3.0.15-1~deb12u1" in r.stdout
    assert lines[-1].endswith("changed") and " added, " in lines[-1]
    r = run("otakit", "image", "diff", str(ia), str(ib), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == SCHEMA and doc["level"] == "files"
    assert doc["a"]["type"] == "ext4" and doc["b"]["type"] == "tar"
    assert doc["changes"][0]["path"] == "/usr/bin/tool"
    assert doc["changes"][0]["a"]["sha256"] != doc["changes"][0]["b"]["sha256"]
    assert doc["summary"]["bytes_changed"] == doc["bytes_changed"] > 0
    assert doc["packages"]["upgraded"][0]["name"] == "openssl"
    r = run("otakit", "image", "diff", str(ia), str(ib), "--limit", "1")
    assert r.returncode == 0 and "more (--limit 0 or --json for all)" in r.stdout


@pytest.mark.parametrize(
    "features",
    [("-O", "inline_data"), ("-t", "ext2", "-O", "^extent,^64bit")],
    ids=["inline-data", "ext2-block-maps"],
)
def test_ext4_variants_read_like_the_tree_they_were_built_from(
    features: tuple[str, ...], trees: tuple[Path, Path], tmp_path: Path
) -> None:
    """Inline data (small files and directories inside the inode) and ext2's indirect block
    maps (a 300 KB file needs the single-indirect block) are read as the tree holds them."""
    _, b = trees
    img = tmp_path / "v.img"
    subprocess.run(
        [require("mkfs.ext4"), "-q", "-F", *features, "-d", str(b), str(img), "16M"],
        check=True, capture_output=True,
    )  # fmt: skip
    d = diff_images(str(b), str(img))
    assert {c.path: c.change for c in _by_path(d).values()} == {"/lost+found": "added"}
