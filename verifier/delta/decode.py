"""Apply a delta container: stream it once, read the base, write the verified result.

Order of checks (P1: verify before you parse or expand):

1. read exactly ``header_ref.length`` bytes and compare their sha256 with the signed value;
2. parse the prefix, check it names the signed base and result, walk the whole op table;
3. optionally hash the whole base against the signed base hash (before any write);
4. for each op: build its output in memory (at most ``max_op_length`` bytes), compare its
   sha256 with the op's hash, and only then write it;
5. the sha256 of all output must equal the signed result hash, and the stream must end.

The delta is read strictly sequentially (it may be a network stream); memory is bounded by the
header (<= 16 MiB), one op's output and data (<= 8 MiB each), one reference (<= 16 MiB) and a
zstd context whose window is bounded — independent of the image size. A DIFF op adds its
decoded content (the output plus a control table of at most 12 bytes per 8 output bytes) and
the few op-sized big integers of the byte-wise addition.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO

import zstandard

from verifier.artifact import ImageRef
from verifier.delta.bytewise import add_bytes
from verifier.delta.format import (
    MAX_HEADER_LENGTH,
    Header,
    Op,
    OpKind,
    diff_content_length,
    iter_ops,
    max_diff_entries,
    parse_diff_control,
    validate_header,
)
from verifier.effects import WriteHandle
from verifier.errors import (
    DecodeLimitError,
    DeltaFormatError,
    ImageHashMismatchError,
    StorageError,
    TargetVerificationError,
)
from verifier.hashing import hash_file
from verifier.zstd_frames import FrameError, strip_content_size

_READ_CHUNK = 4 << 20


def apply_delta(
    delta: BinaryIO,
    base: BinaryIO,
    out: WriteHandle,
    *,
    base_ref: ImageRef,
    result_ref: ImageRef,
    header_ref: ImageRef,
    progress: Callable[[int], None] | None = None,
    check_base: bool = True,
) -> None:
    """Rebuild the signed result image into ``out`` from ``base`` and the ``delta`` stream.

    ``check_base=False`` skips hashing the whole base up front, for callers that already
    verified the active slot against ``base_ref`` (the per-op hashes still catch any base
    byte that differs). On any error the caller must treat ``out`` as invalid: bytes of
    verified ops may already have been written. ``out`` is fsynced, not closed.
    """
    blob = _read_header(delta, header_ref)
    header = validate_header(blob, base_ref=base_ref, result_ref=result_ref)
    if check_base:
        _check_base(base, header.base)
    decoder = _OpDecoder(header, base)
    writer = _HashingWriter(out)
    try:
        written = 0
        for op in iter_ops(blob, header):
            data = _read_exact(delta, op.data_length, f"data of the op at {op.dst_offset}")
            output = decoder.produce(op, data)
            del data
            if decoder.digest(op, output) != op.sha256:
                raise ImageHashMismatchError(
                    f"delta op at result offset {op.dst_offset} ({op.kind.name}, "
                    f"{op.dst_length} bytes): output does not match its signed sha256",
                    hint="the base image or the delta is corrupt; the device will use the full "
                    "image",
                )
            writer.put(output, op.dst_offset)
            written += op.dst_length
            if progress is not None:
                progress(written)
        if delta.read(1):
            raise DeltaFormatError(
                f"delta container: unexpected bytes after the {header.payload_length}-byte payload"
            )
    except BaseException:
        writer.abort()
        raise
    digest = writer.finish()
    if digest != result_ref.sha256:
        raise ImageHashMismatchError(
            f"delta result: expected sha256 {result_ref.sha256}, rebuilt image has {digest}"
        )
    out.fsync()


class _HashingWriter:
    """Hashes and writes verified op outputs on a second thread, in order.

    hashlib and pwrite release the GIL, so the result hash and the slot writes overlap with
    reading, decoding and hashing the next op. At most two outputs wait in the queue, which
    keeps memory bounded.
    """

    def __init__(self, out: WriteHandle) -> None:
        self._out = out
        self._queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue(maxsize=2)
        self._hash = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="delta-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._hash.update(item[0])
                    self._out.pwrite(item[0], item[1])
                except BaseException as e:  # re-raised on the caller's thread
                    self._error = e

    def put(self, data: bytes, offset: int) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((data, offset))

    def abort(self) -> None:
        """Stop after the queued writes, keeping the caller's error as the one reported."""
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> str:
        """Wait for every queued write; re-raise a write error; return the result hash."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    parts: list[bytes] = []
    missing = n
    while missing:
        chunk = stream.read(min(missing, _READ_CHUNK))
        if not chunk:
            raise DeltaFormatError(
                f"delta container truncated: expected {n} bytes of {what}, "
                f"stream ended after {n - missing}"
            )
        parts.append(chunk)
        missing -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_header(delta: BinaryIO, header_ref: ImageRef) -> bytes:
    if not 0 < header_ref.length <= MAX_HEADER_LENGTH:
        raise DecodeLimitError(
            f"delta header: signed length must be in 1..{MAX_HEADER_LENGTH}, "
            f"found {header_ref.length}"
        )
    blob = _read_exact(delta, header_ref.length, "header")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != header_ref.sha256:
        raise TargetVerificationError(
            f"delta header: expected sha256 {header_ref.sha256} from signed metadata, "
            f"found {digest}",
            hint="the artifact was modified or corrupted in transit; it is not used",
        )
    return blob


def _pread_exact(base: BinaryIO, offset: int, length: int) -> bytes:
    """Positional read of the base; a short read means the slot is smaller than signed."""
    try:
        fd = base.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd >= 0:
        data = os.pread(fd, length, offset)
        while 0 < len(data) < length:  # short reads are legal for pread
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
    else:
        base.seek(offset)
        data = base.read(length)
    if len(data) != length:
        raise StorageError(
            f"base image: expected {length} bytes at offset {offset}, found {len(data)}",
            hint="the active slot is shorter than the signed base image length",
        )
    return data


def _check_base(base: BinaryIO, expected: ImageRef) -> None:
    found = hash_file(base, length=expected.length, chunk=_READ_CHUNK)
    if found.length != expected.length:
        raise StorageError(
            f"base image: expected {expected.length} bytes, found {found.length}",
            hint="the active slot is shorter than the signed base image length",
        )
    if found.sha256 != expected.sha256:
        raise ImageHashMismatchError(
            f"delta base: expected the active slot to hash to {expected.sha256} "
            f"over {expected.length} bytes, found {found.sha256}",
            hint="the device will use the full image instead",
        )


class _OpDecoder:
    """Produces one op's output; holds the bounded zstd decoder state between ops."""

    def __init__(self, header: Header, base: BinaryIO) -> None:
        self._header = header
        self._base = base
        self._max_window = 1 << header.limits.max_window_log
        self._plain = zstandard.ZstdDecompressor(max_window_size=self._max_window)
        self._ref_src: tuple[tuple[int, int], ...] = ()
        self._ref_bytes = b""
        self._zero_digests: dict[int, bytes] = {}
        self._ref_dctx = self._plain

    def digest(self, op: Op, output: bytes) -> bytes:
        """sha256 of an op's output; zero fills of a length seen before are not rehashed."""
        if op.kind is not OpKind.ZERO:
            return hashlib.sha256(output).digest()
        known = self._zero_digests.get(op.dst_length)
        if known is None:
            known = hashlib.sha256(output).digest()
            if len(self._zero_digests) < 64:
                self._zero_digests[op.dst_length] = known
        return known

    def produce(self, op: Op, data: bytes) -> bytes:
        if op.kind is OpKind.ZERO:
            return bytes(op.dst_length)
        if op.kind is OpKind.COPY:
            return b"".join(_pread_exact(self._base, off, n) for off, n in op.src)
        if op.kind is OpKind.DIFF:
            return self._diff(op, data)
        self._check_frame(op, data)
        dctx = self._plain if op.kind is OpKind.ZSTD else self._reference(op.src)
        return self._decompress(op, dctx, data, op.dst_length)

    def _decompress(
        self, op: Op, dctx: zstandard.ZstdDecompressor, data: bytes, expected: int
    ) -> bytes:
        try:
            output: bytes = dctx.decompress(data, max_output_size=expected, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise self._undecodable(op, dctx, data, e, expected) from e
        if len(output) != expected:
            raise DeltaFormatError(
                f"delta op at result offset {op.dst_offset}: expected {expected} bytes "
                f"of output, zstd produced {len(output)}"
            )
        return output

    def _diff(self, op: Op, data: bytes) -> bytes:
        """Window bytes named by the control table (zeros under literals) plus the stream."""
        where = f"delta op at result offset {op.dst_offset}"
        bound = diff_content_length(max_diff_entries(op.dst_length), op.dst_length)
        params = self._frame_params(op, data)
        size = params.content_size
        if not diff_content_length(0, op.dst_length) <= size <= bound:
            raise DeltaFormatError(
                f"{where}: DIFF frame must declare a content size in "
                f"{diff_content_length(0, op.dst_length)}..{bound}, found {size}"
            )
        self._check_window(op, params)
        dctx = self._reference(op.src)
        window = self._ref_bytes
        content = memoryview(self._decompress(op, dctx, data, size))
        entries = parse_diff_control(
            content, dst_length=op.dst_length, window_length=len(window), where=where
        )
        old: list[bytes | memoryview] = []
        view = memoryview(window)
        for diff, extra, offset in entries:
            if diff:
                old.append(view[offset : offset + diff])
            if extra:
                old.append(bytes(extra))
        return add_bytes(b"".join(old), content[size - op.dst_length :])

    def _undecodable(
        self,
        op: Op,
        dctx: zstandard.ZstdDecompressor,
        data: bytes,
        e: zstandard.ZstdError,
        expected: int,
    ) -> DeltaFormatError:
        """Why a frame failed: zstd reports a lying content size as "buffer too small" or
        "corruption", so decode the frame again without it and say what it really holds."""
        where = f"delta op at result offset {op.dst_offset}"
        try:
            _, stripped = strip_content_size(data, max_window=self._max_window)
            limit = 2 * expected + 1
            with dctx.stream_reader(stripped, read_across_frames=False) as r:
                real = 0
                while real <= limit and (chunk := r.read(1 << 20)):
                    real += len(chunk)
        except (zstandard.ZstdError, FrameError):
            return DeltaFormatError(f"{where}: zstd frame does not decode: {e}")
        if real == expected:
            return DeltaFormatError(f"{where}: zstd frame does not decode: {e}")
        found = f"more than {limit}" if real > limit else str(real)
        return DeltaFormatError(
            f"{where}: zstd frame declares a content size of {expected} bytes but "
            f"decodes to {found} bytes"
        )

    def _reference(self, src: tuple[tuple[int, int], ...]) -> zstandard.ZstdDecompressor:
        """A decompressor over base extents ``src``; consecutive ops sharing a reference
        zone reuse it, so each zone is read from the base once."""
        if src != self._ref_src:
            self._ref_dctx = self._plain  # drop the old reference before reading the next
            self._ref_bytes = b""
            ref = b"".join(_pread_exact(self._base, off, n) for off, n in src)
            dictionary = zstandard.ZstdCompressionDict(
                ref, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            self._ref_bytes = ref  # DIFF ops add to these bytes
            self._ref_dctx = zstandard.ZstdDecompressor(
                dict_data=dictionary, max_window_size=self._max_window
            )
            self._ref_src = src
        return self._ref_dctx

    def _frame_params(self, op: Op, data: bytes) -> zstandard.FrameParameters:
        where = f"delta op at result offset {op.dst_offset}"
        try:
            return zstandard.get_frame_parameters(data)
        except zstandard.ZstdError as e:
            raise DeltaFormatError(f"{where}: not a zstd frame: {e}") from e

    def _check_window(self, op: Op, params: zstandard.FrameParameters) -> None:
        if params.window_size > self._max_window:
            raise DecodeLimitError(
                f"delta op at result offset {op.dst_offset}: zstd frame declares a "
                f"{params.window_size}-byte window, limit is {self._max_window}"
            )

    def _check_frame(self, op: Op, data: bytes) -> None:
        where = f"delta op at result offset {op.dst_offset}"
        params = self._frame_params(op, data)
        self._check_window(op, params)
        if params.content_size != op.dst_length:
            raise DeltaFormatError(
                f"{where}: zstd frame must declare content size {op.dst_length}, "
                f"found {params.content_size}"
            )
