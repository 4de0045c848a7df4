"""What kind of image a file holds, from the magic numbers in its first bytes. Pure.

A release pipeline that signs whatever file it is handed will, sooner or later, sign the wrong
one (a log, a checksum list, ``/etc/passwd``) and a device will write it to its inactive slot
and boot it. Filesystem and disk-image formats all start with a fixed signature at a fixed
offset, so a few kilobytes tell them apart from everything else; that is all this module does.
It lives on the device side because both sides must agree on the names: the publisher records
the detected name in signed ``custom`` metadata, and a device configured with the type its
slots hold refuses a target of another type.

The names are a closed set. ``ext4`` stands for the whole ext2/3/4 family (one superblock
layout, one magic, mounted by the same kernel driver). ``raw`` is never detected: it is the
publisher's explicit "this is an image without a known signature, release it anyway".

Each check demands more than the magic where the magic is short (ext4's is two bytes, so one
file in 65,536 of random bytes carries it): a plausible superblock field next to it, a tar
header checksum, a FAT BIOS parameter block. The order resolves the one real overlap: a GPT
disk starts with a protective MBR, and a FAT boot sector ends with the same ``55 AA`` as an
MBR, so GPT is tried before FAT and FAT before a plain MBR partition table.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, Literal, TypeGuard

ImageType = Literal["ext4", "squashfs", "erofs", "btrfs", "vfat", "gpt", "mbr", "tar", "raw"]

#: Every name, in documentation order; ``raw`` last (explicit only, never detected).
IMAGE_TYPES: Final[tuple[ImageType, ...]] = (
    "ext4",
    "squashfs",
    "erofs",
    "btrfs",
    "vfat",
    "gpt",
    "mbr",
    "tar",
    "raw",
)
#: The names ``detect`` can return.
DETECTABLE: Final[tuple[ImageType, ...]] = IMAGE_TYPES[:-1]

#: Bytes ``detect`` needs: the btrfs primary superblock (64 KiB in) plus a margin.
HEAD_LENGTH: Final = 65536 + 4096

_BTRFS_SB = 65536


def is_image_type(value: object) -> TypeGuard[ImageType]:
    return isinstance(value, str) and value in IMAGE_TYPES


def detect(head: bytes) -> ImageType | None:
    """The type of the image whose first bytes are ``head`` (at least ``HEAD_LENGTH`` of them
    when the image is that long), or None when no known signature is there."""
    for name, check in _CHECKS:
        if check(head):
            return name
    return None


def describe_unknown(head: bytes, length: int) -> str:
    """What an unrecognised file looks like, for an error message ("what was found")."""
    if length == 0:
        return "an empty file"
    what = f"a {length}-byte file with no known filesystem or disk-image signature"
    sample = head[:24]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        text = sample.decode("ascii").replace("\n", "\\n")
        return f"{what} (it starts with text: {text!r})"
    if not any(head):
        return f"{what} (its first {len(head)} bytes are all zero)"
    return what


# Little-endian header fields, shared with the publisher's image readers (signer.imagediff).
def u16(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", b, off)[0])


def u32(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", b, off)[0])


def u64(b: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", b, off)[0])


def _ext4(b: bytes) -> bool:
    sb = 1024
    if len(b) < sb + 1024 or b[sb + 56 : sb + 58] != b"\x53\xef":
        return False
    inodes, blocks = u32(b, sb), u32(b, sb + 4)
    log_block = u32(b, sb + 24)  # block size = 1024 << log_block: 1 KiB .. 64 KiB
    rev = u32(b, sb + 76)
    return inodes > 0 and blocks > 0 and log_block <= 6 and rev <= 1


def _squashfs(b: bytes) -> bool:
    if len(b) < 96 or b[:4] != b"hsqs":
        return False
    block_size, block_log = u32(b, 12), u16(b, 22)
    major = u16(b, 28)
    return major == 4 and 12 <= block_log <= 20 and block_size == 1 << block_log


def _erofs(b: bytes) -> bool:
    sb = 1024
    if len(b) < sb + 128 or b[sb : sb + 4] != b"\xe2\xe1\xf5\xe0":
        return False
    return 9 <= b[sb + 12] <= 16  # blkszbits: 512 B .. 64 KiB blocks


def _btrfs(b: bytes) -> bool:
    """The primary superblock's magic, and its own recorded offset (``bytenr``) = 64 KiB."""
    if b[_BTRFS_SB + 64 : _BTRFS_SB + 72] != b"_BHRfS_M":
        return False
    return int(struct.unpack_from("<Q", b, _BTRFS_SB + 48)[0]) == _BTRFS_SB


def _boot_signature(b: bytes) -> bool:
    return len(b) >= 512 and b[510:512] == b"\x55\xaa"


def _gpt(b: bytes) -> bool:
    """A GPT header at LBA 1 (512- or 4096-byte sectors) behind a protective MBR."""
    if not _boot_signature(b):
        return False
    protective = any(b[446 + 16 * i + 4] == 0xEE for i in range(4))
    for lba1 in (512, 4096):
        hdr = b[lba1 : lba1 + 92]
        if len(hdr) == 92 and hdr[:8] == b"EFI PART" and protective:
            size = u32(hdr, 12)
            if u32(hdr, 8) == 0x00010000 and 92 <= size <= lba1:
                return True
    return False


def _vfat(b: bytes) -> bool:
    """A FAT boot sector: x86 jump, a sane BIOS parameter block and a 'FAT' type label.

    An MBR also ends in ``55 AA`` and may start with a jump; what it lacks is the BPB (bytes
    per sector, a power-of-two cluster size, reserved sectors, one or two FATs) and the file
    system type label at offset 54 (FAT12/16) or 82 (FAT32).
    """
    if not _boot_signature(b) or not ((b[0] == 0xEB and b[2] == 0x90) or b[0] == 0xE9):
        return False
    bytes_per_sector = u16(b, 11)
    per_cluster = b[13]
    reserved = u16(b, 14)
    fats = b[16]
    if bytes_per_sector not in (512, 1024, 2048, 4096) or per_cluster == 0:
        return False
    if per_cluster & (per_cluster - 1) or reserved == 0 or fats not in (1, 2):
        return False
    return b[54:57] == b"FAT" or b[82:87] == b"FAT32"


def _mbr(b: bytes) -> bool:
    """A classic partition table: four entries, valid status bytes, at least one in use."""
    if not _boot_signature(b):
        return False
    used = 0
    for i in range(4):
        entry = b[446 + 16 * i : 462 + 16 * i]
        if entry[0] not in (0x00, 0x80):
            return False
        ptype, start, count = entry[4], u32(entry, 8), u32(entry, 12)
        if ptype == 0:
            continue
        if start == 0 or count == 0:
            return False
        used += 1
    return used > 0


def _tar(b: bytes) -> bool:
    """A ustar (POSIX or GNU) header whose checksum is right."""
    if len(b) < 512 or b[257:262] != b"ustar":
        return False
    field = b[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    header = b[:148] + b" " * 8 + b[156:512]
    return stored in (sum(header), sum(x - 256 if x > 127 else x for x in header))


_CHECKS: Final[tuple[tuple[ImageType, Callable[[bytes], bool]], ...]] = (
    ("squashfs", _squashfs),
    ("tar", _tar),
    ("gpt", _gpt),
    ("vfat", _vfat),
    ("mbr", _mbr),
    ("ext4", _ext4),
    ("erofs", _erofs),
    ("btrfs", _btrfs),
)
