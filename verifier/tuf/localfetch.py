"""A mirror that is not HTTP: a directory (USB stick, mounted image, NFS) or an export tar.

``LocalFetcher`` is an ``OtaFetcher`` like ``HttpFetcher``: TUF refresh, expiry, rollback and
the apply path above it are exactly the online ones; only where bytes come from differs.
A URL is ``file://`` + the mirror root + a relative path; the relative part is split into
names, each checked (no ``..``, ``.``, empty name, NUL or backslash), so no URL can name a
file outside the mirror (P3). Where the bytes are is a ``Medium``:

* ``DirMedium``: the mirror root is opened once per file as a directory, and every further
  name with ``openat`` and ``O_NOFOLLOW`` (directories with ``O_DIRECTORY`` too), so no
  symlink on the medium is followed, in or out of the mirror; the last one must be a regular
  file (a FIFO would block, a device would be read forever).
* a tar archive (``verifier.exporttar``) whose members are indexed and checked up front.

A medium pulled out mid-read shows as EIO, as ENOENT, or as a file shorter than it was when it
was opened: each is a ``MediumReadError`` (a TUF ``DownloadError``, so ngclient stops, and
``failures`` maps it to the transport family, "retry when the medium is back"). A file that
is absent where the root still is answers like HTTP 404 (``DownloadHTTPError``), which is what
ngclient's search for a newer root expects.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib import parse

from tuf.api import exceptions as tuf_exc

from verifier.tuf.fetcher import OtaFetcher

#: bytes read per chunk (the caller bounds totals: ngclient's max lengths, the signed length)
CHUNK = 256 * 1024


class MediumReadError(tuf_exc.DownloadError):
    """The medium could not be read, or changed while it was read (pulled out, failing)."""


class UnsafeMirrorPathError(tuf_exc.DownloadError):
    """A name on the mirror would lead outside it or is not a plain file or directory."""


@dataclass
class Region:
    """The bytes of one file: ``size`` bytes of ``fd`` from ``start`` (owns ``fd``)."""

    fd: int
    start: int
    size: int
    name: str

    def close(self) -> None:
        os.close(self.fd)


class Medium(Protocol):
    """Where a local mirror's files are."""

    def describe(self) -> str: ...

    def open(self, parts: tuple[str, ...]) -> Region:
        """The file at ``parts`` (checked names, relative to the mirror root).

        Raises ``DownloadHTTPError`` (404) when it is absent, ``MediumReadError`` when the
        medium cannot be read, ``UnsafeMirrorPathError`` when the entry is not a plain file.
        """
        ...


def file_url(path: Path) -> str:
    """The ``file://`` URL of an absolute path (the form ``repo_url`` is stored in)."""
    return "file://" + parse.quote(str(path))


def url_path(url: str) -> Path | None:
    """The absolute path of a ``file://`` URL without host, query or fragment (else None)."""
    u = parse.urlsplit(url)
    if u.scheme != "file" or u.netloc not in ("", "localhost") or u.query or u.fragment:
        return None
    path = parse.unquote(u.path)
    if not path.startswith("/") or "\0" in path:
        return None
    return Path(path)


def split_names(rel: str, what: str) -> tuple[str, ...]:
    """``rel`` as a tuple of names, each safe to look up in one directory (P3)."""
    parts = tuple(rel.split("/"))
    for name in parts:
        if name in ("", ".", "..") or "\0" in name or "\\" in name:
            raise UnsafeMirrorPathError(
                f"{what}: expected a path of plain names inside the mirror, found {rel!r}"
            )
    return parts


def _medium_gone(where: str, e: OSError) -> MediumReadError:
    reason = os.strerror(e.errno) if e.errno else str(e)
    return MediumReadError(f"cannot read {where}: {reason} (was the medium removed?)")


class DirMedium:
    """A mirror directory: every name below ``root`` looked up without following links."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"mirror directory {self.root}"

    def open(self, parts: tuple[str, ...]) -> Region:
        where = str(self.root.joinpath(*parts))
        try:
            # The root itself may be reached through links (/media/usb -> /run/media/...):
            # the operator named it. Nothing below it is.
            dirfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise MediumReadError(
                f"{self.describe()} cannot be opened: {os.strerror(e.errno or 0)} "
                "(is the medium mounted?)"
            ) from e
        try:
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                flags |= os.O_NONBLOCK if last else os.O_DIRECTORY
                try:
                    fd = os.open(name, flags, dir_fd=dirfd)
                except OSError as e:
                    raise self._open_failure(parts[: i + 1], e) from e
                os.close(dirfd)
                dirfd = fd
            fd, dirfd = dirfd, -1
        finally:
            if dirfd >= 0:
                os.close(dirfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeMirrorPathError(
                    f"{where}: expected a regular file, found a file of type "
                    f"{stat.filemode(st.st_mode)[0]!r}"
                )
            os.set_blocking(fd, True)
        except OSError as e:
            os.close(fd)
            raise _medium_gone(where, e) from e
        except BaseException:
            os.close(fd)
            raise
        return Region(fd, 0, st.st_size, where)

    def _open_failure(self, parts: tuple[str, ...], e: OSError) -> tuf_exc.DownloadError:
        where = str(self.root.joinpath(*parts))
        if e.errno in (errno.ELOOP, errno.EMLINK) or (
            e.errno == errno.ENOTDIR and Path(where).is_symlink()
        ):
            return UnsafeMirrorPathError(
                f"{where}: a symbolic link on the mirror (links are not followed: expected a "
                "plain file or directory)"
            )
        if e.errno == errno.ENOENT:
            if not self.root.is_dir():
                return MediumReadError(
                    f"{self.describe()} is gone while reading {where} (was the medium removed?)"
                )
            return tuf_exc.DownloadHTTPError(f"{where}: not on the mirror (no such file)", 404)
        if e.errno == errno.ENOTDIR:
            return tuf_exc.DownloadHTTPError(f"{where}: not on the mirror (not a directory)", 404)
        return _medium_gone(where, e)


class LocalFetcher(OtaFetcher):
    """Serves ``file://`` URLs under ``base_url`` from ``medium``, resumable, bounded by the
    size each file had when it was opened."""

    def __init__(self, base_url: str, medium: Medium, *, chunk_size: int = CHUNK) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.medium = medium
        self._chunk = chunk_size
        self._received = 0

    @property
    def bytes_received(self) -> int:
        return self._received

    def _region(self, url: str) -> Region:
        path = url_path(url)
        base = url_path(self.base_url)
        assert base is not None
        if path is None or not str(path).startswith(str(base).rstrip("/") + "/"):
            raise UnsafeMirrorPathError(
                f"{url}: expected a file:// URL inside the mirror {self.base_url}"
            )
        rel = parse.unquote(parse.urlsplit(url).path)[len(str(base).rstrip("/")) + 1 :]
        return self.medium.open(split_names(rel, url))

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._chunks(self._region(url), 0)

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        region = self._region(url)
        start = offset if 0 < offset < region.size else 0
        return start, self._chunks(region, start)

    def _chunks(self, region: Region, offset: int) -> Iterator[bytes]:
        """``region`` from ``offset`` to its size at open; shorter is an error (a pulled
        medium or a file changed under the reader), and so is more."""
        try:
            while offset < region.size:
                want = min(self._chunk, region.size - offset)
                try:
                    data = os.pread(region.fd, want, region.start + offset)
                except OSError as e:
                    raise _medium_gone(region.name, e) from e
                if not data:
                    raise MediumReadError(
                        f"{region.name}: ended after {offset} bytes, expected {region.size} "
                        "(its size when opened): the medium was removed or the file changed"
                    )
                offset += len(data)
                self._received += len(data)
                yield data
            if region.start == 0 and _grew(region):
                raise MediumReadError(
                    f"{region.name}: grew while it was read (expected {region.size} bytes, "
                    "its size when opened): the file changed on the medium"
                )
        finally:
            region.close()


def _grew(region: Region) -> bool:
    try:
        return bool(os.pread(region.fd, 1, region.size))
    except OSError as e:
        raise _medium_gone(region.name, e) from e
