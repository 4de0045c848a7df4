"""``status`` shows the trusted metadata from a memo keyed by the bytes it came from
(``verifier/trusted_memo.py``, issue 13): fast and without python-tuf while nothing changed,
verified again the moment any file changed, and never read by what installs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_crash import installed_v2
from tests.verifier.conftest import NOW, World
from verifier import trusted_memo
from verifier.errors import NothingToDoError
from verifier.report import status, verify_installed
from verifier.state import StatePaths

ROOT = Path(__file__).resolve().parents[2]


def _published(w: World, tmp: Path) -> None:
    """v1 published and refreshed once (the update finds v1 installed: nothing to do)."""
    w.sim.add_full(w.v1, "1.0")
    w.sim.publish()
    with pytest.raises(NothingToDoError):
        w.update()


def _memo(w: World) -> dict[str, object]:
    doc: dict[str, object] = json.loads(trusted_memo.memo_path(StatePaths(w.state)).read_bytes())
    return doc


def _without_memo(w: World) -> dict[str, object]:
    trusted_memo.memo_path(StatePaths(w.state)).unlink(missing_ok=True)
    return status(w.device(), NOW).to_dict()


def test_a_refresh_leaves_the_memo_and_status_answers_the_same_from_it(
    world: World, tmp_path: Path
) -> None:
    _published(world, tmp_path)
    memo = _memo(world)
    assert memo["product"] == "edge-gw" and memo["schema"] == 1
    assert memo["inputs"] == trusted_memo.inputs_digest(StatePaths(world.state))
    from_memo = status(world.device(), NOW).to_dict()
    assert from_memo["slots"]["a"]["published"]["target"] == "edge-gw/1.0/full.img.zst"
    assert from_memo == _without_memo(world)


def test_status_from_the_memo_loads_no_tuf_and_no_crypto(world: World, tmp_path: Path) -> None:
    _published(world, tmp_path)
    code = (
        "import sys, json, datetime, pathlib\n"
        "from verifier.device import Device\n"
        "from verifier.effects import RealDisk\n"
        "from verifier.report import status\n"
        f"dev = Device.open(pathlib.Path({str(world.state)!r}), RealDisk())\n"
        f"st = status(dev, datetime.datetime.fromisoformat({NOW.isoformat()!r}))\n"
        "loaded = sorted(m for m in ('tuf', 'securesystemslib', 'cryptography', 'urllib3') "
        "if m in sys.modules)\n"
        "print(json.dumps([st.to_dict()['slots']['a']['published']['target'], loaded]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == ["edge-gw/1.0/full.img.zst", []]


def test_damaged_metadata_after_the_memo_is_seen_not_hidden(world: World, tmp_path: Path) -> None:
    """The memo names the bytes it was computed from: one flipped byte in the trusted
    targets misses it, and status verifies and reports the damage."""
    _published(world, tmp_path)
    assert status(world.device(), NOW).to_dict()["published_problem"] is None
    targets = max((world.state / "metadata").glob("*.targets.json"))
    data = bytearray(targets.read_bytes())
    data[data.index(b'"version"') + 1] ^= 0x20  # "Version": the signature no longer matches
    targets.write_bytes(bytes(data))
    st = status(world.device(), NOW).to_dict()
    assert st["published_problem"], st
    assert st["slots"]["a"]["published"] is None


@pytest.mark.parametrize("field", ["inputs", "product", "schema"])
def test_a_memo_for_other_bytes_another_product_or_schema_is_not_used(
    world: World, tmp_path: Path, field: str
) -> None:
    _published(world, tmp_path)
    memo = _memo(world)
    memo["candidates"] = []  # what a stale memo would show: nothing published
    memo[field] = {"inputs": "0" * 64, "product": "other", "schema": 2}[field]
    trusted_memo.memo_path(StatePaths(world.state)).write_text(json.dumps(memo))
    st = status(world.device(), NOW).to_dict()
    assert st["slots"]["a"]["published"]["target"] == "edge-gw/1.0/full.img.zst"


@pytest.mark.parametrize("garbage", [b"", b"{", b'{"schema": 1, "schema": 1}', b"[]", b"\xff"])
def test_an_unreadable_memo_is_verified_around(
    world: World, tmp_path: Path, garbage: bytes
) -> None:
    _published(world, tmp_path)
    memo = _memo(world)
    if garbage == b"[]":
        memo["candidates"] = [{"path": "x", "length": "1", "hashes": {}, "custom": {}}]
        garbage = json.dumps(memo).encode()
    trusted_memo.memo_path(StatePaths(world.state)).write_bytes(garbage)
    st = status(world.device(), NOW).to_dict()
    assert st["slots"]["a"]["published"]["target"] == "edge-gw/1.0/full.img.zst"
    assert _memo(world)["inputs"] == trusted_memo.inputs_digest(StatePaths(world.state))


def test_files_changing_while_it_verifies_leave_no_memo(world: World, tmp_path: Path) -> None:
    _published(world, tmp_path)
    paths = StatePaths(world.state)
    trusted_memo.memo_path(paths).unlink()

    def verify() -> trusted_memo.Answer:
        (world.state / "metadata" / "current.json").write_bytes(b"{}")  # a refresh committing
        return []

    before = trusted_memo.inputs_digest(paths)
    assert trusted_memo.remember(paths, world.disk, "edge-gw", verify, before) == []
    assert not trusted_memo.memo_path(paths).exists()


def test_the_memo_is_display_only_what_installs_never_reads_it(
    world: World, tmp_path: Path
) -> None:
    """A memo forged for the right bytes changes what status shows, and nothing else:
    verify-installed and update check the metadata themselves."""
    installed_v2(world, tmp_path)
    memo = _memo(world)
    memo["candidates"] = []
    trusted_memo.memo_path(StatePaths(world.state)).write_text(json.dumps(memo))
    assert status(world.device(), NOW).to_dict()["slots"]["b"]["published"] is None
    drift = verify_installed(world.device())
    assert drift.ok and drift.published is not None
    assert drift.published.target == "edge-gw/2.0/full.img.zst"
