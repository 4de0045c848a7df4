"""A directory tree read as an image: ``os.scandir`` with ``lstat`` semantics, so a symlink
is recorded as a link and never followed (a symlink loop cannot hang the walk), and a mount
point below the root is not crossed (it is another filesystem, not part of this tree)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from repo.errors import ImageReadError
from signer.imagediff.entry import (
    KEEP_MAX,
    KIND_OF_MODE,
    Entry,
    Listing,
    hash_content,
    join,
    xattr_value,
)
from signer.imagediff.source import ReadOptions


def read_dir(root: str, opts: ReadOptions) -> Listing:
    keep = opts.keep
    listing = Listing()
    try:
        top = os.lstat(root)
        listing.add(_entry(root, "/", top, keep, listing))
        stack = [("/", root)]
        while stack:
            path, real = stack.pop()
            with os.scandir(real) as it:
                children = list(it)
            for child in children:
                child_path = join(path, child.name)
                st = child.stat(follow_symlinks=False)
                listing.add(_entry(child.path, child_path, st, keep, listing))
                if stat.S_ISDIR(st.st_mode) and st.st_dev == top.st_dev:
                    stack.append((child_path, child.path))
    except OSError as e:
        raise ImageReadError(f"{root}: cannot read the directory tree: {e}") from e
    return listing


def _entry(
    real: str, path: str, st: os.stat_result, keep: frozenset[str], listing: Listing
) -> Entry:
    kind = KIND_OF_MODE[stat.S_IFMT(st.st_mode)]
    sha = target = None
    rdev = None
    size = 0
    if kind == "file":
        size = st.st_size
        # O_NOFOLLOW: the entry was a regular file when listed; if it has been swapped for
        # a link since, the open fails rather than reading the link's target
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            sha = hash_content(f, path, path in keep and size <= KEEP_MAX, listing)
    elif kind == "symlink":
        target = str(Path(real).readlink())
        size = len(os.fsencode(target))
    elif kind in ("chardev", "blockdev"):
        rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return Entry(
        path=path,
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=size,
        sha256=sha,
        target=target,
        rdev=rdev,
        xattrs=_xattrs(real),
    )


def _xattrs(real: str) -> tuple[tuple[str, str], ...]:
    try:
        names = os.listxattr(real, follow_symlinks=False)
    except OSError:
        return ()  # a filesystem without xattrs
    out = []
    for name in names:
        try:
            out.append((name, xattr_value(os.getxattr(real, name, follow_symlinks=False))))
        except OSError:
            continue
    return tuple(sorted(out))
