"""An export tar read in place: a member index, every member checked, nothing extracted.

``TarMedium`` is a ``localfetch.Medium``: the device's TUF client reads ``metadata/…`` and
``targets/…`` straight out of the archive as byte ranges of the tar file (P3: a name from
the archive is a key in the index, never a path on the device). The index is built once,
before any metadata is read, and refuses the whole archive if one member is not a plain
regular file with a plain relative name:

* absolute names, ``..``, ``.``, empty names, backslashes (``localfetch.split_names``);
* links (hard or symbolic), devices, FIFOs, directories with content semantics, sparse
  members (their bytes are not a single range);
* a name given twice (which one counts would depend on the reader);
* a member whose data runs past the end of the file, or an archive without its end
  marker (two zero blocks): a truncated copy.

Each ``open`` reopens the archive and checks it is still the file that was indexed (device,
inode, size), so a stick swapped or rewritten mid-update is a ``MediumReadError``.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tuf.api import exceptions as tuf_exc

from verifier.errors import MediumError, UnsafeMirrorError
from verifier.tuf.localfetch import MediumReadError, Region, UnsafeMirrorPathError, split_names

#: bounds of an index (P4): an export holds a few dozen files
MAX_MEMBERS = 10_000
MAX_NAME = 1024
_BLOCK = 512
_HINT = "this is not an archive otakit export wrote; do not use it (write a new export)"


@dataclass(frozen=True)
class Member:
    offset: int
    size: int


class TarMedium:
    """The members of one tar file, indexed and checked (use ``TarMedium.index``)."""

    def __init__(self, path: Path, identity: tuple[int, int, int], members: dict[str, Member]):
        self.path = path
        self._identity = identity
        self.members = members

    @classmethod
    def index(cls, path: Path) -> TarMedium:
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                members = _index(f, path, st.st_size)
        except OSError as e:
            raise MediumError(
                f"cannot read the export {path}: {os.strerror(e.errno or 0)}",
                hint="put the medium back (or copy the export again) and retry",
            ) from e
        return cls(path, (st.st_dev, st.st_ino, st.st_size), members)

    def describe(self) -> str:
        return f"export archive {self.path}"

    def open(self, parts: tuple[str, ...]) -> Region:
        name = "/".join(parts)
        where = f"{self.path}:{name}"
        m = self.members.get(name)
        if m is None:
            raise tuf_exc.DownloadHTTPError(f"{where}: not in the export", 404)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise MediumReadError(
                f"cannot open {self.describe()}: {os.strerror(e.errno or 0)} "
                "(was the medium removed?)"
            ) from e
        try:
            st = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise MediumReadError(f"cannot read {where}: {os.strerror(e.errno or 0)}") from e
        if (st.st_dev, st.st_ino, st.st_size) != self._identity:
            os.close(fd)
            raise MediumReadError(
                f"{self.describe()} changed while it was read (expected the file indexed, "
                f"{self._identity[2]} bytes, found {st.st_size} bytes or another file)"
            )
        return Region(fd, m.offset, m.size, where)


def _refuse(path: Path, what: str) -> UnsafeMirrorError:
    return UnsafeMirrorError(f"export archive {path}: {what}", hint=_HINT)


def _index(f: BinaryIO, path: Path, file_size: int) -> dict[str, Member]:
    members: dict[str, Member] = {}
    try:
        tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 (closed below; uncompressed only)
    except tarfile.ReadError as e:
        raise _refuse(path, f"expected an uncompressed tar archive, found none ({e})") from e
    with tar:
        while True:
            try:
                info = tar.next()
            except tarfile.ReadError as e:
                raise MediumError(
                    f"export archive {path}: damaged or truncated ({e})",
                    hint="copy the export again; nothing was changed",
                ) from e
            if info is None:
                break
            if len(members) >= MAX_MEMBERS:
                raise _refuse(path, f"more than {MAX_MEMBERS} members")
            _check_member(path, info)
            if info.name in members:
                raise _refuse(path, f"member {info.name!r} appears twice (expected each once)")
            end = info.offset_data + info.size
            if end > file_size:
                raise MediumError(
                    f"export archive {path}: truncated (member {info.name!r} needs {end} bytes, "
                    f"the file has {file_size})",
                    hint="copy the export again; nothing was changed",
                )
            members[info.name] = Member(info.offset_data, info.size)
        _check_end(f, path, tar.offset, file_size)
    if not members:
        raise _refuse(path, "no members")
    return members


def _check_member(path: Path, info: tarfile.TarInfo) -> None:
    name = info.name
    if len(name) > MAX_NAME:
        raise _refuse(path, f"a member name of {len(name)} characters (at most {MAX_NAME})")
    if name.startswith("/"):
        raise _refuse(path, f"member {name!r} has an absolute name (expected a relative one)")
    try:
        split_names(name, f"member {name!r}")
    except UnsafeMirrorPathError as e:
        raise _refuse(path, str(e)) from e
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.sparse is not None:
        kinds = {
            tarfile.SYMTYPE: "a symbolic link",
            tarfile.LNKTYPE: "a hard link",
            tarfile.CHRTYPE: "a character device",
            tarfile.BLKTYPE: "a block device",
            tarfile.FIFOTYPE: "a FIFO",
            tarfile.DIRTYPE: "a directory",
        }
        found = kinds.get(info.type, f"a member of type {info.type!r}")
        if info.sparse is not None:
            found = "a sparse file"
        raise _refuse(path, f"member {name!r} is {found} (expected only regular files)")


def _check_end(f: BinaryIO, path: Path, offset: int, file_size: int) -> None:
    """The end-of-archive marker (two zero blocks) is there: the copy is complete."""
    f.seek(offset)
    marker = f.read(2 * _BLOCK)
    if len(marker) < 2 * _BLOCK or marker.count(0) != len(marker) or file_size < offset:
        raise MediumError(
            f"export archive {path}: truncated (no end-of-archive marker after the last "
            f"member at byte {offset}, the file has {file_size} bytes)",
            hint="copy the export again; nothing was changed",
        )
