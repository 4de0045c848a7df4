"""The directory walk the inode filesystem readers share (ext4, erofs).

A crafted image is hostile input, so the walk is where its shape is bounded, once for every
format: a name holding '/' or NUL, an empty name or a second entry of one name in a
directory, a path beyond ``MAX_PATH`` or ``MAX_DEPTH``, a directory reached twice (a loop
that would never end) and a directory larger than the filesystem (its blocks would read as a
hole for ever) are each reported in ``Listing.unsafe`` and not followed. A reader only
translates its on-disk structures: inodes, directory entries and one ``Entry`` per inode.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol, TypeVar

from signer.imagediff.entry import KEEP_MAX, Entry, Listing, hash_chunks, join

MAX_PATH: Final = 4096
MAX_DEPTH: Final = 1024


class Node(Protocol):
    @property
    def mode(self) -> int: ...

    @property
    def size(self) -> int: ...


N = TypeVar("N", bound=Node)


class InodeReader(Protocol[N]):
    def inode(self, ref: int) -> N: ...

    def dirents(self, node: N) -> Iterator[tuple[bytes, int]]: ...

    def entry(self, path: str, node: N, keep: frozenset[str], listing: Listing) -> Entry: ...

    def bad(self, why: str) -> Exception: ...


def walk(reader: InodeReader[N], root: int, fs_bytes: int, keep: frozenset[str]) -> Listing:
    """Every inode reachable from ``root``, depth first, as the reader's entries."""
    listing = Listing()
    top = reader.inode(root)
    if not stat.S_ISDIR(top.mode):
        raise reader.bad("the root inode is not a directory")
    listing.add(reader.entry("/", top, keep, listing))
    seen = {root}
    stack: list[tuple[str, N, int]] = [("/", top, 0)]
    while stack:
        path, node, depth = stack.pop()
        names: set[bytes] = set()
        for raw_name, child in reader.dirents(node):
            if raw_name in (b".", b".."):
                continue
            child_path = join(path, raw_name.decode("utf-8", "backslashreplace"))
            if not raw_name or b"/" in raw_name or b"\0" in raw_name:
                listing.unsafe.append(f"{child_path!r}: an empty name or one with '/' or NUL")
                continue
            if raw_name in names:
                listing.unsafe.append(f"{child_path}: a second entry of the same name")
                continue
            names.add(raw_name)
            if len(child_path) > MAX_PATH or depth >= MAX_DEPTH:
                listing.unsafe.append(f"{child_path[:200]}...: path too long or too deep")
                continue
            cnode = reader.inode(child)
            if stat.S_ISDIR(cnode.mode):
                if child in seen:
                    listing.unsafe.append(f"{child_path}: directory inode {child} reached twice")
                    continue
                seen.add(child)
                if cnode.size > fs_bytes:
                    listing.unsafe.append(
                        f"{child_path}: a directory of {cnode.size} bytes, larger than the "
                        f"filesystem ({fs_bytes} bytes): not walked"
                    )
                else:
                    stack.append((child_path, cnode, depth + 1))
            listing.add(reader.entry(child_path, cnode, keep, listing))
    return listing


def file_sha256(
    path: str,
    size: int,
    keep: frozenset[str],
    listing: Listing,
    content: Callable[[int], bytes],
    chunks: Callable[[], Iterable[bytes]],
    cache: dict[int, str],
    ref: int,
) -> str:
    """A regular file's hash; a file the caller asked to keep is read whole into the listing
    (bounded by KEEP_MAX), hard links are hashed once (``cache`` by inode)."""
    if path in keep and size <= KEEP_MAX:
        data = content(KEEP_MAX)
        listing.kept[path] = data
        return hashlib.sha256(data).hexdigest()
    if ref not in cache:
        cache[ref] = hash_chunks(chunks())
    return cache[ref]
