"""Decode a full artifact (zstd frames of the raw image) into a slot, bounded and hashed.

The signed image length bounds the output before a byte beyond it is written (P4), zstd's
window is capped so a hostile frame header cannot demand gigabytes, and the buffers are fixed
size, so memory does not grow with the image. The output is hashed as it is written (P2: the
bytes hashed are the bytes handed to the slot); the caller still re-reads the slot afterwards,
because what was written is not necessarily what the medium returns. Each frame's declared
content size is compared with what the frame decodes to (``verifier.zstd_frames``), so a lying
header is reported as such, with both sizes, not as a window or corruption error of zstd's.

The publisher's self-check runs the same function on every artifact before signing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, cast

import zstandard

from verifier.artifact import ImageRef
from verifier.effects import WriteHandle
from verifier.errors import DecodeLimitError, ImageHashMismatchError, TargetVerificationError
from verifier.hashing import Hasher
from verifier.zstd_frames import FrameError, FrameHeader, FrameSplitter

#: Largest zstd window accepted: 2**27 = 128 MiB, the window of ``zstd --long=27`` and the
#: largest any otakit publisher produces. Frames asking for more are refused before decoding.
MAX_WINDOW_LOG = 27
READ_SIZE = 1 << 17
WRITE_SIZE = 1 << 20

Progress = Callable[[int], None]


def decode_full(
    src: BinaryIO,
    out: WriteHandle,
    image: ImageRef,
    *,
    progress: Progress | None = None,
    max_window_log: int = MAX_WINDOW_LOG,
) -> None:
    """Decompress ``src`` into ``out`` at offset 0; raise unless it is exactly ``image``.

    Raises ``DecodeLimitError`` when the output would exceed ``image.length`` or ends short,
    or a frame declares more content than is left; ``TargetVerificationError`` when the stream
    is not valid zstd, needs a larger window, or a frame decodes to another size than it
    declares (``verifier.zstd_frames``: the message gives both sizes);
    ``ImageHashMismatchError`` when the decoded bytes do not hash to ``image.sha256``.
    """
    max_window = 1 << max_window_log
    dctx = zstandard.ZstdDecompressor(max_window_size=max_window)
    frames = FrameSplitter(src, max_window=max_window, read_size=READ_SIZE)
    written = Hasher()
    at = ""
    try:
        while (frame := frames.next()) is not None:
            header, body = frame
            at = f" (frame at byte {header.offset})"
            where = f"full artifact: zstd frame at byte {header.offset}"
            _check_header(header, where, image, written.length, max_window)
            start = written.length
            with dctx.stream_reader(
                cast(BinaryIO, body), read_size=READ_SIZE, read_across_frames=False, closefd=False
            ) as reader:
                while chunk := reader.read(WRITE_SIZE):
                    if written.length + len(chunk) > image.length:
                        declared = "" if header.declared is None else f" ({where} declares "
                        declared += "" if header.declared is None else f"{header.declared})"
                        raise DecodeLimitError(
                            f"decompressed image exceeds its signed length: expected "
                            f"{image.length} bytes, found at least "
                            f"{written.length + len(chunk)}{declared}"
                        )
                    out.pwrite(chunk, written.length)
                    written.update(chunk)
                    if progress is not None:
                        progress(written.length)
            body.finish()
            real = written.length - start
            if header.declared is not None and real != header.declared:
                raise TargetVerificationError(
                    f"{where} declares a content size of {header.declared} bytes but decodes "
                    f"to {real} bytes"
                )
    except zstandard.ZstdError as e:
        raise TargetVerificationError(
            f"full artifact is not a valid zstd stream{at} after {written.length} decoded "
            f"bytes: {e}"
        ) from e
    except FrameError as e:
        raise TargetVerificationError(f"full artifact is not a valid zstd stream: {e}") from e
    if written.length != image.length:
        raise DecodeLimitError(
            f"decompressed image ends short of its signed length: expected {image.length} "
            f"bytes, found {written.length}"
        )
    found = written.hexdigest()
    if found != image.sha256:
        raise ImageHashMismatchError(
            f"decompressed image does not match its signed hash: expected sha256 "
            f"{image.sha256}, found {found}"
        )


def _check_header(
    header: FrameHeader, where: str, image: ImageRef, done: int, max_window: int
) -> None:
    """What a frame header promises, checked before zstd allocates anything for it."""
    left = image.length - done
    if header.declared is not None and header.declared > left:
        raise DecodeLimitError(
            f"decompressed image exceeds its signed length: {where} declares a content size "
            f"of {header.declared} bytes; {left} of the signed {image.length} bytes are left"
        )
    if header.window > max_window:
        raise TargetVerificationError(
            f"{where} needs a {header.window}-byte window, limit {max_window}"
        )
