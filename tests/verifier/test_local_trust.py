"""Issue 9, "corrupt local trust silently dropped": ngclient treats an invalid local file as
absent, so a trusted ``1.timestamp.json`` overwritten with ``{}`` lost that role's rollback
floor and the cycle went on with exit 0. Now every damaged trusted file is an error that
names it, nothing is changed, and the documented recovery (docs/OPERATIONS.md, "Damaged
trusted metadata") works."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.verifier.conftest import World, evolve
from verifier.effects import RealDisk
from verifier.errors import NothingToDoError, TrustedMetadataError
from verifier.state import StatePaths
from verifier.tuf.client import trusted_candidates
from verifier.tuf.store import TrustedStore


def _primed(w: World) -> World:
    """Trusts root 2 (stored) and a full set of timestamp/snapshot/targets."""
    w.sim.rotate_root()
    w.sim.publish()
    with pytest.raises(NothingToDoError):
        w.update()
    return w


def _role_file(w: World, role: str) -> Path:
    return TrustedStore(StatePaths(w.state).metadata, RealDisk()).current()[1][role]


def _stored_root(w: World) -> Path:
    return StatePaths(w.state).metadata / "root" / "2.root.json"


def _empty_timestamp(w: World) -> tuple[Path, bytes]:
    return _role_file(w, "timestamp"), b"{}"


def _truncated_stored_root(w: World) -> tuple[Path, bytes]:
    p = _stored_root(w)
    return p, p.read_bytes()[:200]


def _truncated_pinned_root(w: World) -> tuple[Path, bytes]:
    p = StatePaths(w.state).pinned_root
    return p, p.read_bytes()[:-10]


def _snapshot_signature_twice(w: World) -> tuple[Path, bytes]:
    p = _role_file(w, "snapshot")
    doc = json.loads(p.read_bytes())
    doc["signatures"].append(doc["signatures"][0])
    return p, json.dumps(doc).encode()


def _targets_duplicate_key(w: World) -> tuple[Path, bytes]:
    p = _role_file(w, "targets")
    text = p.read_text()
    return p, text.replace('"expires":', '"expires":"2099-01-01T00:00:00Z","expires":', 1).encode()


def _timestamp_bit_flip(w: World) -> tuple[Path, bytes]:
    p = _role_file(w, "timestamp")
    doc = json.loads(p.read_bytes())
    doc["signed"]["version"] += 1000  # a rollback floor raised by hand: the signature breaks
    return p, json.dumps(doc).encode()


def _pointer_duplicate_key(w: World) -> tuple[Path, bytes]:
    p = StatePaths(w.state).metadata / "current.json"
    doc = json.loads(p.read_bytes())
    return p, f'{{"generation": 0, "generation": {doc["generation"]}, "roles": []}}'.encode()


Damage = Callable[[World], tuple[Path, bytes]]
CASES: dict[str, tuple[Damage, str]] = {
    "trusted timestamp overwritten with {}": (
        _empty_timestamp,
        "expected timestamp metadata, found a JSON object without 'signed' and 'signatures'",
    ),
    "stored root truncated": (_truncated_stored_root, "truncated JSON"),
    "pinned root truncated": (_truncated_pinned_root, "truncated JSON"),
    "trusted snapshot with a signature listed twice": (
        _snapshot_signature_twice,
        "is listed twice",
    ),
    "trusted targets with a duplicate key": (
        _targets_duplicate_key,
        "duplicate key 'expires' at signed",
    ),
    "trusted timestamp no longer verifies": (
        _timestamp_bit_flip,
        "is signed by no trusted root's timestamp keys",
    ),
    "pointer with a duplicate key": (_pointer_duplicate_key, "duplicate key 'generation'"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_damaged_local_trust_is_an_error_naming_the_file(world: World, case: str) -> None:
    damage, found = CASES[case]
    _primed(world)
    world.sim.add_full(evolve(world.v1, 2), "2.0")  # the update a silent drop would install
    world.sim.publish()
    path, data = damage(world)
    path.write_bytes(data)
    before = world.snapshot()
    with pytest.raises(TrustedMetadataError) as refused:
        world.update()
    err = refused.value
    assert str(path) in err.message, err.message
    assert found in err.message, err.message
    assert err.exit_code == 5 and err.hint and "Damaged trusted metadata" in err.hint
    assert world.snapshot() == before and path.read_bytes() == data  # left to the operator
    assert world.boot_control().read().trial is None
    if case != "pointer with a duplicate key":
        with pytest.raises(TrustedMetadataError):  # status and verify-installed say so too
            trusted_candidates(StatePaths(world.state))


def test_the_documented_recovery_restores_updates(world: World) -> None:
    """docs/OPERATIONS.md: move STATE/metadata aside, rerun update; the device walks again from
    its pinned root, and the time floor (kept) still refuses anything stale."""
    _primed(world)
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    world.sim.publish()
    path, data = _empty_timestamp(world)
    path.write_bytes(data)
    meta = StatePaths(world.state).metadata
    shutil.move(meta, world.state / "metadata.damaged")
    assert str(world.update().version) == "2.0"
    assert TrustedStore(meta, RealDisk()).current()[0] == 1
