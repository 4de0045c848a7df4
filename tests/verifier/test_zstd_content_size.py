"""A zstd frame whose declared content size lies (issue 9) is reported with the declared and
the real size — zstd itself says "Destination buffer is too small" or "Data corruption", and
for a single-segment frame the declared size is the window, so the device used to blame the
window. Frames are crafted by patching the content-size field of a real frame's header."""

from __future__ import annotations

import hashlib
import io

import pytest
import zstandard

from verifier.artifact import ImageRef
from verifier.decode_full import decode_full
from verifier.effects import DiscardHandle
from verifier.errors import DecodeLimitError, TargetVerificationError
from verifier.zstd_frames import FrameError, header_length, strip_content_size

DATA = bytes(range(256)) * 64  # 16 KiB: a single-segment frame with a 2-byte content size


def ref(data: bytes) -> ImageRef:
    return ImageRef(len(data), hashlib.sha256(data).hexdigest())


def with_content_size(frame: bytes, size: int) -> bytes:
    """``frame`` with its Frame_Content_Size field rewritten to ``size`` (same field width)."""
    fhd = frame[4]
    width = (0, 2, 4, 8)[fhd >> 6] or 1
    end = header_length(fhd)
    value = size - 256 if width == 2 else size
    return frame[: end - width] + value.to_bytes(width, "little") + frame[end:]


def frame_of(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


@pytest.mark.parametrize("declared", [8000, 16000, 16383])
def test_frame_declaring_less_than_it_holds(declared: int) -> None:
    lying = with_content_size(frame_of(DATA), declared)
    assert zstandard.get_frame_parameters(lying).content_size == declared
    with pytest.raises(TargetVerificationError) as e:
        decode_full(io.BytesIO(lying), DiscardHandle(), ref(DATA))
    assert e.value.message == (
        f"full artifact: zstd frame at byte 0 declares a content size of {declared} bytes "
        f"but decodes to {len(DATA)} bytes"
    )
    assert "window" not in e.value.message


@pytest.mark.parametrize("extra", [1, 5000])
def test_frame_declaring_more_than_it_holds(extra: int) -> None:
    """The second frame makes the signed length room for the lie, so only decoding tells."""
    first = with_content_size(frame_of(DATA), len(DATA) + extra)
    image = DATA + DATA
    with pytest.raises(TargetVerificationError) as e:
        decode_full(io.BytesIO(first + frame_of(DATA)), DiscardHandle(), ref(image))
    assert e.value.message == (
        f"full artifact: zstd frame at byte 0 declares a content size of {len(DATA) + extra} "
        f"bytes but decodes to {len(DATA)} bytes"
    )


def test_frame_declaring_more_than_the_signed_image_is_refused_before_decoding() -> None:
    lying = with_content_size(frame_of(DATA), 60000)
    with pytest.raises(DecodeLimitError, match="declares a content size of 60000 bytes; 16384 "):
        decode_full(io.BytesIO(lying), DiscardHandle(), ref(DATA))


def test_second_frame_lying_is_located() -> None:
    second = with_content_size(frame_of(DATA), 9000)
    first = frame_of(DATA)
    with pytest.raises(TargetVerificationError, match=rf"frame at byte {len(first)} declares"):
        decode_full(io.BytesIO(first + second), DiscardHandle(), ref(DATA + DATA))


def test_honest_frames_skippable_frames_and_no_content_size_still_decode() -> None:
    skippable = (0x184D2A53).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as w:
        w.write(DATA)  # streamed: no content size in the header
    assert (
        zstandard.get_frame_parameters(buf.getvalue()).content_size == zstandard.CONTENTSIZE_UNKNOWN
    )
    stream = frame_of(DATA) + skippable + buf.getvalue()
    decode_full(io.BytesIO(stream), DiscardHandle(), ref(DATA + DATA))


def test_truncated_frame_is_not_a_valid_stream() -> None:
    with pytest.raises(TargetVerificationError, match="not a valid zstd stream: stream ends"):
        decode_full(io.BytesIO(frame_of(DATA)[:-9]), DiscardHandle(), ref(DATA))


def test_strip_content_size_refuses_what_is_not_a_frame() -> None:
    with pytest.raises(FrameError):
        strip_content_size(b"\x00" * 16, max_window=1 << 20)
