"""Property tests and a seeded fuzz loop over the decoder: random and mutated containers end
in success with the exact signed image or in one of our errors — never another exception,
never a hang, never an unbounded allocation (all sizes are capped by the format's limits).

Mutations re-hash the header so they reach the parser; a device only parses a header whose
hash was signed, so this models a hostile or buggy publisher, the worst case.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.delta.helpers_delta import (
    BS,
    Built,
    MemSink,
    apply_bytes,
    build,
    rand,
    ref_of,
    relocated,
    table,
    text_like,
    with_op_data,
)
from verifier.artifact import ImageRef
from verifier.delta.format import DIFF_COUNT, DIFF_ENTRY, PREFIX, OpKind
from verifier.errors import OtakitError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    r = random.Random(11)
    base = text_like(r, 24 * BS) + bytes(4 * BS) + rand(r, 8 * BS)
    new = bytearray(base[: 30 * BS])
    new[2 * BS : 3 * BS] = rand(r, BS)
    new += bytes(3 * BS) + text_like(r, 2 * BS + 5)
    return build(tmp_path_factory.mktemp("fuzz"), base, bytes(new))


def _apply_mutant(b: Built, delta: bytes, header_length: int) -> str:
    """Apply a mutant; return the error class that rejected it, or "ok"."""
    header_ref = ImageRef(header_length, ref_of(delta[:header_length]).sha256)
    sink = MemSink()
    try:
        apply_bytes(
            delta,
            b.base,
            base_ref=b.result.base,
            result_ref=b.result.result,
            header_ref=header_ref,
            sink=sink,
        )
    except OtakitError as e:
        assert not sink.synced
        return type(e).__name__
    assert bytes(sink.data[: len(b.new)]) == b.new  # success only with the signed image
    return "ok"


def _mutate(r: random.Random, delta: bytes, header_length: int) -> tuple[bytes, int]:
    d = bytearray(delta)
    for _ in range(r.randint(1, 4)):
        choice = r.random()
        if choice < 0.6:  # flip bytes, mostly in the header where the structure is
            limit = header_length if r.random() < 0.8 else len(d)
            at = r.randrange(0, max(1, limit))
            if at < len(d):
                d[at] = r.randrange(256)
        elif choice < 0.75:  # interesting integers over a field
            at = r.randrange(0, max(1, header_length - 8))
            val = r.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1, BS, BS - 1])
            d[at : at + 8] = val.to_bytes(8, "little")
        elif choice < 0.85:  # truncate
            del d[r.randrange(0, len(d)) :]
        elif choice < 0.95:  # duplicate a slice
            a = r.randrange(0, len(d))
            b = r.randrange(a, min(len(d), a + 200) + 1)
            d[a:a] = d[a:b]
        else:  # the signed header length itself is off
            header_length = max(1, header_length + r.randint(-70, 70))
    return bytes(d), header_length


def test_seeded_fuzz_loop(built: Built) -> None:
    r = random.Random(20261129)
    n = built.result.header.length
    outcomes = set()
    for _ in range(2000):
        mutant, hl = _mutate(r, built.delta, n)
        outcomes.add(_apply_mutant(built, mutant, hl))
    # the mutants must get past the first check: structure, limits and per-op hashes all fire
    assert {"DeltaFormatError", "DecodeLimitError", "ImageHashMismatchError"} <= outcomes


@settings(
    max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=4096), header_length=st.integers(1, 4096))
def test_random_bytes_never_crash(built: Built, data: bytes, header_length: int) -> None:
    _apply_mutant(built, data, header_length)


@settings(
    max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_mutated_containers_never_crash(
    built: Built, edits: list[tuple[int, int]], cut: int | None
) -> None:
    d = bytearray(built.delta)
    n = built.result.header.length
    for at, val in edits:
        d[at % n if at % 3 else at % len(d)] = val
    if cut is not None:
        del d[cut % len(d) :]
    _apply_mutant(built, bytes(d), n)


@settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(prefix=st.binary(min_size=PREFIX.size, max_size=PREFIX.size))
def test_random_prefix_with_valid_magic(built: Built, prefix: bytes) -> None:
    d = b"OTADELTA\x01\x00" + prefix[10:] + built.delta[PREFIX.size :]
    _apply_mutant(built, d, built.result.header.length)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 40 * BS), change=st.floats(0, 1))
def test_encoder_round_trips_random_pairs(
    tmp_path_factory: pytest.TempPathFactory, seed: int, size: int, change: float
) -> None:
    r = random.Random(seed)
    base = text_like(r, size) if seed % 2 else rand(r, size)
    new = bytearray(base[r.randrange(0, size) :] + base)
    for _ in range(int(change * 10)):
        at = r.randrange(0, len(new))
        new[at : at + r.randrange(1, 3 * BS)] = rand(r, r.randrange(0, 3 * BS))
    if not new:
        new = bytearray(b"x")
    if r.random() < 0.3:
        new[r.randrange(0, len(new)) :] = bytes(r.randrange(0, 5 * BS))
    b = build(Path(tmp_path_factory.mktemp("rt")), base, bytes(new))
    sink = apply_bytes(
        b.delta,
        base,
        base_ref=b.result.base,
        result_ref=b.result.result,
        header_ref=b.result.header,
    )
    assert bytes(sink.data) == bytes(new)


@pytest.fixture(scope="module")
def built_diff(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A format-2 delta with DIFF ops (a rebuilt-binary-like region) among the others."""
    r = random.Random(12)
    old_bin, new_bin = relocated(r, 12 * BS)
    base = text_like(r, 8 * BS) + old_bin + bytes(2 * BS)
    new = base[: 8 * BS] + new_bin + bytes(3 * BS) + rand(r, BS)
    b = build(tmp_path_factory.mktemp("fuzz-diff"), base, new)
    assert b.result.kinds.get("DIFF", 0) >= 2, b.result.kinds
    return b


def test_seeded_fuzz_loop_with_diff_ops(built_diff: Built) -> None:
    r = random.Random(20261202)
    n = built_diff.result.header.length
    outcomes = set()
    for _ in range(1000):
        mutant, hl = _mutate(r, built_diff.delta, n)
        outcomes.add(_apply_mutant(built_diff, mutant, hl))
    assert {"DeltaFormatError", "DecodeLimitError", "ImageHashMismatchError"} <= outcomes


def test_mutated_diff_content_is_refused_or_exact(built_diff: Built) -> None:
    """Mutate the *decoded* content of DIFF frames (control table and stream) and compress
    it again, so the mutations reach the control-table checks and the byte-wise addition."""
    _header, ops = table(built_diff.header_blob)
    payload = built_diff.delta[built_diff.result.header.length :]
    diffs = [i for i, o in enumerate(ops) if o.kind is OpKind.DIFF]
    r = random.Random(5)
    outcomes = set()
    for _ in range(300):
        i = r.choice(diffs)
        op = ops[i]
        window = b"".join(built_diff.base[off : off + k] for off, k in op.src)
        dictionary = zstandard.ZstdCompressionDict(window, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        frame = payload[op.data_offset : op.data_offset + op.data_length]
        content = bytearray(zstandard.ZstdDecompressor(dict_data=dictionary).decompress(frame))
        (count,) = DIFF_COUNT.unpack_from(content)
        table_end = DIFF_COUNT.size + count * DIFF_ENTRY.size
        for _ in range(r.randint(1, 3)):
            choice = r.random()
            if choice < 0.5:  # a control-table field
                at = r.randrange(0, table_end - 3)
                val = r.choice([0, 1, 7, 0xFFFF, 0xFFFFFFFF, op.dst_length, len(window)])
                content[at : at + 4] = (val & 0xFFFFFFFF).to_bytes(4, "little")
            elif choice < 0.7:  # a stream byte
                content[r.randrange(table_end, len(content))] ^= 1 + r.randrange(255)
            elif choice < 0.85:  # cut
                del content[r.randrange(0, len(content)) :]
            else:  # grow
                content += r.randbytes(r.randint(1, 40))
        cctx = zstandard.ZstdCompressor(dict_data=dictionary)
        delta, hl = with_op_data(built_diff, {i: (op, cctx.compress(bytes(content)))})
        outcomes.add(_apply_mutant(built_diff, delta, hl))
    assert {"DeltaFormatError", "DecodeLimitError", "ImageHashMismatchError"} <= outcomes
