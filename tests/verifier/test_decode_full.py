"""The full-artifact decoder: exact signed length, bounded window, multi-frame, streaming."""

from __future__ import annotations

import hashlib
import io

import pytest
import zstandard

from verifier.artifact import ImageRef
from verifier.decode_full import decode_full
from verifier.errors import DecodeLimitError, ImageHashMismatchError, TargetVerificationError


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.largest_write = 0

    def pwrite(self, data: bytes, offset: int) -> None:
        self.data[offset : offset + len(data)] = data
        self.largest_write = max(self.largest_write, len(data))

    def fsync(self) -> None:
        pass

    def close(self) -> None:
        pass


IMAGE = bytes(range(256)) * 8192  # 2 MiB


def ref(data: bytes) -> ImageRef:
    return ImageRef(len(data), hashlib.sha256(data).hexdigest())


def test_decodes_exactly_the_signed_image_in_bounded_writes() -> None:
    out = Sink()
    decode_full(io.BytesIO(zstandard.ZstdCompressor().compress(IMAGE)), out, ref(IMAGE))
    assert bytes(out.data) == IMAGE
    assert out.largest_write <= 1 << 20


def test_multiple_frames_are_one_image() -> None:
    c = zstandard.ZstdCompressor()
    art = c.compress(IMAGE[:1000]) + c.compress(IMAGE[1000:])
    out = Sink()
    decode_full(io.BytesIO(art), out, ref(IMAGE))
    assert bytes(out.data) == IMAGE


def test_output_beyond_signed_length_is_never_written() -> None:
    out = Sink()
    short = IMAGE[: len(IMAGE) - 4096]
    with pytest.raises(DecodeLimitError, match="exceeds its signed length"):
        decode_full(io.BytesIO(zstandard.ZstdCompressor().compress(IMAGE)), out, ref(short))
    assert len(out.data) <= len(short)


def test_truncated_artifact_ends_short() -> None:
    art = zstandard.ZstdCompressor().compress(IMAGE)
    with pytest.raises((DecodeLimitError, TargetVerificationError)):
        decode_full(io.BytesIO(art[: len(art) // 2]), Sink(), ref(IMAGE))


def test_wrong_content_of_right_length_is_a_hash_mismatch() -> None:
    other = bytes(len(IMAGE))
    with pytest.raises(ImageHashMismatchError, match="expected sha256"):
        decode_full(io.BytesIO(zstandard.ZstdCompressor().compress(other)), Sink(), ref(IMAGE))


def test_window_larger_than_allowed_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=24)
    art = zstandard.ZstdCompressor(compression_params=params).compress(IMAGE * 8)
    with pytest.raises(TargetVerificationError, match="window"):
        decode_full(io.BytesIO(art), Sink(), ref(IMAGE * 8), max_window_log=20)
    decode_full(io.BytesIO(art), Sink(), ref(IMAGE * 8))  # within the default bound


def test_garbage_is_not_zstd() -> None:
    with pytest.raises(TargetVerificationError, match="not a valid zstd stream"):
        decode_full(io.BytesIO(b"\x00" * 100), Sink(), ref(IMAGE))
