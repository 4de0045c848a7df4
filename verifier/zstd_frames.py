"""Walk the zstd frames of a stream as it goes by, so each frame's declared content size is
checked against what the frame really decodes to (RFC 8878, section 3.1.1).

Why not let zstd check it: zstd refuses a frame whose data disagrees with its declared size,
but says only "Destination buffer is too small" or "Data corruption detected", and for a
single-segment frame the declared size *is* the window, so a lie reads as a window problem.
The device must say what was declared and what was found (issue 9). So each frame is handed
to zstd with its header rewritten *without* the content size (the window kept: a
single-segment frame gets the smallest window that holds its declared size, at least one
block), the caller counts what it decodes to, and compares.

Only headers and block headers are parsed here (3 bytes each, sizes bounded by the format's
128 KiB block limit); everything else is passed through to zstd unread. Skippable frames are
skipped. The stream is read forward only, in bounded pieces: memory does not grow with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK, _SKIPPABLE = 0xFFFFFFF0, 0x184D2A50
#: RFC 8878 Block_Maximum_Size
MAX_BLOCK = 128 << 10
_FCS_SIZES = (0, 2, 4, 8)
_DID_SIZES = (0, 1, 2, 4)


class FrameError(ValueError):
    """The stream is not a sequence of well-formed zstd frames (the message says where)."""


@dataclass(frozen=True)
class FrameHeader:
    offset: int  #: where the frame starts in the compressed stream
    declared: int | None  #: Frame_Content_Size, if the frame has one
    window: int  #: the window it needs
    checksum: bool
    stripped: bytes  #: the header rewritten without a content size


def window_descriptor(size: int) -> tuple[int, int]:
    """The smallest window zstd can describe that holds ``size`` bytes: (descriptor, window)."""
    for exponent in range(32):
        base = 1 << (10 + exponent)
        for mantissa in range(8):
            window = base + (base >> 3) * mantissa
            if window >= size:
                return (exponent << 3) | mantissa, window
    raise FrameError(f"no zstd window holds {size} bytes")


def _window(descriptor: int) -> int:
    base = 1 << (10 + (descriptor >> 3))
    return base + (base >> 3) * (descriptor & 7)


def parse_header(data: bytes, offset: int, *, max_window: int) -> FrameHeader:
    """Parse a complete frame header (``data`` holds at least ``header_length`` bytes).

    ``max_window`` caps the window given to a rewritten single-segment frame (which needs
    only its content size, but gets at least one block's worth when the limit allows)."""
    fhd = data[4]
    fcs_flag, single, checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    pos = 5 if single else 6
    did = data[pos : pos + _DID_SIZES[did_flag]]
    pos += len(did)
    fcs_size = _FCS_SIZES[fcs_flag] or (1 if single else 0)
    declared = None
    if fcs_size:
        declared = int.from_bytes(data[pos : pos + fcs_size], "little")
        declared += 256 if fcs_size == 2 else 0
    if single:
        assert declared is not None  # a single-segment frame always has a content size
        needed = declared
        wd, _ = window_descriptor(max(declared, min(MAX_BLOCK, max_window)))
    else:
        wd = data[5]
        needed = _window(wd)
    stripped = ZSTD_MAGIC.to_bytes(4, "little") + bytes([fhd & 0b111, wd]) + did
    return FrameHeader(offset, declared, needed, bool(checksum), stripped)


def strip_content_size(frame: bytes, *, max_window: int) -> tuple[FrameHeader, bytes]:
    """A whole frame in memory, rewritten without its content size (see the module doc)."""
    if len(frame) < 5 or int.from_bytes(frame[:4], "little") != ZSTD_MAGIC:
        raise FrameError("not a zstd frame")
    n = header_length(frame[4])
    if len(frame) < n:
        raise FrameError(f"frame header needs {n} bytes, found {len(frame)}")
    header = parse_header(frame[:n], 0, max_window=max_window)
    return header, header.stripped + frame[n:]


def header_length(fhd: int) -> int:
    if fhd & 0b1000:
        raise FrameError("reserved bit set in the frame header descriptor")
    single = (fhd >> 5) & 1
    fcs = _FCS_SIZES[fhd >> 6] or (1 if single else 0)
    return 5 + (0 if single else 1) + _DID_SIZES[fhd & 3] + fcs


class FrameSplitter:
    """The frames of ``src``, one at a time: ``next()`` returns the next frame's header and a
    reader of that frame alone (header rewritten), or None at a clean end of the stream."""

    def __init__(self, src: BinaryIO, *, max_window: int, read_size: int = 1 << 17) -> None:
        self._src = src
        self._max_window = max_window
        self._read_size = read_size
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._eof = False
        self._current: FrameReader | None = None

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n and not self._eof:
            chunk = self._src.read(max(self._read_size, n - len(self._buf)))
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk
        return len(self._buf) >= n

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise FrameError(
                f"stream ends inside {what} at byte {self._offset + len(self._buf)}: expected "
                f"{n} more bytes, found {len(self._buf)}"
            )
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self._offset += n
        return out

    def _take_some(self, n: int, what: str) -> bytes:
        """Up to ``n`` bytes (at least one): a block body is passed on in pieces."""
        if not self._buf and not self._eof:
            chunk = self._src.read(max(self._read_size, n))
            if len(chunk) <= n:  # the common case: pass the source's chunk on as it is
                self._offset += len(chunk)
                self._eof = not chunk
                if chunk:
                    return chunk
            else:
                self._buf += chunk
        if not self._buf:
            raise FrameError(f"stream ends inside {what} at byte {self._offset}")
        out = bytes(self._buf[:n])
        del self._buf[: len(out)]
        self._offset += len(out)
        return out

    def next(self) -> tuple[FrameHeader, FrameReader] | None:
        if self._current is not None:
            self._current.finish()
        while True:
            if not self._fill(4):
                if self._buf:
                    raise FrameError(
                        f"{len(self._buf)} stray bytes after the last frame at byte {self._offset}"
                    )
                return None
            start = self._offset
            magic = int.from_bytes(self._buf[:4], "little")
            if magic & _SKIPPABLE_MASK == _SKIPPABLE:
                size = int.from_bytes(self._take(8, "a skippable frame header")[4:], "little")
                while size:
                    size -= len(self._take_some(min(size, self._read_size), "a skippable frame"))
                continue
            if magic != ZSTD_MAGIC:
                raise FrameError(
                    f"expected a zstd frame at byte {start}, found magic {magic:#010x}"
                )
            if not self._fill(5):
                raise FrameError(f"stream ends inside the frame header at byte {start}")
            raw = self._take(header_length(self._buf[4]), "a frame header")
            header = parse_header(raw, start, max_window=self._max_window)
            self._current = FrameReader(self._blocks(header))
            return header, self._current

    def _blocks(self, header: FrameHeader) -> Iterator[bytes]:
        yield header.stripped
        where = f"the zstd frame at byte {header.offset}"
        while True:
            at = self._offset
            raw = self._take(3, f"a block header of {where}")
            value = int.from_bytes(raw, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise FrameError(f"reserved block type at byte {at} of {where}")
            if size > MAX_BLOCK:
                raise FrameError(f"block at byte {at} of {where}: {size} bytes, limit {MAX_BLOCK}")
            yield raw
            body = 1 if kind == 1 else size  # an RLE block stores one byte
            while body:
                piece = self._take_some(min(body, self._read_size), f"a block of {where}")
                body -= len(piece)
                yield piece
            if last:
                break
        if header.checksum:
            yield self._take(4, f"the checksum of {where}")


class FrameReader:
    """A file-like reader of one frame's bytes, for ``ZstdDecompressor.stream_reader``."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if not self._buf and not self._done and n > 0:
            piece = next(self._pieces, None)
            if piece is None:
                self._done = True
                return b""
            if len(piece) <= n:
                return piece
            self._buf = piece
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._pieces)
            except StopIteration:
                self._done = True
        if n < 0:
            n = len(self._buf)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def finish(self) -> None:
        """Consume what zstd left of the frame (nothing, for a well-formed frame)."""
        if self.read(-1):
            raise FrameError("zstd stopped before the end of the frame's blocks")
