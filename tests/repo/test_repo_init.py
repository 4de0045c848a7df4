"""Repository creation: layout, expiries, thresholds, and a real TUF client accepting it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from repo.errors import RepositoryStateError, ThresholdError, UsageError
from repo.keys import KeyConfig
from repo.repository import Expiries, init, load_role_signers
from repo.state import load_state
from tests.helpers_repo import NOW, client_view, make_updater, root_bytes


def test_init_writes_a_consistent_snapshot_repository(repo: Path) -> None:
    names = sorted(p.name for p in (repo / "metadata").iterdir())
    assert names == [
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "root.json",
        "timestamp.json",
    ]
    assert (repo / "targets").is_dir()
    root = Metadata.from_bytes(root_bytes(repo))
    assert root.signed.consistent_snapshot is True
    assert root.signed.roles["root"].threshold == 2
    assert len(root.signed.roles["root"].keyids) == 2
    assert len(root.signatures) == 2
    assert (repo / "metadata" / "root.json").read_bytes() == root_bytes(repo)


def test_a_tuf_client_accepts_the_new_repository(repo: Path, tmp_path: Path) -> None:
    assert client_view(repo, tmp_path / "client", root_bytes(repo)) == {}


def test_default_expiries_per_role(repo: Path) -> None:
    st = load_state(repo)
    assert st.root.signed.expires - NOW == timedelta(days=365)
    assert st.targets.signed.expires - NOW == timedelta(days=91)
    assert st.snapshot.signed.expires - NOW == timedelta(days=7)
    assert st.timestamp.signed.expires - NOW == timedelta(days=1)


def test_expiries_are_configurable(keys: KeyConfig, tmp_path: Path) -> None:
    exp = Expiries(timestamp=timedelta(hours=6))
    st = init(tmp_path / "r", keys, NOW, expiries=exp)
    assert st.timestamp.signed.expires - NOW == timedelta(hours=6)
    with pytest.raises(UsageError, match="positive"):
        Expiries(snapshot=timedelta(0))


def test_expired_metadata_is_what_a_client_rejects(keys: KeyConfig, tmp_path: Path) -> None:
    """Sanity check of the client helper: a repository signed long ago does not verify."""
    from tuf.api.exceptions import ExpiredMetadataError

    old = init(tmp_path / "r", keys, NOW - timedelta(days=30))
    with pytest.raises(ExpiredMetadataError):
        make_updater(old.repo_dir, tmp_path / "c", root_bytes(old.repo_dir)).refresh()


def test_init_refuses_an_existing_repository(repo: Path, keys: KeyConfig) -> None:
    before = {p: p.read_bytes() for p in (repo / "metadata").iterdir()}
    with pytest.raises(RepositoryStateError, match="new or empty directory"):
        init(repo, keys, NOW)
    assert {p: p.read_bytes() for p in (repo / "metadata").iterdir()} == before


def test_init_refuses_root_below_threshold_and_writes_nothing(
    keys: KeyConfig, tmp_path: Path
) -> None:
    signers = load_role_signers(keys, ("root", "targets", "snapshot", "timestamp"))
    signers["root"] = signers["root"][:1]  # 1 of 2
    with pytest.raises(ThresholdError, match=r"root v1: expected 2 valid signature\(s\).*found 1"):
        init(tmp_path / "r", keys, NOW, signers=signers)
    assert not (tmp_path / "r").exists()


def test_each_key_counts_once(keys: KeyConfig, tmp_path: Path) -> None:
    signers = load_role_signers(keys, ("root", "targets", "snapshot", "timestamp"))
    signers["root"] = [signers["root"][0], signers["root"][0]]  # same key twice
    with pytest.raises(ThresholdError, match="found 1"):
        init(tmp_path / "r", keys, NOW, signers=signers)


def test_a_key_root_does_not_list_does_not_count(keys: KeyConfig, tmp_path: Path) -> None:
    signers = load_role_signers(keys, ("root", "targets", "snapshot", "timestamp"))
    signers["timestamp"] = signers["snapshot"]
    with pytest.raises(ThresholdError, match=r"timestamp v1.*signed by keys root does not list"):
        init(tmp_path / "r", keys, NOW, signers=signers)


def test_naive_time_is_refused(keys: KeyConfig, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="UTC"):
        init(tmp_path / "r", keys, NOW.replace(tzinfo=None))


def test_load_state_reports_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryStateError) as exc:
        load_state(tmp_path)
    assert "otakit repo init" in exc.value.diagnostic()


def test_load_state_refuses_a_snapshot_that_does_not_match_timestamp(repo: Path) -> None:
    snap = repo / "metadata" / "1.snapshot.json"
    doc = json.loads(snap.read_bytes())
    snap.write_text(json.dumps(doc))  # same content, different bytes
    with pytest.raises(RepositoryStateError, match="snapshot v1"):
        load_state(repo)
