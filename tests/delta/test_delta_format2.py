"""Format 2: DIFF ops (window bytes + a byte-wise difference, and literals).

Round trips on images that change "a little everywhere" (like rebuilt binaries) show DIFF
ops chosen and the delta smaller than format 1; ``format_version=1`` output is what a
format-1 device reads; every malformed DIFF op is refused with a clear error before its
output is used.
"""

from __future__ import annotations

import random
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from tests.delta.helpers_delta import (
    BS,
    SMALL,
    Built,
    MemSink,
    apply_bytes,
    build,
    rand,
    ref_of,
    relocated,
    repack,
    table,
    text_like,
    with_op_data,
)
from verifier.artifact import ImageRef
from verifier.delta.bytewise import add_bytes
from verifier.delta.format import (
    DIFF_COUNT,
    DIFF_ENTRY,
    Op,
    OpKind,
    max_diff_entries,
    parse_diff_control,
)
from verifier.errors import (
    DecodeLimitError,
    DeltaFormatError,
    ImageHashMismatchError,
    OtakitError,
)

#: the last commit whose decoder knew only format 1
FORMAT_1_COMMIT = "3b12342dc406653c6191838b0897a9f8f79bf529"
REPO = Path(__file__).resolve().parents[2]


def _images(seed: int) -> tuple[bytes, bytes]:
    r = random.Random(seed)
    common = text_like(r, 8 * BS)
    old_bin, new_bin = relocated(r, 40 * BS)
    base = common + old_bin + bytes(4 * BS) + rand(r, 4 * BS)
    new = common + new_bin + bytes(4 * BS) + rand(r, 2 * BS) + b"tail"
    return base, new


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Built]:
    base, new = _images(14)
    v2 = build(tmp_path_factory.mktemp("f2"), base, new)
    v1 = build(tmp_path_factory.mktemp("f1"), base, new, replace(SMALL, format_version=1))
    return v2, v1


@pytest.fixture(scope="module")
def built(pair: tuple[Built, Built]) -> Built:
    return pair[0]


def _apply(b: Built, delta: bytes, header_length: int | None = None) -> MemSink:
    n = b.result.header.length if header_length is None else header_length
    sink = MemSink()
    try:
        apply_bytes(
            delta,
            b.base,
            base_ref=b.result.base,
            result_ref=b.result.result,
            header_ref=ImageRef(n, ref_of(delta[:n]).sha256),
            sink=sink,
        )
    except OtakitError:
        assert not sink.synced, "a failed decode must never report the target as complete"
        raise
    return sink


# --- round trips ---------------------------------------------------------------------------


def test_format_2_chooses_diff_ops_and_is_smaller_than_format_1(pair: tuple[Built, Built]) -> None:
    v2, v1 = pair
    assert v2.result.kinds.get("DIFF", 0) >= 5, v2.result.kinds
    assert table(v2.header_blob)[0].version == 2
    assert bytes(_apply(v2, v2.delta).data) == v2.new
    assert bytes(_apply(v1, v1.delta).data) == v1.new
    # a pointer moved in every 16 bytes: the difference is mostly zeros (8 KiB of the new
    # image are random, the same in both)
    assert v2.result.delta_length * 10 < v1.result.delta_length * 6, (
        v2.result.delta_length,
        v1.result.delta_length,
    )


def test_format_1_output_has_no_diff_op_and_version_1(pair: tuple[Built, Built]) -> None:
    _, v1 = pair
    header, ops = table(v1.header_blob)
    assert header.version == 1
    assert OpKind.DIFF not in {o.kind for o in ops}
    assert v1.result.kinds.get("DIFF", 0) == 0


def test_a_delta_without_diff_ops_is_written_as_version_1_for_old_devices(
    tmp_path: Path,
) -> None:
    """Format 2 may be written, but a delta that has no DIFF op is version 1: a device that
    reads only format 1 still takes it (the default encoder never codes DIFF ops)."""
    base, new = _images(15)
    b = build(tmp_path, base, new, replace(SMALL, diff_trial=False))
    header, ops = table(b.header_blob)
    assert OpKind.DIFF not in {o.kind for o in ops}
    assert (header.version, b.result.format_version) == (1, 1)


def test_format_2_is_never_larger_than_format_1_on_text(tmp_path: Path) -> None:
    """Where a difference does not pay (text-like edits), the encoder keeps zstd frames."""
    r = random.Random(16)
    base = text_like(r, 40 * BS)
    new = bytearray(base)
    for at in range(0, len(new), 3 * BS):
        new[at : at + 300] = text_like(r, 300)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    v2 = build(tmp_path / "a", base, bytes(new))
    v1 = build(tmp_path / "b", base, bytes(new), replace(SMALL, format_version=1))
    assert v2.result.delta_length <= v1.result.delta_length
    assert bytes(_apply(v2, v2.delta).data) == bytes(new)


def test_add_bytes_wraps_every_byte_mod_256() -> None:
    r = random.Random(3)
    for n in (0, 1, 7, 8, 9, 255, 4096, 100_003):
        a, b = r.randbytes(n), r.randbytes(n)
        assert add_bytes(a, b) == bytes((x + y) & 0xFF for x, y in zip(a, b, strict=True))
    assert add_bytes(b"\xff\x80\x7f\x00", b"\x01\x80\x81\xff") == b"\x00\x00\x00\xff"
    with pytest.raises(ValueError):
        add_bytes(b"ab", b"a")


# --- a device that knows only format 1 -----------------------------------------------------


def _format_1_module() -> types.ModuleType:
    """verifier/delta/format.py as it was before format 2, loaded from git history."""
    try:
        src = subprocess.run(
            ["git", "show", f"{FORMAT_1_COMMIT}:verifier/delta/format.py"],
            cwd=REPO,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git history with the format-1 decoder is not available")
    module = types.ModuleType("format_v1")
    sys.modules["format_v1"] = module  # dataclasses look their module up there
    try:
        exec(compile(src, "format_v1.py", "exec"), module.__dict__)
    finally:
        del sys.modules["format_v1"]
    return module


def test_a_format_1_device_refuses_format_2_with_a_clear_message(
    pair: tuple[Built, Built],
) -> None:
    v2, v1 = pair
    old = _format_1_module()
    with pytest.raises(DeltaFormatError) as e:
        old.parse_prefix(v2.header_blob)
    assert e.value.message == "delta header: this decoder reads format version 1, found 2"
    assert e.value.hint == "update otakit-device or publish a full image for this device"
    # and it reads what `--format 1` writes, op table and all
    header = old.parse_prefix(v1.header_blob)
    assert len(list(old.iter_ops(v1.header_blob, header))) == header.op_count


def test_unknown_version_names_the_versions_this_decoder_reads(built: Built) -> None:
    header, ops = table(built.header_blob)
    blob = repack(header, ops, version=3)
    with pytest.raises(DeltaFormatError, match=r"reads format versions 1\.\.2, found 3"):
        _apply(built, blob + built.delta[len(built.header_blob) :], len(blob))


# --- malformed DIFF ops --------------------------------------------------------------------


def _diff_op(b: Built) -> tuple[int, Op, bytes]:
    """Index, record and window bytes of the first DIFF op."""
    _, ops = table(b.header_blob)
    i = next(k for k, o in enumerate(ops) if o.kind is OpKind.DIFF)
    op = ops[i]
    window = b"".join(b.base[off : off + n] for off, n in op.src)
    return i, op, window


def _frame(window: bytes, content: bytes, *, content_size: bool = True) -> bytes:
    d = zstandard.ZstdCompressionDict(window, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        3, write_content_size=int(content_size), window_log=14
    )
    return zstandard.ZstdCompressor(compression_params=params, dict_data=d).compress(content)


def _control(entries: list[tuple[int, int, int]], count: int | None = None) -> bytes:
    n = len(entries) if count is None else count
    return DIFF_COUNT.pack(n) + b"".join(DIFF_ENTRY.pack(*e) for e in entries)


def _with_diff_content(b: Built, content: bytes, **frame: bool) -> tuple[bytes, int]:
    i, op, window = _diff_op(b)
    return with_op_data(b, {i: (op, _frame(window, content, **frame))})


def _expected(b: Built) -> bytes:
    _, op, _ = _diff_op(b)
    return b.new[op.dst_offset : op.dst_offset + op.dst_length]


def test_hand_made_diff_op_of_literals_applies(built: Built) -> None:
    """The surgery below is sound: an all-literal DIFF op rebuilds the image."""
    target = _expected(built)
    delta, n = _with_diff_content(built, _control([(0, len(target), 0)]) + target)
    assert bytes(_apply(built, delta, n).data) == built.new


def test_hand_made_diff_op_of_differences_applies(built: Built) -> None:
    _, _op, window = _diff_op(built)
    target = _expected(built)
    half = len(target) // 2
    old = window[100 : 100 + half]
    stream = bytes((t - o) & 0xFF for t, o in zip(target[:half], old, strict=True))
    content = _control([(half, len(target) - half, 100)]) + stream + target[half:]
    delta, n = _with_diff_content(built, content)
    assert bytes(_apply(built, delta, n).data) == built.new


def test_version_1_container_with_a_diff_op(built: Built) -> None:
    header, ops = table(built.header_blob)
    blob = repack(header, ops, version=1)
    with pytest.raises(DeltaFormatError, match=r"kind 5 \(DIFF\) needs format version 2"):
        _apply(built, blob + built.delta[len(built.header_blob) :], len(blob))


def _refused(b: Built, content: bytes, exc: type[OtakitError], match: str, **frame: bool) -> None:
    delta, n = _with_diff_content(b, content, **frame)
    with pytest.raises(exc, match=match) as e:
        _apply(b, delta, n)
    assert type(e.value) is exc


def test_entry_count_above_the_limit(built: Built) -> None:
    target = _expected(built)
    limit = max_diff_entries(len(target))
    _refused(
        built,
        _control([], count=limit + 1) + target,
        DecodeLimitError,
        rf"declares {limit + 1} entries, limit for {len(target)} bytes of output is {limit}",
    )


def test_truncated_control_table(built: Built) -> None:
    target = _expected(built)
    count = len(target) // 12 + 1  # needs more bytes than the whole content holds
    _refused(built, _control([], count=count) + target, DeltaFormatError, "control table truncated")


@pytest.mark.parametrize("where", ["past-end", "straddles-end"])
def test_entry_reads_outside_the_window(built: Built, where: str) -> None:
    _, _, window = _diff_op(built)
    target = _expected(built)
    off = len(window) + 1 if where == "past-end" else len(window) - len(target) // 2
    _refused(
        built,
        _control([(len(target), 0, off)]) + target,
        DeltaFormatError,
        rf"reads window bytes {off}\.\.{off + len(target)}, the window has {len(window)}",
    )


@pytest.mark.parametrize("delta_len", [-1, +1])
def test_entry_lengths_must_sum_to_the_op_length(built: Built, delta_len: int) -> None:
    target = _expected(built)
    # the stream holds exactly dst_length bytes; only the entries are wrong
    entries = [(0, len(target) - 10, 0), (0, 10 + delta_len, 0)]
    _refused(
        built,
        _control(entries) + target,
        DeltaFormatError,
        rf"DIFF entries must produce exactly {len(target)} bytes",
    )


def test_trailing_bytes_after_the_stream(built: Built) -> None:
    target = _expected(built)
    _refused(
        built,
        _control([(0, len(target), 0)]) + target + b"x",
        DeltaFormatError,
        r"control table and \d+ stream bytes",
    )


def test_stream_shorter_than_the_op(built: Built) -> None:
    target = _expected(built)
    _refused(
        built,
        _control([(0, len(target), 0), (0, 0, 0)]) + target[:-12],
        DeltaFormatError,
        r"control table and \d+ stream bytes",
    )


def test_frame_without_a_content_size(built: Built) -> None:
    target = _expected(built)
    _refused(
        built,
        _control([(0, len(target), 0)]) + target,
        DeltaFormatError,
        "must declare a content size in",
        content_size=False,
    )


def test_frame_content_size_above_the_bound(built: Built) -> None:
    target = _expected(built)
    limit = max_diff_entries(len(target))
    content = _control([(0, len(target), 0)]) + target + bytes(12 * limit)
    _refused(built, content, DeltaFormatError, "must declare a content size in")


def test_frame_lying_about_its_content_size(built: Built) -> None:
    from tests.delta.test_delta_bad_input import _with_content_size

    i, op, window = _diff_op(built)
    target = _expected(built)
    content = _control([(0, len(target), 0)]) + target
    frame = _with_content_size(_frame(window, content + b"zzzz"), len(content))
    delta, n = with_op_data(built, {i: (op, frame)})
    with pytest.raises(DeltaFormatError, match=r"declares a content size of \d+ bytes but decodes"):
        _apply(built, delta, n)


def test_diff_op_without_a_window(built: Built) -> None:
    i, op, _ = _diff_op(built)
    header, ops = table(built.header_blob)
    ops[i] = replace(op, src=())
    blob = repack(header, ops)
    with pytest.raises(DecodeLimitError, match=r"reference must be 1\.\."):
        _apply(built, blob + built.delta[len(built.header_blob) :], len(blob))


def test_diff_op_window_above_the_declared_limit(built: Built) -> None:
    _i, op, _ = _diff_op(built)
    header, ops = table(built.header_blob)
    total = sum(n for _, n in op.src)
    blob = repack(header, ops, limits=replace(header.limits, max_ref_length=total - 1))
    with pytest.raises(DecodeLimitError, match=r"reference must be 1\.\."):
        _apply(built, blob + built.delta[len(built.header_blob) :], len(blob))


def test_diff_op_output_hash_mismatch(built: Built) -> None:
    i, op, _ = _diff_op(built)
    header, ops = table(built.header_blob)
    ops[i] = replace(op, sha256=bytes(32))
    blob = repack(header, ops)
    with pytest.raises(ImageHashMismatchError, match=r"\(DIFF, \d+ bytes\): output does not"):
        _apply(built, blob + built.delta[len(built.header_blob) :], len(blob))


def test_diff_op_against_a_different_base_caught_by_its_hash(built: Built) -> None:
    """A changed window byte changes the output: the per-op hash refuses it."""
    _, op, _ = _diff_op(built)
    base = bytearray(built.base)
    base[op.src[0][0] + 5] ^= 0xFF
    sink = MemSink()
    with pytest.raises(ImageHashMismatchError):
        apply_bytes(
            built.delta,
            bytes(base),
            base_ref=built.result.base,
            result_ref=built.result.result,
            header_ref=built.result.header,
            sink=sink,
            check_base=False,
        )
    assert not sink.synced


def test_parse_diff_control_accepts_exact_content() -> None:
    content = _control([(4, 2, 10), (0, 3, 0)]) + bytes(9)
    assert parse_diff_control(content, dst_length=9, window_length=14, where="t") == [
        (4, 2, 10),
        (0, 3, 0),
    ]
    with pytest.raises(DeltaFormatError, match=r"reads window bytes 10\.\.14, the window has 13"):
        parse_diff_control(content, dst_length=9, window_length=13, where="t")
    with pytest.raises(DeltaFormatError, match="4-byte entry count"):
        parse_diff_control(b"\x01", dst_length=9, window_length=14, where="t")


def test_the_device_decoder_and_the_cli_start_without_numpy() -> None:
    """numpy is a publisher extra used only by the DIFF trial: the device decoder never
    imports it (device.lock has no numpy), and ``otakit`` commands do not pay its import."""
    code = (
        "import sys, verifier.delta.decode, verifier.entry, signer.cli; "
        "sys.exit(1 if 'numpy' in sys.modules else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
