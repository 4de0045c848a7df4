"""Attacks and corruption: each bad container is refused with its exact error class, and the
target is never claimed valid (the decoder fsyncs only after the final result hash matched).

Most cases rewrite the op table and re-hash it, so they reach the checks *behind* the header
hash — as a compromised or buggy publisher could, since the header hash is what it signs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from tests.delta.helpers_delta import (
    BS,
    Built,
    MemSink,
    apply_bytes,
    build,
    rand,
    ref_of,
    repack,
    table,
    text_like,
)
from verifier.artifact import ImageRef
from verifier.delta.format import MAX_HEADER_LENGTH, Limits, Op, OpKind, prefix_length_of
from verifier.errors import (
    DecodeLimitError,
    DeltaFormatError,
    ImageHashMismatchError,
    OtakitError,
    TargetVerificationError,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A delta with every op kind: COPY, ZERO, ZSTD_REF (and a short last block)."""
    r = random.Random(7)
    base = text_like(r, 40 * BS) + bytes(8 * BS) + rand(r, 20 * BS)
    new = bytearray(base[: 60 * BS])
    new[5 * BS : 7 * BS] = rand(r, 2 * BS)
    new += bytes(6 * BS) + text_like(r, 3 * BS + 11)
    b = build(tmp_path_factory.mktemp("bad"), base, bytes(new))
    assert {k for k, n in b.result.kinds.items() if n} == {"COPY", "ZERO", "ZSTD_REF"}
    return b


def _run(
    b: Built,
    delta: bytes,
    *,
    header_ref: ImageRef | None = None,
    base: bytes | None = None,
    base_ref: ImageRef | None = None,
    result_ref: ImageRef | None = None,
    check_base: bool = True,
) -> MemSink:
    """Apply; on failure return the sink through the exception for inspection."""
    sink = MemSink()
    try:
        apply_bytes(
            delta,
            b.base if base is None else base,
            base_ref=base_ref or b.result.base,
            result_ref=result_ref or b.result.result,
            header_ref=header_ref or ref_of(delta[: prefix_length_of(delta)]),
            sink=sink,
            check_base=check_base,
        )
    except OtakitError as e:
        e.sink = sink  # type: ignore[attr-defined]
        raise
    return sink


def _with_table(b: Built, mutate: Callable[[list[Op]], list[Op]], **prefix: object) -> bytes:
    header, ops = table(b.header_blob)
    blob = repack(header, mutate(list(ops)), **prefix)
    return blob + b.delta[b.result.header.length :]


def _first(ops: list[Op], kind: OpKind) -> int:
    return next(i for i, o in enumerate(ops) if o.kind is kind)


def _expect(exc: type[OtakitError], fn: Callable[[], object], *, writes: bool = False) -> None:
    with pytest.raises(exc) as info:
        fn()
    assert type(info.value) is exc, f"expected exactly {exc.__name__}, got {info.value!r}"
    sink: MemSink = info.value.sink  # type: ignore[attr-defined]
    assert not sink.synced, "a failed decode must never report the target as complete"
    if not writes:
        assert sink.writes == 0, "refused before a byte was written"
    assert info.value.diagnostic()


def test_valid_container_applies(built: Built) -> None:
    assert bytes(_run(built, built.delta).data) == built.new


def test_header_hash_mismatch(built: Built) -> None:
    bad = bytearray(built.delta)
    bad[60] ^= 1
    _expect(
        TargetVerificationError, lambda: _run(built, bytes(bad), header_ref=built.result.header)
    )


def test_header_longer_than_the_limit(built: Built) -> None:
    ref = ImageRef(MAX_HEADER_LENGTH + 1, built.result.header.sha256)
    _expect(DecodeLimitError, lambda: _run(built, built.delta, header_ref=ref))


@pytest.mark.parametrize("cut", [10, 200, -1, -40])
def test_truncated_container(built: Built, cut: int) -> None:
    short = built.delta[:cut]
    hdr = built.result.header
    # cut inside the header: the signed header length cannot be read in full
    _expect(DeltaFormatError, lambda: _run(built, short, header_ref=hdr), writes=cut < 0)


def test_trailing_bytes(built: Built) -> None:
    _expect(
        DeltaFormatError,
        lambda: _run(built, built.delta + b"\0", header_ref=built.result.header),
        writes=True,
    )


def test_base_hash_does_not_match_signed_base(built: Built) -> None:
    other = ImageRef(built.result.base.length, "ab" * 32)
    _expect(ImageHashMismatchError, lambda: _run(built, built.delta, base_ref=other))


def test_active_slot_is_not_the_base(built: Built) -> None:
    slot = bytearray(built.base)
    slot[123] ^= 1
    _expect(ImageHashMismatchError, lambda: _run(built, built.delta, base=bytes(slot)))


def test_active_slot_differs_without_base_check_caught_by_op_hash(built: Built) -> None:
    _header, ops = table(built.header_blob)
    copy = ops[_first(ops, OpKind.COPY)]
    slot = bytearray(built.base)
    slot[copy.src[0][0]] ^= 1
    _expect(
        ImageHashMismatchError,
        lambda: _run(built, built.delta, base=bytes(slot), check_base=False),
        writes=True,
    )


def test_op_reads_outside_the_base(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        i = _first(ops, OpKind.COPY)
        o = ops[i]
        end = built.result.base.length
        ops[i] = replace(o, src=((end - BS + 1, BS), *o.src[1:]))
        return ops

    _expect(DeltaFormatError, lambda: _run(built, _with_table(built, mutate)))


def test_reference_outside_the_base(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        i = _first(ops, OpKind.ZSTD_REF)
        ops[i] = replace(ops[i], src=((built.result.base.length, 1),))
        return ops

    _expect(DeltaFormatError, lambda: _run(built, _with_table(built, mutate)))


def test_op_writes_outside_the_target(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        last = ops[-1]
        ops[-1] = replace(last, kind=OpKind.ZERO, src=(), data_length=0, dst_length=BS * 4)
        return ops

    _expect(DecodeLimitError, lambda: _run(built, _with_table(built, mutate)))


def test_overlapping_ops(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        ops[1] = replace(ops[1], dst_offset=ops[1].dst_offset - BS)
        return ops

    _expect(DeltaFormatError, lambda: _run(built, _with_table(built, mutate)))


def test_gap_between_ops(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        del ops[1]
        return ops

    _expect(DeltaFormatError, lambda: _run(built, _with_table(built, mutate)))


def test_ops_short_of_the_result(built: Built) -> None:
    _expect(DeltaFormatError, lambda: _run(built, _with_table(built, lambda ops: ops[:-1])))


def test_declared_output_larger_than_signed_length(built: Built) -> None:
    bigger = replace(built.result.result, length=built.result.result.length + BS)
    delta = _with_table(built, lambda ops: ops, result=bigger)
    _expect(DecodeLimitError, lambda: _run(built, delta))


def test_declared_result_hash_differs_from_signed(built: Built) -> None:
    other = replace(built.result.result, sha256="cd" * 32)
    delta = _with_table(built, lambda ops: ops, result=other)
    _expect(ImageHashMismatchError, lambda: _run(built, delta))


def test_limits_above_the_hard_limits(built: Built) -> None:
    header, _ = table(built.header_blob)
    for limits in (
        replace(header.limits, max_window_log=25),
        replace(header.limits, max_op_length=9 << 20),
        replace(header.limits, max_ref_length=17 << 20),
    ):
        delta = _with_table(built, lambda ops: ops, limits=limits)
        _expect(DecodeLimitError, lambda d=delta: _run(built, d))  # type: ignore[misc]


def test_op_larger_than_the_declared_limit(built: Built) -> None:
    delta = _with_table(built, lambda ops: ops, limits=Limits(BS, 1 << 20, 20))
    _expect(DecodeLimitError, lambda: _run(built, delta))


def _replace_payload_of(b: Built, index_kind: OpKind, frame: bytes) -> bytes:
    """Swap one zstd op's frame for ``frame``, fixing all data offsets and the header."""
    header, ops = table(b.header_blob)
    payload = b.delta[b.result.header.length :]
    i = _first(ops, index_kind)
    chunks = [payload[o.data_offset : o.data_offset + o.data_length] for o in ops]
    chunks[i] = frame
    new_ops: list[Op] = []
    cursor = 0
    for o, c in zip(ops, chunks, strict=True):
        new_ops.append(replace(o, data_offset=cursor, data_length=len(c)))
        cursor += len(c)
    blob = repack(header, new_ops, payload_length=cursor)
    return blob + b"".join(chunks)


def test_zstd_window_over_the_limit(built: Built) -> None:
    header, ops = table(built.header_blob)
    o = ops[_first(ops, OpKind.ZSTD_REF)]
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=header.limits.max_window_log + 4, write_content_size=0
    )
    # a streaming compressor cannot shrink the window to the input size
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = cobj.compress(built.new[o.dst_offset : o.dst_offset + o.dst_length]) + cobj.flush()
    assert zstandard.get_frame_parameters(frame).window_size > 1 << header.limits.max_window_log
    delta = _replace_payload_of(built, OpKind.ZSTD_REF, frame)
    _expect(DecodeLimitError, lambda: _run(built, delta), writes=True)


def test_zstd_frame_declaring_other_content_size(built: Built) -> None:
    _header, ops = table(built.header_blob)
    o = ops[_first(ops, OpKind.ZSTD_REF)]
    frame = zstandard.ZstdCompressor().compress(
        built.new[o.dst_offset : o.dst_offset + o.dst_length] + b"x"
    )
    delta = _replace_payload_of(built, OpKind.ZSTD_REF, frame)
    _expect(DeltaFormatError, lambda: _run(built, delta), writes=True)


def test_not_a_zstd_frame(built: Built) -> None:
    delta = _replace_payload_of(built, OpKind.ZSTD_REF, b"\x00" * 40)
    _expect(DeltaFormatError, lambda: _run(built, delta), writes=True)


def test_two_frames_in_one_op(built: Built) -> None:
    _header, ops = table(built.header_blob)
    o = ops[_first(ops, OpKind.ZSTD_REF)]
    data = built.new[o.dst_offset : o.dst_offset + o.dst_length]
    frame = zstandard.ZstdCompressor().compress(data) + zstandard.ZstdCompressor().compress(b"x")
    delta = _replace_payload_of(built, OpKind.ZSTD_REF, frame)
    _expect(DeltaFormatError, lambda: _run(built, delta), writes=True)


def test_op_output_hash_mismatch(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        i = _first(ops, OpKind.ZSTD_REF)
        ops[i] = replace(ops[i], sha256=hashlib.sha256(b"other").digest())
        return ops

    _expect(ImageHashMismatchError, lambda: _run(built, _with_table(built, mutate)), writes=True)


def test_zero_op_hash_mismatch(built: Built) -> None:
    def mutate(ops: list[Op]) -> list[Op]:
        i = _first(ops, OpKind.ZERO)
        ops[i] = replace(ops[i], sha256=bytes(32))
        return ops

    _expect(ImageHashMismatchError, lambda: _run(built, _with_table(built, mutate)), writes=True)


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("magic", b"NOTDELTA", DeltaFormatError),
        ("version", 3, DeltaFormatError),
        ("version", 0, DeltaFormatError),
        ("block", 3000, DeltaFormatError),
        ("ops", 1, DeltaFormatError),
        ("kind", 9, DeltaFormatError),
        ("payload", 1, DeltaFormatError),
    ],
)
def test_malformed_header_fields(
    built: Built, field: str, value: object, exc: type[OtakitError]
) -> None:
    import struct

    blob = bytearray(built.header_blob)
    if field == "magic":
        blob[0:8] = value  # type: ignore[call-overload]
    elif field == "version":
        struct.pack_into("<H", blob, 8, value)
    elif field == "block":
        struct.pack_into("<I", blob, 12, value)
    elif field == "ops":
        struct.pack_into("<I", blob, 16, value)
    elif field == "kind":
        blob[136] = value  # type: ignore[call-overload]
    elif field == "payload":
        struct.pack_into("<Q", blob, 32, value)
    delta = bytes(blob) + built.delta[len(blob) :]
    _expect(exc, lambda: _run(built, delta))


def test_reserved_bytes_must_be_zero(built: Built) -> None:
    blob = bytearray(built.header_blob)
    blob[135] = 1
    _expect(DeltaFormatError, lambda: _run(built, bytes(blob) + built.delta[len(blob) :]))


def test_base_shorter_than_signed(built: Built, tmp_path: Path) -> None:
    from verifier.errors import StorageError

    with pytest.raises(StorageError):
        _run(built, built.delta, base=built.base[:-1])


def test_write_error_in_the_writer_thread_reaches_the_caller(built: Built) -> None:
    from verifier.errors import StorageError

    class Failing(MemSink):
        def pwrite(self, data: bytes, offset: int) -> None:
            raise StorageError("cannot write slot: EIO")

    sink = Failing()
    with pytest.raises(StorageError):
        apply_bytes(
            built.delta,
            built.base,
            base_ref=built.result.base,
            result_ref=built.result.result,
            header_ref=built.result.header,
            sink=sink,
        )
    assert not sink.synced


def _with_content_size(frame: bytes, size: int) -> bytes:
    from verifier.zstd_frames import header_length

    fhd = frame[4]
    width = (0, 2, 4, 8)[fhd >> 6] or 1
    end = header_length(fhd)
    value = size - 256 if width == 2 else size
    return frame[: end - width] + value.to_bytes(width, "little") + frame[end:]


@pytest.mark.parametrize("delta_len", [-5, 7])
def test_zstd_frame_lying_about_its_content_size(built: Built, delta_len: int) -> None:
    """Issue 9: the header says dst length (so the header check passes), the data holds
    more or less; the error names both sizes instead of zstd's "buffer too small"."""
    _header, ops = table(built.header_blob)
    o = ops[_first(ops, OpKind.ZSTD_REF)]
    real = (built.new[o.dst_offset : o.dst_offset + o.dst_length] + b"y" * 16)[
        : o.dst_length + delta_len
    ]
    frame = _with_content_size(zstandard.ZstdCompressor().compress(real), o.dst_length)
    assert zstandard.get_frame_parameters(frame).content_size == o.dst_length
    delta = _replace_payload_of(built, OpKind.ZSTD_REF, frame)
    _expect(DeltaFormatError, lambda: _run(built, delta), writes=True)
    with pytest.raises(DeltaFormatError) as e:
        _run(built, delta)
    assert e.value.message == (
        f"delta op at result offset {o.dst_offset}: zstd frame declares a content size of "
        f"{o.dst_length} bytes but decodes to {len(real)} bytes"
    )
