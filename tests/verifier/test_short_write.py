"""A short ``pwrite`` (issue 9) is continued for the rest; one that makes no progress, or
fails part-way, is a local ``StorageError`` saying how far it got — never left for the slot's
read-back to report as a security failure."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from verifier.effects import RealDisk
from verifier.errors import LocalError, SecurityError, StorageError

DATA = bytes(range(256)) * 4


def _handle(tmp: Path):  # type: ignore[no-untyped-def]
    f = tmp / "slot.img"
    f.write_bytes(b"")
    return f, RealDisk().open_write(f, new=False)


def test_short_writes_are_continued_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite
    calls: list[tuple[int, int]] = []

    def at_most_100(fd: int, data: bytes, offset: int) -> int:
        calls.append((len(data), offset))
        return real(fd, bytes(data[:100]), offset)

    f, h = _handle(tmp_path)
    monkeypatch.setattr("verifier.effects.os.pwrite", at_most_100)
    h.pwrite(DATA, 10)
    h.close()
    assert f.read_bytes() == bytes(10) + DATA
    assert [o for _, o in calls] == list(range(10, 10 + len(DATA), 100))


def test_a_write_that_stops_making_progress_is_a_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite
    budget = [300]

    def fills_up(fd: int, data: bytes, offset: int) -> int:
        n = min(len(data), budget[0])
        budget[0] -= n
        return real(fd, bytes(data[:n]), offset) if n else 0

    f, h = _handle(tmp_path)
    monkeypatch.setattr("verifier.effects.os.pwrite", fills_up)
    with pytest.raises(StorageError) as e:
        h.pwrite(DATA, 4096)
    h.close()
    assert e.value.message == f"short write to {f}: wrote 300 of {len(DATA)} bytes at offset 4096"
    assert isinstance(e.value, LocalError) and not isinstance(e.value, SecurityError)
    assert e.value.exit_code == 5


def test_an_error_after_part_of_the_data_says_how_much_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite
    first = [True]

    def then_enospc(fd: int, data: bytes, offset: int) -> int:
        if first[0]:
            first[0] = False
            return real(fd, bytes(data[:512]), offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    f, h = _handle(tmp_path)
    monkeypatch.setattr("verifier.effects.os.pwrite", then_enospc)
    with pytest.raises(
        StorageError,
        match=rf"short write to {f}: wrote 512 of 1024 bytes at offset 0: No space left",
    ):
        h.pwrite(DATA, 0)
    h.close()


def test_a_failing_first_write_keeps_the_plain_diagnostic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def eio(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    f, h = _handle(tmp_path)
    monkeypatch.setattr("verifier.effects.os.pwrite", eio)
    with pytest.raises(StorageError, match=rf"cannot write {f}: EIO"):
        h.pwrite(DATA, 0)
    h.close()
