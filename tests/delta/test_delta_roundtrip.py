"""Round trips: every delta the encoder writes decodes (device decoder) to the new image."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from repo.errors import DeltaBuildError, UsageError
from signer.delta.encode import DeltaOptions
from tests.delta.helpers_delta import (
    BS,
    SMALL,
    MemSink,
    apply_bytes,
    build,
    rand,
    ref_of,
    text_like,
)

Pair = Callable[[random.Random], tuple[bytes, bytes]]


def _edited(r: random.Random) -> tuple[bytes, bytes]:
    base = text_like(r, 96 * BS)
    new = bytearray(base)
    for _ in range(6):
        at = r.randrange(0, len(new) - 300)
        new[at : at + 300] = rand(r, 300)
    return base, bytes(new)


def _shifted_blocks(r: random.Random) -> tuple[bytes, bytes]:
    base = rand(r, 64 * BS)
    return base, rand(r, 3 * BS) + base[: 40 * BS] + text_like(r, 5 * BS) + base[40 * BS :]


def _shifted_unaligned(r: random.Random) -> tuple[bytes, bytes]:
    base = text_like(r, 48 * BS)
    return base, rand(r, 1000) + base


def _zero_heavy(r: random.Random) -> tuple[bytes, bytes]:
    base = bytes(40 * BS) + rand(r, 8 * BS) + bytes(40 * BS)
    return base, bytes(20 * BS) + base[40 * BS : 44 * BS] + bytes(70 * BS) + rand(r, 100)


def _appended(r: random.Random) -> tuple[bytes, bytes]:
    base = rand(r, 32 * BS)
    return base, base + text_like(r, 20 * BS + 17)


def _shrunk(r: random.Random) -> tuple[bytes, bytes]:
    base = rand(r, 64 * BS + 5)
    return base, base[: 21 * BS + 3]


def _unrelated(r: random.Random) -> tuple[bytes, bytes]:
    return rand(r, 10001), text_like(r, 7777)


def _tiny(r: random.Random) -> tuple[bytes, bytes]:
    return b"\x01", b"\x00"


def _identical(r: random.Random) -> tuple[bytes, bytes]:
    base = rand(r, 30 * BS)
    return base, base


def _reordered(r: random.Random) -> tuple[bytes, bytes]:
    blocks = [rand(r, BS) for _ in range(40)]
    order = list(range(40))
    r.shuffle(order)
    return b"".join(blocks), b"".join(blocks[i] for i in order)


PAIRS: dict[str, Pair] = {
    "edited": _edited,
    "shifted-by-blocks": _shifted_blocks,
    "shifted-unaligned": _shifted_unaligned,
    "zero-heavy": _zero_heavy,
    "appended": _appended,
    "shrunk": _shrunk,
    "unrelated": _unrelated,
    "one-byte": _tiny,
    "identical": _identical,
    "blocks-reordered": _reordered,
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_round_trip(tmp_path: Path, name: str) -> None:
    base, new = PAIRS[name](random.Random(name))
    b = build(tmp_path, base, new)
    assert b.result.verified
    assert b.result.result == ref_of(new) and b.result.base == ref_of(base)
    assert b.result.delta_length == len(b.delta)
    sink = apply_bytes(
        b.delta,
        base,
        base_ref=b.result.base,
        result_ref=b.result.result,
        header_ref=b.result.header,
    )
    assert bytes(sink.data) == new
    assert sink.synced


def test_moved_blocks_are_copied_not_sent(tmp_path: Path) -> None:
    base, new = _shifted_blocks(random.Random(1))
    b = build(tmp_path, base, new)
    assert b.result.copy_bytes == len(base)
    assert b.result.kinds["COPY"] >= 1
    assert len(b.delta) < len(new) // 4  # random data: only the new blocks cost bytes


def test_zero_blocks_cost_no_payload(tmp_path: Path) -> None:
    base, new = _zero_heavy(random.Random(2))
    b = build(tmp_path, base, new)
    assert b.result.zero_bytes == 90 * BS
    assert b.result.kinds["ZERO"] >= 1


def test_edited_data_uses_the_base_as_reference(tmp_path: Path) -> None:
    r = random.Random(3)
    base = rand(r, 64 * BS)  # incompressible alone: only the reference can make it small
    new = bytearray(base)
    for k in range(0, 64, 2):
        new[k * BS + 100] ^= 0xFF  # every other block differs by one byte
    b = build(tmp_path, base, bytes(new), replace(SMALL, merge_gap_blocks=0))
    assert b.result.kinds["ZSTD_REF"] >= 1
    assert b.result.new_bytes == 32 * BS
    merged = build(tmp_path, base, bytes(new))  # default: short gaps join the zstd run
    assert merged.result.kinds["ZSTD_REF"] < b.result.kinds["ZSTD_REF"]
    assert len(merged.delta) < 32 * BS // 10
    assert len(b.delta) < 32 * BS // 10


def test_default_options_round_trip_with_one_worker(tmp_path: Path) -> None:
    base, new = _edited(random.Random(4))
    b = build(tmp_path, base, new, DeltaOptions(workers=1))
    sink = apply_bytes(
        b.delta,
        base,
        base_ref=b.result.base,
        result_ref=b.result.result,
        header_ref=b.result.header,
    )
    assert bytes(sink.data) == new


def test_progress_reports_bytes_written(tmp_path: Path) -> None:
    import io

    from verifier.delta.decode import apply_delta

    base, new = _appended(random.Random(5))
    b = build(tmp_path, base, new)
    seen: list[int] = []
    apply_delta(
        io.BytesIO(b.delta),
        io.BytesIO(base),
        MemSink(),
        base_ref=b.result.base,
        result_ref=b.result.result,
        header_ref=b.result.header,
        progress=seen.append,
    )
    assert seen == sorted(seen) and seen[-1] == len(new)


def test_options_out_of_bounds_are_refused() -> None:
    with pytest.raises(UsageError, match="ref_window"):
        DeltaOptions(ref_window=64 << 20)
    with pytest.raises(UsageError, match="max_op_length"):
        DeltaOptions(max_op_length=64 << 20)


def test_content_shifted_by_a_non_block_amount_is_copied(tmp_path: Path) -> None:
    """tar and squashfs images move files by arbitrary byte amounts, so no 4 KiB block sits
    at a block-aligned base offset: the scan must find the shift and copy, not compress."""
    r = random.Random(8)
    base = rand(r, 200 * BS)
    new = rand(r, 1000) + base[: 90 * BS] + rand(r, 333) + base[90 * BS :]
    b = build(tmp_path, base, new)
    assert b.result.copy_bytes >= 190 * BS
    assert len(b.delta) < len(new) // 20


@pytest.mark.parametrize("step", [512, 1536, 3584])
def test_content_shifted_by_tar_records_is_copied(tmp_path: Path, step: int) -> None:
    """tar moves content in 512-byte records: found through the block index at sub-block
    offsets (no byte search needed)."""
    r = random.Random(step)
    base = rand(r, 100 * BS)
    new = rand(r, step) + base[: 50 * BS] + rand(r, 2 * step) + base[50 * BS :]
    b = build(tmp_path, base, new, replace(SMALL, shifted_merge_gap_blocks=0))
    assert b.result.copy_bytes >= 96 * BS
    assert (
        bytes(
            apply_bytes(
                b.delta,
                base,
                base_ref=b.result.base,
                result_ref=b.result.result,
                header_ref=b.result.header,
            ).data
        )
        == new
    )


def test_shifted_and_edited_content_is_placed_by_content(tmp_path: Path) -> None:
    """Content that moved and changed a little everywhere matches no block at any shift:
    the locator must still place each piece's reference where its old version is."""
    r = random.Random(9)
    base = rand(r, 200 * BS)  # incompressible: only a well-placed reference helps
    edited = bytearray(base)
    for k in range(100, len(edited), 2048):
        edited[k] ^= 0x5A
    new = rand(r, 1000) + bytes(edited[: 90 * BS]) + rand(r, 333) + bytes(edited[90 * BS :])
    b = build(tmp_path, base, new)
    assert b.result.copy_bytes == 0
    assert len(b.delta) < len(new) // 20


class _NetworkStream:
    """Read-only, forward-only, short reads: what an HTTP body looks like to the decoder."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else len(self._data), 1000)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk

    def seek(self, *_: object) -> int:
        raise AssertionError("the decoder must not seek the delta stream")

    def tell(self) -> int:
        raise AssertionError("the decoder must not need the stream position")


def test_decodes_from_a_forward_only_stream_with_short_reads(tmp_path: Path) -> None:
    from typing import BinaryIO, cast

    from verifier.delta.decode import apply_delta

    base, new = _edited(random.Random(9))
    b = build(tmp_path, base, new)
    sink = MemSink()
    with (tmp_path / "base.img").open("rb") as slot:
        apply_delta(
            cast(BinaryIO, _NetworkStream(b.delta)),
            slot,
            sink,
            base_ref=b.result.base,
            result_ref=b.result.result,
            header_ref=b.result.header,
        )
    assert bytes(sink.data) == new


def test_worker_processes_and_threads_write_the_same_container(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zones are compressed in forked worker processes when nothing else runs in this
    process, else on threads; both must produce the same bytes."""
    import concurrent.futures
    import threading

    import signer.delta.encode as encode

    base, new = _edited(random.Random(10))
    used: list[str] = []
    original = encode._compression_pool

    def recording(workers: int, paths: tuple[Path, Path]) -> concurrent.futures.Executor:
        pool = original(workers, paths)
        used.append(type(pool).__name__)
        return pool

    monkeypatch.setattr(encode, "_compression_pool", recording)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    forked = build(tmp_path, base, new)
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    threaded = build(tmp_path, base, new)
    assert used == ["ProcessPoolExecutor", "ThreadPoolExecutor"]
    assert forked.delta == threaded.delta
    assert forked.result.verified


def _die(*_: object) -> object:
    os._exit(3)


def test_a_dead_worker_process_fails_the_delta_not_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release skips a delta that raises DeltaBuildError and publishes the full image."""
    import threading

    import signer.delta.encode as encode

    base, new = _edited(random.Random(11))
    monkeypatch.setattr(encode, "_work_in_worker", _die)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    with pytest.raises(DeltaBuildError, match="worker process died"):
        build(tmp_path, base, new)
    assert not list(tmp_path.glob(".*.payload.tmp"))


_SHUTDOWN_UNDER_SIGINT = r"""
import json, multiprocessing, os, signal, sys, threading, time
from pathlib import Path
import signer.delta.encode as encode

base, new = Path(sys.argv[1]), Path(sys.argv[2])
outcome = "none"
try:
    with encode._shut_down_whole(encode._compression_pool(2, (base, new))) as pool:
        pool.submit(time.sleep, 1.5)
        # Ctrl-C lands while the pool waits for the running job, i.e. during shutdown
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        raise RuntimeError("the build failed")
except KeyboardInterrupt:
    outcome = "interrupted"
except RuntimeError:
    outcome = "failed"
live = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
print(json.dumps({"outcome": outcome, "children": len(multiprocessing.active_children()),
                  "threads": live}))
"""


def test_ctrl_c_during_pool_shutdown_leaves_no_half_shut_pool(tmp_path: Path) -> None:
    """Regression (CI flake in test_sigint_during_delta_create): a SIGINT interrupting the
    pool's shutdown left its manager thread running into interpreter exit, where CPython
    3.11 printed an ``OSError: [Errno 9]`` traceback after our one-line message."""
    import json
    import subprocess
    import sys

    base, new = tmp_path / "base", tmp_path / "new"
    base.write_bytes(b"\0" * 4096)
    new.write_bytes(b"\1" * 4096)
    r = subprocess.run(
        [sys.executable, "-c", _SHUTDOWN_UNDER_SIGINT, str(base), str(new)],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    seen = json.loads(r.stdout)
    assert seen["outcome"] == "interrupted"  # the deferred Ctrl-C is not lost
    assert seen["children"] == 0
    assert [t for t in seen["threads"] if not t.startswith("Thread-")] == [], seen
