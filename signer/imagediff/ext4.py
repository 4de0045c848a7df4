"""A read-only ext2/3/4 reader: the directory tree of an image file, streamed into entries.

Why our own: ``debugfs`` runs one command per file (``stat``, ``cat``) or dumps the tree to disk
(``rdump``, a write to paths taken from the image), and no well-kept Python library reads
ext4. What a diff needs is a bounded subset of the on-disk format (the kernel's
``Documentation/filesystems/ext4``): superblock, group descriptors, inodes, extent trees and
old block maps, directory entries (linear and htree blocks alike), inline data, symlinks and
extended attributes. The journal is not replayed: an image is a built artifact, not a crashed
disk.

Every length, offset and count read from the image is checked before use: a block outside
the filesystem or beyond the end of the file, an extent tree deeper than the format allows, a
directory reached twice (a crafted loop) or a file larger than the filesystem is a clear
``ImageFormatError`` or a reported path, never a hang, a crash or an unbounded allocation.
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
from verifier.imagetype import u16, u32

_SB_OFFSET: Final = 1024
_MAGIC: Final = 0xEF53
_ROOT_INO: Final = 2

_INCOMPAT_FILETYPE: Final = 0x2
_INCOMPAT_META_BG: Final = 0x10
_INCOMPAT_64BIT: Final = 0x80
_INCOMPAT_COMPRESSION: Final = 0x1
_INCOMPAT_ENCRYPT: Final = 0x10000
_INCOMPAT_DIRDATA: Final = 0x1000

_FL_EXTENTS: Final = 0x80000
_FL_INLINE: Final = 0x10000000
_EXT_MAGIC: Final = 0xF30A
_EXT_MAX_DEPTH: Final = 5  # the kernel's own bound
_XATTR_MAGIC: Final = 0xEA020000
_XATTR_PREFIX: Final = {
    1: "user.",
    2: "system.posix_acl_access",
    3: "system.posix_acl_default",
    4: "trusted.",
    6: "security.",
    7: "system.",
    8: "system.richacl",
}


class _Inode:
    __slots__ = ("acl", "block", "extra", "flags", "gid", "ino", "mode", "size", "uid")

    def __init__(self, ino: int, raw: bytes, inode_size: int) -> None:
        self.ino = ino
        self.mode = u16(raw, 0)
        self.uid = u16(raw, 2) | (u16(raw, 0x78) << 16)
        self.gid = u16(raw, 0x18) | (u16(raw, 0x7A) << 16)
        self.size = u32(raw, 4) | (u32(raw, 0x6C) << 32)
        self.flags = u32(raw, 0x20)
        self.block = raw[0x28:0x64]
        self.acl = u32(raw, 0x68) | (u16(raw, 0x76) << 32)
        self.extra = b""
        if inode_size > 128:
            extra_isize = u16(raw, 0x80)
            start = 128 + extra_isize
            if extra_isize % 4 or start + 4 > inode_size:
                if extra_isize:  # 0 is an old inode without the extra fields
                    raise ImageFormatError(f"inode {ino}: bad i_extra_isize {extra_isize}")
            else:
                self.extra = raw[start:inode_size]


class Ext4Reader:
    """An open image. ``listing`` walks it; nothing else is public."""

    def __init__(self, fd: int, length: int, what: str) -> None:
        self._fd, self._length, self._what = fd, length, what
        sb = self._read(_SB_OFFSET, 1024)
        if u16(sb, 0x38) != _MAGIC:
            raise self.bad("no ext2/3/4 superblock magic at offset 1080")
        log = u32(sb, 0x18)
        if log > 6:
            raise self.bad(f"block size 1024 << {log} is beyond 64 KiB")
        self.bs = 1024 << log
        self.inodes_count = u32(sb, 0)
        self.first_data_block = u32(sb, 0x14)
        self.blocks_per_group = u32(sb, 0x20)
        self.inodes_per_group = u32(sb, 0x28)
        rev = u32(sb, 0x4C)
        self.inode_size = u16(sb, 0x58) if rev >= 1 else 128
        incompat = u32(sb, 0x60)
        blocks = u32(sb, 4)
        if incompat & _INCOMPAT_64BIT:
            blocks |= u32(sb, 0x150) << 32
            self.desc_size = u16(sb, 0xFE)
            if (
                self.desc_size < 64
                or self.desc_size > 1024
                or self.desc_size & (self.desc_size - 1)
            ):
                raise self.bad(f"group descriptor size {self.desc_size} (expected 64..1024)")
        else:
            self.desc_size = 32
        self.blocks = blocks
        for flag, name in (
            (_INCOMPAT_COMPRESSION, "compression"),
            (_INCOMPAT_META_BG, "meta_bg"),
            (_INCOMPAT_ENCRYPT, "encryption"),
            (_INCOMPAT_DIRDATA, "dirdata"),
        ):
            if incompat & flag:
                raise self.bad(f"uses the {name} feature, which this reader does not support")
        self.filetype = bool(incompat & _INCOMPAT_FILETYPE)
        if not (128 <= self.inode_size <= self.bs and self.inode_size & (self.inode_size - 1) == 0):
            raise self.bad(f"inode size {self.inode_size}")
        if self.blocks_per_group == 0 or self.inodes_per_group == 0 or blocks == 0:
            raise self.bad("zero blocks or inodes per group")
        if self.first_data_block >= blocks:
            raise self.bad("first data block beyond the filesystem")
        if blocks * self.bs > length:
            raise self.bad(
                f"the superblock says {blocks * self.bs} bytes, the file has {length}: truncated"
            )
        groups = -(-(blocks - self.first_data_block) // self.blocks_per_group)
        if self.inodes_count > groups * self.inodes_per_group or self.inodes_count < _ROOT_INO:
            raise self.bad(f"{self.inodes_count} inodes in {groups} groups")
        gdt = self._read((self.first_data_block + 1) * self.bs, groups * self.desc_size)
        self._tables = []
        for g in range(groups):
            off = g * self.desc_size
            table = u32(gdt, off + 8)
            if self.desc_size >= 64:
                table |= u32(gdt, off + 0x28) << 32
            self._tables.append(table)
        self._hashes: dict[int, str] = {}
        self._xattr_blocks: dict[int, bytes] = {}
        self._itable: dict[int, bytes] = {}
        # ext4 has no shared data blocks (no reflinks): a walk reads each block about once.
        # A crafted image whose files or extent nodes all point at the same blocks runs out
        # of budget instead of hashing the filesystem a thousand times over.
        self._budget = 2 * blocks + 4096
        self._zero_budget = 16 * blocks * self.bs + (1 << 30)

    # --- raw access --------------------------------------------------------------------------

    def bad(self, why: str) -> ImageFormatError:
        return ImageFormatError(
            f"{self._what}: not a readable ext4 image: {why}",
            hint="the image is corrupt or truncated; check it with e2fsck -fn",
        )

    def _read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self._length:
            raise self.bad(f"a read of {length} bytes at {offset} is beyond the end of the file")
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise self.bad(f"short read at {offset}")
        return data

    def _block(self, n: int, count: int = 1) -> bytes:
        if n < self.first_data_block or n + count > self.blocks:
            raise self.bad(f"block {n} (+{count}) is outside the filesystem")
        self._budget -= count
        if self._budget < 0:
            raise self.bad(
                "the walk reads more blocks than the filesystem holds "
                "(shared or looping block pointers)"
            )
        return self._read(n * self.bs, count * self.bs)

    def inode(self, ino: int) -> _Inode:
        if not 1 <= ino <= self.inodes_count:
            raise self.bad(f"inode number {ino} out of range")
        group, index = divmod(ino - 1, self.inodes_per_group)
        table = self._tables[group]
        if table < self.first_data_block or table >= self.blocks:
            raise self.bad(f"group {group}'s inode table is outside the filesystem")
        # one read per inode-table block, not per inode: a directory's inodes are neighbours
        per_block = self.bs // self.inode_size
        key = table + index // per_block
        block = self._itable.get(key)
        if block is None:
            if len(self._itable) > 1024:
                self._itable.clear()
            block = self._itable[key] = self._read(key * self.bs, self.bs)
        at = (index % per_block) * self.inode_size
        return _Inode(ino, block[at : at + self.inode_size], self.inode_size)

    # --- file data ---------------------------------------------------------------------------

    def _runs(self, node: _Inode) -> list[tuple[int, int, int]]:
        """The file's mapped runs (logical block, physical block or -1 for zeros, count),
        sorted and clipped to its size. Holes are what is left between runs."""
        nblocks = -(-node.size // self.bs)
        if node.flags & _FL_EXTENTS:
            runs: list[tuple[int, int, int]] = []
            self._extents(node.block, 0, runs, node.ino)
            runs.sort()
        else:
            runs = self._blockmap(node, nblocks)
        out = []
        end = 0
        for logical, phys, count in runs:
            if logical < end:
                raise self.bad(f"inode {node.ino}: overlapping extents")
            count = min(count, nblocks - logical)
            if count <= 0:
                continue
            if phys >= 0 and (phys < self.first_data_block or phys + count > self.blocks):
                raise self.bad(f"inode {node.ino}: an extent is outside the filesystem")
            out.append((logical, phys, count))
            end = logical + count
        return out

    def _extents(self, node: bytes, depth: int, out: list[tuple[int, int, int]], ino: int) -> None:
        if depth > _EXT_MAX_DEPTH:
            raise self.bad(f"inode {ino}: extent tree deeper than {_EXT_MAX_DEPTH}")
        if len(node) < 12 or u16(node, 0) != _EXT_MAGIC:
            raise self.bad(f"inode {ino}: bad extent header")
        entries, tree_depth = u16(node, 2), u16(node, 6)
        if 12 + 12 * entries > len(node):
            raise self.bad(f"inode {ino}: {entries} extents do not fit their node")
        if len(out) > self.blocks:
            raise self.bad(f"inode {ino}: more extents than blocks")
        for i in range(entries):
            e = 12 + 12 * i
            if tree_depth == 0:
                logical, length = u32(node, e), u16(node, e + 4)
                phys = (u16(node, e + 6) << 32) | u32(node, e + 8)
                if length > 32768:  # unwritten (preallocated): reads as zeros
                    out.append((logical, -1, length - 32768))
                else:
                    out.append((logical, phys, length))
            else:
                child = (u16(node, e + 8) << 32) | u32(node, e + 4)
                self._extents(self._block(child), depth + 1, out, ino)

    def _blockmap(self, node: _Inode, nblocks: int) -> list[tuple[int, int, int]]:
        """ext2/3 block maps: 12 direct pointers, then single, double, triple indirect."""
        per = self.bs // 4
        ptrs = struct.unpack_from("<15I", node.block)
        out: list[tuple[int, int, int]] = []
        logical = 0

        def walk(ptr: int, level: int) -> None:
            nonlocal logical
            span = per**level
            if logical >= nblocks:
                return
            if ptr == 0:
                logical += span
                return
            if level == 0:
                out.append((logical, ptr, 1))
                logical += 1
                return
            table = struct.unpack_from(f"<{per}I", self._block(ptr))
            for child in table:
                if logical >= nblocks:
                    return
                walk(child, level - 1)

        for i in range(12):
            walk(ptrs[i], 0)
        for i, level in ((12, 1), (13, 2), (14, 3)):
            walk(ptrs[i], level)
        return out

    def _chunks(self, node: _Inode) -> Iterator[bytes]:
        """The file's content in chunks of at most ``CHUNK`` bytes, holes as zeros."""
        if node.flags & _FL_INLINE:
            data = node.block + self._xattrs(node).get("system.data", b"")
            if node.size > len(data):
                raise self.bad(f"inode {node.ino}: inline size {node.size} beyond its data")
            yield data[: node.size]
            return
        if node.size > self.blocks * self.bs:
            raise self.bad(
                f"inode {node.ino}: size {node.size} exceeds the filesystem "
                f"({self.blocks * self.bs} bytes)"
            )
        left = node.size
        pos = 0  # logical block
        per_chunk = max(1, CHUNK // self.bs)
        for logical, phys, count in self._runs(node):
            while pos < logical and left > 0:  # a hole
                n = min(logical - pos, per_chunk)
                take = min(n * self.bs, left)
                yield self._zeros(take)
                left -= take
                pos += n
            done = 0
            while done < count and left > 0:
                n = min(count - done, per_chunk)
                take = min(n * self.bs, left)
                yield self._zeros(take) if phys < 0 else self._block(phys + done, n)[:take]
                left -= take
                done += n
            pos = logical + count
        while left > 0:
            take = min(CHUNK, left)
            yield self._zeros(take)
            left -= take

    def _zeros(self, n: int) -> bytes:
        self._zero_budget -= n
        if self._zero_budget < 0:
            raise self.bad("sparse files hold more zeros than this reader will hash")
        return bytes(n)

    def _content(self, node: _Inode, limit: int) -> bytes:
        if node.size > limit:
            raise self.bad(f"inode {node.ino}: {node.size} bytes where at most {limit} fit")
        return b"".join(self._chunks(node))

    # --- extended attributes -----------------------------------------------------------------

    def _xattrs(self, node: _Inode) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        extra = node.extra
        if len(extra) >= 4 and u32(extra, 0) == _XATTR_MAGIC:
            region = extra[4:]
            self._xattr_entries(region, 0, region, found, node.ino)
        if node.acl:
            block = self._xattr_blocks.get(node.acl) or self._block(node.acl)
            self._xattr_blocks[node.acl] = block
            if u32(block, 0) == _XATTR_MAGIC:
                self._xattr_entries(block, 32, block, found, node.ino)
        return found

    def _xattr_entries(
        self, region: bytes, start: int, values: bytes, found: dict[str, bytes], ino: int
    ) -> None:
        off = start
        while off + 16 <= len(region) and u32(region, off) != 0:
            name_len, index = region[off], region[off + 1]
            value_offs, value_inum = u16(region, off + 2), u32(region, off + 4)
            value_size = u32(region, off + 8)
            name_end = off + 16 + name_len
            if name_end > len(region):
                raise self.bad(f"inode {ino}: an xattr name runs past its region")
            name = _XATTR_PREFIX.get(index, f"unknown{index}.") + region[
                off + 16 : name_end
            ].decode("utf-8", "backslashreplace")
            if value_inum:
                found[name] = f"<value in inode {value_inum}>".encode()
            else:
                if value_offs + value_size > len(values):
                    raise self.bad(f"inode {ino}: xattr {name} value runs past its region")
                found[name] = values[value_offs : value_offs + value_size]
            off = (name_end + 3) & ~3

    # --- directories -------------------------------------------------------------------------

    def dirents(self, node: _Inode) -> Iterator[tuple[bytes, int]]:
        if node.flags & _FL_INLINE:
            data = node.block[4:] + self._xattrs(node).get("system.data", b"")
            yield from self._parse_dirents(data, node.ino)
            return
        for chunk in self._chunks(node):
            for off in range(0, len(chunk), self.bs):
                yield from self._parse_dirents(chunk[off : off + self.bs], node.ino)

    def _parse_dirents(self, block: bytes, ino: int) -> Iterator[tuple[bytes, int]]:
        off = 0
        while off + 8 <= len(block):
            child, rec_len = u32(block, off), u16(block, off + 4)
            name_len = block[off + 6] if self.filetype else u16(block, off + 6)
            if self.bs == 65536 and rec_len in (0, 65535):
                rec_len = 65536
            if rec_len < 8 or rec_len % 4 or off + rec_len > len(block):
                raise self.bad(f"directory inode {ino}: bad entry length {rec_len} at {off}")
            if child and name_len and 8 + name_len <= rec_len:
                yield block[off + 8 : off + 8 + name_len], child
            off += rec_len

    # --- the walk ----------------------------------------------------------------------------

    def entry(self, path: str, node: _Inode, keep: frozenset[str], listing: Listing) -> Entry:
        kind = KIND_OF_MODE.get(stat.S_IFMT(node.mode))
        if kind is None:
            raise self.bad(f"{path}: inode {node.ino} has unknown file type {node.mode:o}")
        xattrs = tuple(
            sorted((k, xattr_value(v)) for k, v in self._xattrs(node).items() if k != "system.data")
        )
        sha = target = None
        rdev = None
        if kind == "file" and node.size > self.blocks * self.bs:
            # legal (a sparse file may be larger than its filesystem) but hashing a terabyte
            # of holes is not a diff: the entry keeps its size and metadata, no content hash
            listing.unsafe.append(
                f"{path}: content not hashed: a sparse file of {node.size} bytes is larger "
                f"than the filesystem ({self.blocks * self.bs} bytes)"
            )
        elif kind == "file":
            sha = file_sha256(
                path,
                node.size,
                keep,
                listing,
                lambda limit: self._content(node, limit),
                lambda: self._chunks(node),
                self._hashes,
                node.ino,
            )
        elif kind == "symlink" and node.size > MAX_PATH:
            target = unread_symlink(path, node.size, MAX_PATH, listing)
        elif kind == "symlink":
            if node.size < 60 and not node.flags & (_FL_EXTENTS | _FL_INLINE):
                raw = node.block[: node.size]
            else:
                raw = self._content(node, MAX_PATH)
            target = raw.decode("utf-8", "backslashreplace")
        elif kind in ("chardev", "blockdev"):
            old, new = u32(node.block, 0), u32(node.block, 4)
            if old:
                rdev = ((old >> 8) & 0xFF, old & 0xFF)
            else:
                rdev = ((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))
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
        return walk(self, _ROOT_INO, self.blocks * self.bs, keep)


def read_ext4(path: str, opts: ReadOptions) -> Listing:
    """The image's tree. ``path`` may be a slot (a block device, or a file larger than the
    filesystem): only the blocks the superblock counts are read."""
    with open_image(path) as (fd, length):
        try:
            return Ext4Reader(fd, length, path).listing(opts.keep)
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise ImageFormatError(
                f"{path}: not a readable ext4 image: {e}",
                hint="the image is corrupt or truncated; check it with e2fsck -fn",
            ) from e
