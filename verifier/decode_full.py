"""Decode a full artifact (zstd frames of the raw image) into a slot, bounded and hashed.

The signed image length bounds the output before a byte beyond it is written (P4), zstd's
window is capped so a hostile frame header cannot demand gigabytes, and the buffers are fixed
size, so memory does not grow with the image. The output is hashed as it is written (P2: the
bytes hashed are the bytes handed to the slot); the caller still re-reads the slot afterwards,
because what was written is not necessarily what the medium returns.

The publisher's self-check runs the same function on every artifact before signing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

import zstandard

from verifier.artifact import ImageRef
from verifier.effects import WriteHandle
from verifier.errors import DecodeLimitError, ImageHashMismatchError, TargetVerificationError
from verifier.hashing import Hasher

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
    ``TargetVerificationError`` when the stream is not valid zstd (or needs a larger window),
    ``ImageHashMismatchError`` when the decoded bytes do not hash to ``image.sha256``.
    """
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << max_window_log)
    written = Hasher()
    try:
        with dctx.stream_reader(
            src, read_size=READ_SIZE, read_across_frames=True, closefd=False
        ) as reader:
            while True:
                chunk = reader.read(WRITE_SIZE)
                if not chunk:
                    break
                if written.length + len(chunk) > image.length:
                    raise DecodeLimitError(
                        f"decompressed image exceeds its signed length: expected "
                        f"{image.length} bytes, found at least {written.length + len(chunk)}"
                    )
                out.pwrite(chunk, written.length)
                written.update(chunk)
                if progress is not None:
                    progress(written.length)
    except zstandard.ZstdError as e:
        raise TargetVerificationError(
            f"full artifact is not a valid zstd stream within a {1 << max_window_log}-byte "
            f"window (after {written.length} decoded bytes): {e}"
        ) from e
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
