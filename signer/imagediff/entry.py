"""The one record every reader yields for a path in an image, and what a reader returns."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Final, Literal

from repo.errors import ImageFormatError

Kind = Literal["file", "dir", "symlink", "chardev", "blockdev", "fifo", "socket", "hardlink"]

#: Longer xattr values are recorded by hash: a listing stays small whatever the image holds.
XATTR_INLINE_MAX: Final = 64

#: Content kept whole for the package summary (a dpkg status file of a large system is a few
#: MiB); a larger file is hashed like any other and not kept.
KEEP_MAX: Final = 64 << 20

#: More entries than any real OS image holds; a crafted image stops here with a clear error.
MAX_ENTRIES: Final = 5_000_000


@dataclass(frozen=True, slots=True)
class Entry:
    """What a diff compares for one path. ``mode`` is the permission bits (with setuid,
    setgid, sticky); ``sha256`` only for regular files; ``xattrs`` sorted by name, values as
    hex (or ``sha256:...`` when long). Times are left out on purpose: every rebuild changes
    them, and a reviewer asks what the files are, not when they were written."""

    path: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    rdev: tuple[int, int] | None = None
    xattrs: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "sha256": self.sha256,
            "target": self.target,
            "rdev": list(self.rdev) if self.rdev is not None else None,
            "xattrs": dict(self.xattrs),
        }


def xattr_value(value: bytes) -> str:
    if len(value) <= XATTR_INLINE_MAX:
        return value.hex()
    return "sha256:" + hashlib.sha256(value).hexdigest()


@dataclass
class Listing:
    """One image read: its entries by path, the few files kept whole (``keep``), and paths the
    image holds that could not be compared safely (absolute, ``..``, a name with a slash, a
    directory reached twice) — reported, never followed or written anywhere."""

    entries: dict[str, Entry] = field(default_factory=dict)
    kept: dict[str, bytes] = field(default_factory=dict)
    unsafe: list[str] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            raise ImageFormatError(
                f"the image holds more than {MAX_ENTRIES} entries; expected an OS image"
            )
        self.entries[entry.path] = entry


def join(parent: str, name: str) -> str:
    return parent + name if parent.endswith("/") else f"{parent}/{name}"


#: Content is read and hashed in chunks of this size: memory stays flat whatever the file.
CHUNK: Final = 1 << 20

#: The entry kind of a POSIX file-type mode (``stat.S_IFMT``); ext4 and directories share it.
KIND_OF_MODE: Final[dict[int, Kind]] = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def hash_chunks(chunks: Iterable[bytes]) -> str:
    """sha256 of a file read in pieces by a filesystem reader (ext4, erofs)."""
    h = hashlib.sha256()
    for piece in chunks:
        h.update(piece)
    return h.hexdigest()


def unread_symlink(path: str, size: int, limit: int, listing: Listing) -> str:
    """The kernel refuses targets past PATH_MAX: a crafted one is reported, not read."""
    listing.unsafe.append(
        f"{path}: a symlink target of {size} bytes (at most {limit} expected): target not read"
    )
    return f"<{size} bytes, not read>"


def hash_content(f: IO[bytes] | None, path: str, keep: bool, listing: Listing) -> str:
    """sha256 of everything ``f`` yields, read in ``CHUNK``s; with ``keep`` the bytes are
    also kept in ``listing`` (the few small files a summary reads, e.g. dpkg's status)."""
    h = hashlib.sha256()
    parts: list[bytes] = []
    if f is not None:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if keep:
                parts.append(chunk)
    if keep:
        listing.kept[path] = b"".join(parts)
    return h.hexdigest()
