"""The rpm package summary: real sqlite rpm databases (``rpm --root R -i --justdb``) inside
real images, rpm's version order, and malformed headers and databases as clear errors."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest

from repo.errors import ImageFormatError
from signer.imagediff.report import diff_images
from signer.imagediff.rpmdb import compare_evr, parse_header, read_rpmdb, rpmvercmp
from tests.cli.helpers_cli import run
from tests.conftest import require
from tests.signer.helpers_image_diff import build

DBPATH = "/usr/lib/sysimage/rpm"


def _package(out: Path, name: str, version: str, release: str, epoch: int | None = None) -> Path:
    spec = out / f"{name}.spec"
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\n"
        + (f"Epoch: {epoch}\n" if epoch is not None else "")
        + "Summary: t\nLicense: MIT\nBuildArch: noarch\n%description\nt\n%files\n"
    )
    subprocess.run(
        [require("rpmbuild"), "-bb", "--define", f"_topdir {out}/top",
         "--define", f"_rpmdir {out}/rpms", str(spec)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "rpms/noarch" / f"{name}-{version}-{release}.noarch.rpm"


def _root(tree: Path, packages: list[Path]) -> Path:
    rpm = require("rpm")
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=test\n")
    subprocess.run([rpm, "--root", str(tree), "--dbpath", DBPATH, "--initdb"], check=True)
    subprocess.run(
        [rpm, "--root", str(tree), "--dbpath", DBPATH, "-i", "--justdb", "--nodeps",
         "--noscripts", *map(str, packages)],
        check=True, capture_output=True,
    )  # fmt: skip
    return tree


@pytest.fixture(scope="module")
def rpm_trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("rpm")
    a = _root(
        tmp / "a",
        [_package(tmp, "foo", "1.0", "1"), _package(tmp, "bar", "2.0", "1"),
         _package(tmp, "gone", "1", "1")],
    )  # fmt: skip
    b = _root(
        tmp / "b",
        [_package(tmp, "foo", "1.0", "2"), _package(tmp, "bar", "1.0", "1", epoch=1),
         _package(tmp, "baz", "0.1~rc1", "1")],
    )  # fmt: skip
    return a, b


@pytest.mark.parametrize("fmt", ["ext4", "squashfs", "dir"])
def test_rpm_packages_added_removed_and_upgraded(
    fmt: str, rpm_trees: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = rpm_trees
    d = diff_images(str(build(fmt, a, tmp_path / "a.img")), str(build(fmt, b, tmp_path / "b.img")))
    p = d.packages
    assert p is not None and p.database == "rpm" and (p.count_a, p.count_b) == (3, 3)
    assert p.added == ((("baz", "noarch"), "0.1~rc1-1"),)
    assert p.removed == ((("gone", "noarch"), "1-1"),)
    assert p.upgraded == (
        (("bar", "noarch"), "2.0-1", "1:1.0-1"),  # the epoch wins
        (("foo", "noarch"), "1.0-1", "1.0-2"),
    )
    assert p.downgraded == ()
    assert p.to_dict()["database"] == "rpm"


def test_the_cli_shows_the_rpm_summary(rpm_trees: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = rpm_trees
    ia, ib = build("ext4", a, tmp_path / "a.ext4"), build("ext4", b, tmp_path / "b.ext4")
    r = run("otakit", "image", "diff", str(ia), str(ib))
    assert r.returncode == 0, r.stderr
    assert "packages (rpm): 1 added, 1 removed, 2 upgraded, 0 downgraded" in r.stdout
    assert "  ~ bar 2.0-1 -> 1:1.0-1" in r.stdout


def test_rpm_version_order() -> None:
    cases = [
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0.1", "2.0", 1),
        ("1.0a", "1.0", 1),
        ("10", "9", 1),
        ("001", "1", 0),
        ("1.a", "1.1", -1),  # a numeric segment is newer than an alphabetic one
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0^git1", "1.0", 1),
        ("1.0^git1", "1.0.1", -1),
        ("1_0", "1.0", 0),  # separators only separate
    ]
    assert [rpmvercmp(x, y) for x, y, _ in cases] == [c for _, _, c in cases]
    assert compare_evr("1:1.0-1", "2.0-1") == 1
    assert compare_evr("1.0-1", "0:1.0-1") == 0
    assert compare_evr("1.0-1.fc39", "1.0-2.fc39") == -1


def _header(tags: list[tuple[int, int, bytes]]) -> bytes:
    """A header blob made by the format (rpm's headerExport layout), for the bad cases."""
    index, store = b"", b""
    for tag, kind, value in tags:
        index += struct.pack(">iIiI", tag, kind, len(store), 1)
        store += value
    return struct.pack(">II", len(tags), len(store)) + index + store


def test_malformed_rpm_headers_are_clear_errors() -> None:
    good = _header([(1000, 6, b"foo\0"), (1001, 6, b"1.0\0"), (1002, 6, b"1\0")])
    assert parse_header(good, "x") == ("foo", "1.0-1", "")
    assert parse_header(b"\x8e\xad\xe8\x01\0\0\0\0" + good, "x")[0] == "foo"  # magic skipped
    bad = {
        "huge index": struct.pack(">II", 0x7FFFFFFF, 0) + good[8:],
        "short": good[:6],
        "store past the blob": good[:-3],
        "unterminated string": _header([(1000, 6, b"foo" * 2000)]),
        "no version": _header([(1000, 6, b"foo\0")]),
        "epoch as a string": good[:8] + _header([(1003, 6, b"1\0")])[8:],
        "offset outside": struct.pack(">II", 1, 4)
        + struct.pack(">iIiI", 1000, 6, 99, 1)
        + b"x\0\0\0",
    }
    for why, blob in bad.items():
        with pytest.raises(ImageFormatError, match="rpm header"):
            parse_header(blob, why)


def test_a_crafted_rpm_database_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "rpmdb.sqlite"
    con = sqlite3.connect(db)
    # a view that recurses for ever where rpm keeps a table
    con.execute(
        "CREATE VIEW Packages AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n)"
        " SELECT x AS blob FROM n"
    )
    con.commit()
    con.close()
    with pytest.raises(ImageFormatError, match="no Packages table"):
        read_rpmdb(db.read_bytes(), b"", "crafted")
    with pytest.raises(ImageFormatError, match="rpm database cannot be read"):
        read_rpmdb(b"not a database" * 100, b"", "garbage")
