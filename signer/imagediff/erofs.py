"""A read-only EROFS reader: the directory tree of an image, streamed into entries.

Why our own, not erofs-utils: ``dump.erofs`` (1.5) lists one inode per call and never prints
content; ``fsck.erofs --extract=DIR`` writes the tree to disk under names taken from the
image, and a crafted image (a symlink ``x -> /etc`` and then a directory ``x`` in the same
directory, a name holding ``/``) can make an extractor write outside DIR. The uncompressed
on-disk format (the kernel's ``Documentation/filesystems/erofs.rst``) is small: a superblock,
32- or 64-byte inodes addressed by number, plain / tail-inline / chunk-based data, directory
blocks of sorted entries, inline and shared extended attributes. Compressed files (lz4, lzma)
are refused with a clear error: decompressing them needs a codec this toolkit does not carry.

Every offset and length read from the image is checked before use, as in ``ext4.py``.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from typing import Final

from repo.errors import ImageFormatError
from signer.imagediff.entry import (
    CHUNK,
    KIND_OF_MODE,
    Entry,
    Listing,
    unread_symlink,
    xattr_value,
)
from signer.imagediff.inodetree import MAX_PATH, file_sha256, walk
from signer.imagediff.source import ReadOptions, open_image
from verifier.imagetype import u16, u32, u64

_SB_OFFSET: Final = 1024
_MAGIC: Final = 0xE0F5E1E2
_NULL_ADDR: Final = 0xFFFFFFFF

_PLAIN, _COMPRESSED_FULL, _INLINE, _COMPRESSED_COMPACT, _CHUNKED = range(5)
_CHUNK_INDEXES: Final = 0x20
_CHUNK_BITS: Final = 0x1F
#: Incompatible features this reader understands: lz4 zero padding (harmless when nothing is
#: compressed), chunked files. Any other (device table, fragments, dedupe, long xattr
#: prefixes, ...) is refused by name rather than misread.
_INCOMPAT_OK: Final = 0x1 | 0x4
_INCOMPAT_NAMES: Final = {
    0x2: "compression configurations (big pclusters)",
    0x8: "an extra device table",
    0x10: "ztailpacking",
    0x20: "fragments / dedupe",
    0x40: "long xattr name prefixes",
}
_XATTR_PREFIX: Final = {
    1: "user.",
    2: "system.posix_acl_access",
    3: "system.posix_acl_default",
    4: "trusted.",
    5: "lustre.",
    6: "security.",
}


class _Inode:
    __slots__ = ("at", "gid", "layout", "meta_end", "mode", "nid", "raw_u", "size", "uid")

    nid: int
    at: int  # byte offset of the inode
    meta_end: int  # byte offset just past the inode and its inline xattrs
    layout: int
    mode: int
    uid: int
    gid: int
    size: int
    raw_u: int  # i_u: start block, rdev, or the chunk format


class ErofsReader:
    """An open image. ``listing`` walks it; nothing else is public."""

    def __init__(self, fd: int, length: int, what: str) -> None:
        self._fd, self._length, self._what = fd, length, what
        sb = self._pread(_SB_OFFSET, 128)
        if u32(sb, 0) != _MAGIC:
            raise self.bad("no EROFS superblock magic at offset 1024")
        bits = sb[12]
        if not 9 <= bits <= 16:
            raise self.bad(f"block size 1 << {bits} (expected 512 B .. 64 KiB)")
        self.bs = 1 << bits
        self.root_nid = u16(sb, 14)
        self.blocks = u32(sb, 36)
        self.meta = u32(sb, 40) * self.bs
        self.xattr = u32(sb, 44) * self.bs
        incompat = u32(sb, 80)
        for flag, name in _INCOMPAT_NAMES.items():
            if incompat & flag:
                raise self.bad(f"uses {name}, which this reader does not support")
        if incompat & ~(_INCOMPAT_OK | sum(_INCOMPAT_NAMES)):
            raise self.bad(f"unknown incompatible features {incompat:#x}")
        self.end = self.blocks * self.bs
        if self.blocks == 0 or self.end > length:
            raise self.bad(
                f"the superblock says {self.end} bytes, the file has {length}: truncated"
            )
        # each data block is read about once; shared or looping pointers run out of budget
        self._budget = 2 * self.blocks + 4096
        self._zero_budget = 16 * self.end + (1 << 30)
        self._hashes: dict[int, str] = {}

    def bad(self, why: str) -> ImageFormatError:
        return ImageFormatError(
            f"{self._what}: not a readable erofs image: {why}",
            hint="the image is corrupt or truncated; check it with fsck.erofs",
        )

    def _pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._length:
            raise self.bad(f"a read of {length} bytes at {offset} is beyond the end of the file")
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise self.bad(f"short read at {offset}")
        return data

    def _read(self, offset: int, length: int, shared: bool = False) -> bytes:
        """Bytes inside the filesystem (``blocks`` of the superblock), counted against the
        walk's budget. Chunks may be ``shared`` (mkfs.erofs stores identical chunks once):
        those count against the byte budget of sparse and deduplicated content instead."""
        if offset < 0 or offset + length > self.end:
            raise self.bad(f"{length} bytes at {offset} are outside the filesystem")
        if shared:
            self._spend(length)
        else:
            self._budget -= -(-length // self.bs)
            if self._budget < 0:
                raise self.bad(
                    "the walk reads more blocks than the filesystem holds (shared or looping data)"
                )
        return self._pread(offset, length)

    def _spend(self, n: int) -> None:
        self._zero_budget -= n
        if self._zero_budget < 0:
            raise self.bad("sparse or shared chunks hold more data than this reader will hash")

    # --- inodes ------------------------------------------------------------------------------

    def inode(self, nid: int) -> _Inode:
        at = self.meta + 32 * nid
        if at + 32 > self.end:
            raise self.bad(f"inode {nid} is outside the filesystem")
        head = self._pread(at, 32)
        fmt = u16(head, 0)
        extended = fmt & 1
        node = _Inode()
        node.nid, node.at, node.layout = nid, at, (fmt >> 1) & 0x7
        if extended:
            if at + 64 > self.end:
                raise self.bad(f"inode {nid} is outside the filesystem")
            raw = self._pread(at, 64)
            node.size, node.uid, node.gid = u64(raw, 8), u32(raw, 24), u32(raw, 28)
            isize = 64
        else:
            raw = head
            node.size, node.uid, node.gid = u32(raw, 8), u16(raw, 24), u16(raw, 26)
            isize = 32
        node.mode = u16(raw, 4)
        node.raw_u = u32(raw, 16)
        icount = u16(raw, 2)
        node.meta_end = at + isize + (12 + 4 * (icount - 1) if icount else 0)
        if node.meta_end > self.end:
            raise self.bad(f"inode {nid}: its xattrs run past the filesystem")
        return node

    # --- data --------------------------------------------------------------------------------

    def _chunks(self, node: _Inode) -> Iterator[bytes]:
        """The content in pieces of at most ``CHUNK`` bytes, holes as zeros."""
        if node.layout in (_COMPRESSED_FULL, _COMPRESSED_COMPACT):
            raise self.bad(
                f"inode {node.nid} is compressed; this reader reads uncompressed erofs only"
            )
        if node.size > self.end and node.layout != _CHUNKED:
            raise self.bad(f"inode {node.nid}: size {node.size} exceeds the filesystem")
        if node.layout == _PLAIN:
            yield from self._span(node.raw_u * self.bs, node.size)
        elif node.layout == _INLINE:
            tail = node.size % self.bs or (self.bs if node.size else 0)
            head = node.size - tail
            if head:
                yield from self._span(node.raw_u * self.bs, head)
            if tail:
                # the tail is packed right after the inode and must not cross a block
                if node.meta_end % self.bs + tail > self.bs:
                    raise self.bad(f"inode {node.nid}: inline data crosses a block boundary")
                yield self._read(node.meta_end, tail)
        elif node.layout == _CHUNKED:
            yield from self._chunked(node)
        else:
            raise self.bad(f"inode {node.nid}: unknown data layout {node.layout}")

    def _span(self, offset: int, length: int, shared: bool = False) -> Iterator[bytes]:
        done = 0
        while done < length:
            n = min(CHUNK, length - done)
            yield self._read(offset + done, n, shared)
            done += n

    def _chunked(self, node: _Inode) -> Iterator[bytes]:
        fmt = node.raw_u
        chunk = self.bs << (fmt & _CHUNK_BITS)
        count = -(-node.size // chunk)
        wide = bool(fmt & _CHUNK_INDEXES)
        start = node.meta_end
        if wide:
            start = (start + 7) & ~7
        size = 8 if wide else 4
        table = self._read(start, count * size)
        left = node.size
        for i in range(count):
            addr = u32(table, i * size + 4) if wide else u32(table, i * size)
            if wide and u16(table, i * size + 2):
                raise self.bad(f"inode {node.nid}: data on an extra device")
            n = min(chunk, left)
            if addr == _NULL_ADDR:
                done = 0
                while done < n:
                    step = min(CHUNK, n - done)
                    self._spend(step)
                    yield bytes(step)
                    done += step
            else:
                yield from self._span(addr * self.bs, n, shared=True)
            left -= n

    def _content(self, node: _Inode, limit: int) -> bytes:
        if node.size > limit:
            raise self.bad(f"inode {node.nid}: {node.size} bytes where at most {limit} fit")
        return b"".join(self._chunks(node))

    # --- extended attributes -----------------------------------------------------------------

    def _xattrs(self, node: _Inode) -> dict[str, bytes]:
        body_at = node.at + (64 if self._pread(node.at, 2)[0] & 1 else 32)
        if node.meta_end == body_at:
            return {}
        body = self._pread(body_at, node.meta_end - body_at)
        shared = body[4]
        found: dict[str, bytes] = {}
        off = 12
        if off + 4 * shared > len(body):
            raise self.bad(f"inode {node.nid}: {shared} shared xattrs do not fit")
        for i in range(shared):
            at = self.xattr + 4 * u32(body, off + 4 * i)
            head = self._read(at, 4)
            entry = self._read(at, 4 + head[0] + u16(head, 2))
            self._xattr_entry(entry, 0, found, node.nid)
        off += 4 * shared
        while off + 4 <= len(body):
            off = self._xattr_entry(body, off, found, node.nid)
        return found

    def _xattr_entry(self, region: bytes, off: int, found: dict[str, bytes], nid: int) -> int:
        name_len, index, value_size = region[off], region[off + 1], u16(region, off + 2)
        end = off + 4 + name_len + value_size
        if end > len(region):
            raise self.bad(f"inode {nid}: an xattr runs past its region")
        name = _XATTR_PREFIX.get(index, f"unknown{index}.") + region[
            off + 4 : off + 4 + name_len
        ].decode("utf-8", "backslashreplace")
        found[name] = region[off + 4 + name_len : end]
        return (end + 3) & ~3

    # --- directories -------------------------------------------------------------------------

    def dirents(self, node: _Inode) -> Iterator[tuple[bytes, int]]:
        buf = b""
        for piece in self._chunks(node):
            buf = buf + piece if buf else piece
            full = len(buf) - len(buf) % self.bs
            for off in range(0, full, self.bs):
                yield from self._parse_block(buf[off : off + self.bs], node.nid)
            buf = buf[full:]
        if buf:
            yield from self._parse_block(buf, node.nid)

    def _parse_block(self, block: bytes, nid: int) -> Iterator[tuple[bytes, int]]:
        if len(block) < 12:
            raise self.bad(f"directory inode {nid}: a {len(block)}-byte directory block")
        first = u16(block, 8)
        if first % 12 or not 12 <= first <= len(block):
            raise self.bad(f"directory inode {nid}: bad first name offset {first}")
        count = first // 12
        for i in range(count):
            child, nameoff = u64(block, 12 * i), u16(block, 12 * i + 8)
            end = u16(block, 12 * i + 20) if i + 1 < count else len(block)
            if not first <= nameoff < end <= len(block):
                raise self.bad(f"directory inode {nid}: bad name at {nameoff}..{end}")
            name = block[nameoff:end]
            if i + 1 == count:
                name = name.split(b"\0", 1)[0]  # the last name is padded to the block's end
            yield name, child

    # --- the walk ----------------------------------------------------------------------------

    def entry(self, path: str, node: _Inode, keep: frozenset[str], listing: Listing) -> Entry:
        kind = KIND_OF_MODE.get(stat.S_IFMT(node.mode))
        if kind is None:
            raise self.bad(f"{path}: inode {node.nid} has unknown file type {node.mode:o}")
        xattrs = tuple(sorted((k, xattr_value(v)) for k, v in self._xattrs(node).items()))
        sha = target = None
        rdev = None
        if kind == "file":
            sha = file_sha256(
                path,
                node.size,
                keep,
                listing,
                lambda limit: self._content(node, limit),
                lambda: self._chunks(node),
                self._hashes,
                node.nid,
            )
        elif kind == "symlink" and node.size > MAX_PATH:
            target = unread_symlink(path, node.size, MAX_PATH, listing)
        elif kind == "symlink":
            target = self._content(node, MAX_PATH).decode("utf-8", "backslashreplace")
        elif kind in ("chardev", "blockdev"):
            dev = node.raw_u
            rdev = ((dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00))
        return Entry(
            path=path,
            kind=kind,
            mode=stat.S_IMODE(node.mode),
            uid=node.uid,
            gid=node.gid,
            size=node.size if kind in ("file", "symlink") else 0,
            sha256=sha,
            target=target,
            rdev=rdev,
            xattrs=xattrs,
        )

    def listing(self, keep: frozenset[str]) -> Listing:
        return walk(self, self.root_nid, self.end, keep)


def read_erofs(path: str, opts: ReadOptions) -> Listing:
    """The image's tree; a slot larger than the image reads only the superblock's blocks."""
    with open_image(path) as (fd, length):
        try:
            return ErofsReader(fd, length, path).listing(opts.keep)
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise ImageFormatError(
                f"{path}: not a readable erofs image: {e}",
                hint="the image is corrupt or truncated; check it with fsck.erofs",
            ) from e
