"""Every persistent effect the device makes goes through one ``Disk``.

Invariant I3 (every state change atomic and durable) and the crash sweep of the test suite
both depend on this: a test substitutes a simulated disk that counts each primitive, cuts
power after effect *k* and discards whatever was not covered by an fsync. Code above this
layer never calls ``open(..., 'w')``, ``os.replace`` or ``os.fsync`` directly.

Primitives are deliberately few: open a file for writing (optionally without truncating, for
slots and block devices), positional write, fsync, rename, unlink, fsync of a directory.
``write_atomic`` composes them into the temp-fsync-rename-fsync(dir) pattern.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO, Protocol

from verifier.errors import StorageError


class WriteHandle(Protocol):
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def fsync(self) -> None: ...
    def close(self) -> None: ...


class Disk(Protocol):
    """The storage primitives of a device. Reads are not effects and use normal files."""

    def open_write(self, path: Path, *, truncate: bool) -> WriteHandle: ...
    def rename(self, src: Path, dst: Path) -> None: ...
    def unlink(self, path: Path) -> None: ...
    def fsync_dir(self, path: Path) -> None: ...
    def mkdir(self, path: Path) -> None: ...


def storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    """The one diagnostic for a failed storage primitive (also what a simulated disk raises)."""
    reason = errno.errorcode.get(exc.errno or 0, "error") + f" ({exc.strerror})"
    hint = None
    if exc.errno == errno.ENOSPC:
        hint = "free space on the device; the running image and trusted state are unchanged"
    return StorageError(f"{what} {path}: {reason}", hint=hint)


class _RealHandle:
    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self._fd, view, offset)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
                offset += n
        except OSError as e:
            raise storage_error("cannot write", self._path, e) from e

    def fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise storage_error("cannot sync", self._path, e) from e

    def close(self) -> None:
        os.close(self._fd)


class RealDisk:
    """The real thing: POSIX calls, every failure turned into a ``StorageError``."""

    def open_write(self, path: Path, *, truncate: bool) -> WriteHandle:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        if truncate:
            flags |= os.O_TRUNC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            raise storage_error("cannot open for writing", path, e) from e
        return _RealHandle(path, fd)

    def rename(self, src: Path, dst: Path) -> None:
        try:
            src.replace(dst)
        except OSError as e:
            raise storage_error(f"cannot rename {src} to", dst, e) from e

    def unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise storage_error("cannot remove", path, e) from e

    def fsync_dir(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise storage_error("cannot sync directory", path, e) from e

    def mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error("cannot create directory", path, e) from e


class DiscardHandle:
    """A ``WriteHandle`` that keeps nothing: for decoding only to check (the decoders hash
    every byte they write), as the publisher's self-checks do."""

    def pwrite(self, data: bytes, offset: int) -> None:
        pass

    def fsync(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_atomic(disk: Disk, path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that after a crash it holds the old or the new bytes.

    temp file in the same directory → write → fsync → rename over → fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    h = disk.open_write(tmp, truncate=True)
    try:
        h.pwrite(data, 0)
        h.fsync()
    finally:
        h.close()
    disk.rename(tmp, path)
    disk.fsync_dir(path.parent)


def copy_stream(disk: Disk, src: BinaryIO, path: Path, *, chunk: int = 1 << 20) -> int:
    """Write a stream to a new file durably (truncate, write, fsync). Returns bytes written."""
    h = disk.open_write(path, truncate=True)
    offset = 0
    try:
        while block := src.read(chunk):
            h.pwrite(block, offset)
            offset += len(block)
        h.fsync()
    finally:
        h.close()
    return offset
