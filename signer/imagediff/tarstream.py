"""Tar archives (and squashfs through ``sqfs2tar``) read as a stream: one pass, no seeks,
nothing extracted. ``tarfile``'s stream mode (``r|*``) hands over each member's header and then
its content, which is hashed in chunks and dropped.

A member name that is absolute or climbs out with ``..`` is what a crafted archive uses to
write outside the extraction directory; here nothing is extracted, so such a name is only
reported (``Listing.unsafe``) and left out of the comparison.
"""

from __future__ import annotations

import dataclasses
import posixpath
import tarfile
from typing import IO, Final

from repo.errors import ImageFormatError
from signer.imagediff.entry import KEEP_MAX, Entry, Kind, Listing, hash_content, xattr_value
from signer.imagediff.source import ReadOptions

_PAX_XATTR: Final = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")

_KINDS: Final[dict[bytes, Kind]] = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "chardev",
    tarfile.BLKTYPE: "blockdev",
    tarfile.FIFOTYPE: "fifo",
}


def member_path(name: str) -> str | None:
    """The image path of a member name (``./etc/x`` and ``etc/x`` are ``/etc/x``), or None
    when the name is absolute or climbs out of the archive."""
    if name.startswith("/") or ".." in name.split("/"):
        return None
    norm = posixpath.normpath("/" + name)
    return "/" if norm in ("/", "//") else norm


def read_tar_stream(stream: IO[bytes], what: str, keep: frozenset[str]) -> Listing:
    listing = Listing()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                _member(tar, member, listing, keep)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise ImageFormatError(
            f"{what}: not a readable tar stream: {e}",
            hint="the archive (or the image it was made from) is corrupt or truncated",
        ) from e
    return listing


def _member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, listing: Listing, keep: frozenset[str]
) -> None:
    path = member_path(member.name)
    if path is None:
        listing.unsafe.append(f"{member.name!r}: an absolute or '..' member name")
        return
    kind = _KINDS.get(member.type)
    if kind is None:
        return  # GNU long-name and similar records are folded in by tarfile already
    xattrs = tuple(
        sorted(
            (key.split(".xattr.", 1)[1], xattr_value(value.encode("utf-8", "surrogateescape")))
            for key, value in member.pax_headers.items()
            if key.startswith(_PAX_XATTR)
        )
    )
    sha = target = None
    rdev = None
    size = 0
    if kind == "hardlink":
        linked = member_path(member.linkname)
        first = listing.entries.get(linked) if linked else None
        if first is None:
            listing.unsafe.append(f"{path}: a hard link to {member.linkname!r}, not in the archive")
            return
        listing.add(dataclasses.replace(first, path=path))
        return
    if kind == "file":
        size = member.size
        fileobj = tar.extractfile(member)  # a view of the stream, nothing written
        sha = hash_content(fileobj, path, path in keep and size <= KEEP_MAX, listing)
    elif kind == "symlink":
        target = member.linkname
        size = len(target.encode("utf-8", "surrogateescape"))
    elif kind in ("chardev", "blockdev"):
        rdev = (member.devmajor, member.devminor)
    listing.add(
        Entry(
            path=path,
            kind=kind,
            mode=member.mode & 0o7777,
            uid=member.uid,
            gid=member.gid,
            size=size,
            sha256=sha,
            target=target,
            rdev=rdev,
            xattrs=xattrs,
        )
    )


def read_tar(path: str, opts: ReadOptions) -> Listing:
    with open(path, "rb") as f:
        return read_tar_stream(f, path, opts.keep)
