"""Smoke test of bench/catalog_bench.py at a small size (the 100k case is run by hand)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "catalog_bench.py"


def test_catalog_bench_runs_and_a_delegated_release_writes_a_constant_number_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("catalog_bench", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "catalog_bench", bench)
    spec.loader.exec_module(bench)
    (tmp_path / "flat").mkdir()
    (tmp_path / "deleg").mkdir()
    flat = bench.run_case(tmp_path / "flat", 800, False, 2, 1)
    deleg = bench.run_case(tmp_path / "deleg", 800, True, 2, 1)
    assert flat["release"].files == 3  # targets, snapshot, timestamp
    # product role, at most one bin per target of the version leaving the head, snapshot,
    # timestamp
    assert 3 <= deleg["release"].files <= 2 + 4
    assert deleg["device"].found and deleg["anchor"].found
    assert deleg["device"].bytes < flat["device"].bytes
    print(bench.table([flat, deleg], 2, 1))
