"""Real images of small trees for the image-diff tests: mkfs.ext4 -d, mksquashfs, mkfs.erofs,
tar."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import require

FORMATS = ("ext4", "squashfs", "erofs", "tar", "dir")


def build(fmt: str, tree: Path, out: Path, size: str = "32M") -> Path:
    """``tree`` as an image of format ``fmt`` (a directory is itself)."""
    if fmt == "dir":
        return tree
    if fmt == "ext4":
        mkfs = require("mkfs.ext4")
        subprocess.run(
            [mkfs, "-q", "-F", "-b", "4096", "-I", "256", "-d", str(tree), str(out), size],
            check=True, capture_output=True,
        )  # fmt: skip
    elif fmt == "erofs":
        mkfs = require("mkfs.erofs")
        subprocess.run([mkfs, str(out), str(tree)], check=True, capture_output=True)
    elif fmt == "squashfs":
        mksquashfs = require("mksquashfs")
        require("sqfs2tar")
        subprocess.run(
            [mksquashfs, str(tree), str(out), "-noappend", "-quiet", "-no-progress"],
            check=True, capture_output=True,
        )  # fmt: skip
    else:
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(tree.rglob("*")):
                info = tar.gettarinfo(str(path), arcname="./" + str(path.relative_to(tree)))
                xattrs = _xattrs(path)
                if xattrs:
                    info.pax_headers = {
                        f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                        for k, v in xattrs.items()
                    }
                if info.isreg():
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return out


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}


def set_xattr(path: Path, name: str, value: bytes) -> None:
    try:
        os.setxattr(path, name, value)
    except OSError as e:
        pytest.skip(f"the test filesystem refuses xattr {name}: {e}")


def is_root() -> bool:
    return os.geteuid() == 0
