"""The one way otakit hashes a file: sha256 over a byte range, in bounded chunks, one pass.

P2 ("hash exactly the bytes you use, in one pass from a file descriptor you own"): the caller
opens the file and keeps it; this reads through that descriptor with ``pread`` (so the file
position is left alone and a stream can still be decoded from offset 0 afterwards), never
holds more than one chunk, and reports how many bytes it actually saw — a short file is the
caller's error to name, not a silent smaller hash.

``Hasher`` is the incremental piece for code that hashes bytes as it produces or writes them
(a decoder, a compressor's sink, a copy), so such code counts and hashes in one object.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

#: Read size: large enough for throughput, small enough to keep memory flat on a device.
CHUNK = 1 << 20

#: Called with the number of bytes hashed so far, after every chunk.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Digest:
    """What was hashed: how many bytes, and their sha256 (lowercase hex)."""

    length: int
    sha256: str


class Hasher:
    """sha256 and byte count of everything passed to ``update``, in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.length = 0

    def update(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self.length += len(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def digest(self) -> Digest:
        return Digest(self.length, self._sha.hexdigest())


def _check_range(offset: int, length: int | None, chunk: int) -> None:
    if offset < 0 or (length is not None and length < 0) or chunk <= 0:
        raise ValueError(f"hash range: offset {offset}, length {length}, chunk {chunk}")


def _hash_blocks(
    read: Callable[[int, int], bytes],
    offset: int,
    length: int | None,
    chunk: int,
    progress: Progress | None,
) -> Digest:
    """The one hashing loop: ``read(position, size)`` until ``length`` or end of file."""
    _check_range(offset, length, chunk)
    h = Hasher()
    while length is None or h.length < length:
        block = read(offset + h.length, chunk if length is None else min(chunk, length - h.length))
        if not block:
            break
        h.update(block)
        if progress is not None:
            progress(h.length)
    return h.digest()


def hash_fd(
    fd: int,
    *,
    offset: int = 0,
    length: int | None = None,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> Digest:
    """Hash ``length`` bytes of ``fd`` from ``offset`` (to end of file when None).

    Stops early at end of file: the returned length says how much was there.
    """
    return _hash_blocks(lambda pos, n: os.pread(fd, n, pos), offset, length, chunk, progress)


def hash_file(
    f: BinaryIO,
    *,
    offset: int = 0,
    length: int | None = None,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> Digest:
    """``hash_fd`` over an open binary file; a file without a descriptor is read by seeking."""
    try:
        fd = f.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd >= 0:
        return hash_fd(fd, offset=offset, length=length, chunk=chunk, progress=progress)
    _check_range(offset, length, chunk)
    f.seek(offset)
    return _hash_blocks(lambda _pos, n: f.read(n), offset, length, chunk, progress)


def hash_path(
    path: Path,
    *,
    offset: int = 0,
    length: int | None = None,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> Digest:
    """Open ``path`` read-only and hash a range of it. ``OSError`` is the caller's to word."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd, offset=offset, length=length, chunk=chunk, progress=progress)
    finally:
        os.close(fd)
