"""The one file-hash helper and the one lock helper."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from verifier.errors import LocalError
from verifier.hashing import Digest, Hasher, hash_fd, hash_file, hash_path
from verifier.locking import exclusive_lock

DATA = bytes(range(256)) * 41  # 10,496 bytes: not a multiple of the chunk sizes used


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def f(tmp_path: Path) -> Path:
    p = tmp_path / "data"
    p.write_bytes(DATA)
    return p


@pytest.mark.parametrize(
    "offset,length,chunk",
    [(0, None, 1000), (0, len(DATA), 1 << 20), (100, 5000, 999), (len(DATA), None, 7), (7, 0, 7)],
)
def test_hash_range(f: Path, offset: int, length: int | None, chunk: int) -> None:
    want = DATA[offset:] if length is None else DATA[offset : offset + length]
    assert hash_path(f, offset=offset, length=length, chunk=chunk) == Digest(len(want), _sha(want))


def test_short_file_reports_what_was_there(f: Path) -> None:
    assert hash_path(f, length=len(DATA) + 5) == Digest(len(DATA), _sha(DATA))


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(b"")
    assert hash_path(tmp_path / "e") == Digest(0, _sha(b""))


def test_progress_after_every_chunk(f: Path) -> None:
    seen: list[int] = []
    hash_path(f, length=2500, chunk=1000, progress=seen.append)
    assert seen == [1000, 2000, 2500]


def test_file_position_is_left_alone(f: Path) -> None:
    """pread: a caller can decode from the same descriptor right after hashing it (P2)."""
    with f.open("rb") as fh:
        fh.read(10)
        assert hash_file(fh, offset=0, length=100).sha256 == _sha(DATA[:100])
        assert fh.tell() == 10
        assert hash_fd(fh.fileno(), offset=10, length=10).sha256 == _sha(DATA[10:20])


def test_stream_without_a_descriptor() -> None:
    assert hash_file(io.BytesIO(DATA), offset=3, length=4000, chunk=512) == Digest(
        4000, _sha(DATA[3:4003])
    )


def test_bad_range_is_refused(f: Path) -> None:
    with pytest.raises(ValueError):
        hash_path(f, offset=-1)


def test_hasher_counts_and_hashes() -> None:
    h = Hasher()
    for i in range(0, len(DATA), 3000):
        h.update(DATA[i : i + 3000])
    assert h.digest() == Digest(len(DATA), _sha(DATA)) and h.hexdigest() == _sha(DATA)


# --- lock -------------------------------------------------------------------------------------


class Busy(LocalError):
    pass


def _lock(path: Path) -> AbstractContextManager[None]:
    return exclusive_lock(path, holder="another test", busy=Busy)


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with _lock(lock), pytest.raises(Busy, match=f"held by pid {os.getpid()}"), _lock(lock):
        pass
    with _lock(lock):
        pass


def test_lock_of_a_killed_holder_is_free_and_names_it_while_held(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    code = (
        "import sys, time; from pathlib import Path; from verifier.locking import exclusive_lock\n"
        "with exclusive_lock(Path(sys.argv[1]), holder='the holder'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match=f"held by pid {p.pid}"), _lock(lock):
            pass
    finally:
        p.kill()
        p.wait()
    with _lock(lock):  # the kernel released it: no stale lock
        pass


class CannotOpen(LocalError):
    pass


def test_unopenable_lock_uses_the_open_error(tmp_path: Path) -> None:
    lock = tmp_path / "missing-dir" / "lock"
    with (
        pytest.raises(CannotOpen, match="cannot open the lock file"),
        exclusive_lock(lock, holder="x", cannot_open=CannotOpen),
    ):
        pass
