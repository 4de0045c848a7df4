"""``refresh``: the online keys keep snapshot and timestamp fresh without touching targets.

Clients here are python-tuf's own ``Updater``, which checks expiry against the system
clock, so the repository is created at the real current time (``T0``), not a fixed date.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from repo.errors import (
    PublishError,
    RepositoryStateError,
    ThresholdError,
    UntrustedRepositoryError,
    UsageError,
)
from repo.keys import KeyConfig
from repo.refresh import refresh, repository_status
from repo.repository import load_role_signers
from repo.state import load_state
from tests.helpers_repo import LIVE_CONTENT as A
from tests.helpers_repo import NOW as T0
from tests.helpers_repo import client_view, make_updater, root_bytes
from tests.helpers_repo import publisher_cli as _run
from tests.repo.test_repo_publish import FailingDisk


def _online(keys: KeyConfig) -> dict[str, list[object]]:
    return dict(load_role_signers(keys, ("snapshot", "timestamp")))  # type: ignore[arg-type]


def _files(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "metadata").iterdir())}


def test_refresh_resigns_snapshot_and_timestamp_and_leaves_targets(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    before = load_state(live)
    later = T0 + timedelta(hours=5)
    result = refresh(live, load_role_signers(keys, ("snapshot", "timestamp")), later)
    after = load_state(live)
    assert result.refreshed == ("snapshot", "timestamp")
    assert after.snapshot.signed.version == before.snapshot.signed.version + 1
    assert after.timestamp.signed.version == before.timestamp.signed.version + 1
    assert after.snapshot.signed.expires == later + timedelta(days=7)
    assert after.timestamp.signed.expires == later + timedelta(days=1)
    assert result.expires["timestamp"] == later + timedelta(days=1)
    # targets untouched: same version, same bytes referenced
    assert after.targets.signed.version == before.targets.signed.version
    assert after.snapshot.signed.meta == before.snapshot.signed.meta
    assert after.root_bytes == before.root_bytes
    assert result.warnings == ()
    assert client_view(live, tmp_path / "fresh", root_bytes(live)) == {"prod/1/a.img": A}


def test_a_device_that_saw_the_old_timestamp_accepts_the_new_one(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    client = tmp_path / "device"
    client_view(live, client, root_bytes(live))
    old_ts = json.loads((client / "metadata" / "timestamp.json").read_bytes())["signed"]
    refresh(live, load_role_signers(keys, ("snapshot", "timestamp")), T0 + timedelta(hours=1))
    make_updater(live, client, root_bytes(live)).refresh()
    new_ts = json.loads((client / "metadata" / "timestamp.json").read_bytes())["signed"]
    assert new_ts["version"] == old_ts["version"] + 1
    assert new_ts["expires"] > old_ts["expires"]


def test_within_does_nothing_far_from_expiry_and_refreshes_close_to_it(
    live: Path, keys: KeyConfig
) -> None:
    signers = load_role_signers(keys, ("snapshot", "timestamp"))
    before = _files(live)
    idle = refresh(live, signers, T0 + timedelta(hours=1), within=timedelta(hours=2))
    assert idle.refreshed == () and "nothing due" in idle.reason
    assert _files(live) == before
    # 23h after release the 1-day timestamp expires within 2 hours
    due = refresh(live, signers, T0 + timedelta(hours=23), within=timedelta(hours=2))
    assert due.refreshed == ("snapshot", "timestamp")
    assert "timestamp" in due.reason and "snapshot" not in due.reason
    assert load_state(live).timestamp.signed.expires == T0 + timedelta(hours=47)


@pytest.mark.parametrize("role", ["snapshot", "timestamp"])
def test_a_wrong_online_key_is_a_threshold_error_and_writes_nothing(
    live: Path, keys: KeyConfig, role: str
) -> None:
    signers = dict(load_role_signers(keys, ("snapshot", "timestamp")))
    signers[role] = [CryptoSigner.generate_ed25519()]
    before = _files(live)
    with pytest.raises(ThresholdError, match=f"{role} v3: expected 1 valid signature"):
        refresh(live, signers, T0)
    assert _files(live) == before


def test_offline_keys_cannot_stand_in_for_online_ones(live: Path, keys: KeyConfig) -> None:
    signers = {"snapshot": load_role_signers(keys, ("targets",))["targets"]}
    signers["timestamp"] = load_role_signers(keys, ("timestamp",))["timestamp"]
    with pytest.raises(ThresholdError, match="signed by keys root does not list"):
        refresh(live, signers, T0)


def test_refresh_never_launders_tampered_metadata(live: Path, keys: KeyConfig) -> None:
    snap = live / "metadata" / "2.snapshot.json"
    doc = json.loads(snap.read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    snap.write_text(json.dumps(doc))
    ts = live / "metadata" / "timestamp.json"
    before = ts.read_bytes()
    with pytest.raises(RepositoryStateError, match=r"snapshot v2: timestamp\.json says"):
        refresh(live, load_role_signers(keys, ("snapshot", "timestamp")), T0)
    assert ts.read_bytes() == before
    assert not (live / "metadata" / "3.snapshot.json").exists()


def test_forged_timestamp_is_refused_before_signing(live: Path, keys: KeyConfig) -> None:
    ts = live / "metadata" / "timestamp.json"
    doc = json.loads(ts.read_bytes())
    doc["signed"]["version"] = 99
    ts.write_text(json.dumps(doc))
    with pytest.raises(UntrustedRepositoryError, match="published timestamp v99"):
        refresh(live, load_role_signers(keys, ("snapshot", "timestamp")), T0)
    assert not (live / "metadata" / "3.snapshot.json").exists()


def test_a_crash_at_any_write_leaves_the_previous_repository_valid(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    signers = load_role_signers(keys, ("snapshot", "timestamp"))
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(live, probe)
    refresh(probe, signers, T0, disk=counting)
    total = len(counting.effects)
    ts_rename = counting.effects.index("rename timestamp.json")
    assert counting.effects.index("rename 3.snapshot.json") < ts_rename
    assert total >= 10, counting.effects
    seen = tmp_path / "seen"
    client_view(live, seen, root_bytes(live))
    for k in range(total):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(live, work)
        with pytest.raises(PublishError):
            refresh(work, signers, T0, disk=FailingDisk(k))
        want_ts = 3 if k > ts_rename else 2
        assert load_state(work).timestamp.signed.version == want_ts, counting.effects[k]
        assert client_view(work, tmp_path / f"fresh-{k}", root_bytes(work)) == {"prod/1/a.img": A}
        cont = tmp_path / f"cont-{k}"
        shutil.copytree(seen, cont)
        make_updater(work, cont, root_bytes(work)).refresh()
        refresh(work, signers, T0)  # the rerun (the next timer tick) completes
        assert load_state(work).timestamp.signed.version == want_ts + 1


def test_targets_are_resigned_only_on_request_and_only_with_the_targets_key(
    live: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    before = load_state(live)
    online = dict(load_role_signers(keys, ("snapshot", "timestamp")))
    files = _files(live)
    with pytest.raises(ThresholdError, match="targets v3: expected 1"):
        refresh(live, online, T0, targets=True)  # no targets key loaded
    assert _files(live) == files
    later = T0 + timedelta(days=85)
    signers = dict(load_role_signers(keys, ("targets", "snapshot", "timestamp")))
    result = refresh(live, signers, later, within=timedelta(hours=1), targets=True)
    assert result.refreshed == ("targets", "snapshot", "timestamp")
    after = load_state(live)
    assert after.targets.signed.version == before.targets.signed.version + 1
    assert after.targets.signed.targets == before.targets.signed.targets
    assert after.targets.signed.expires == later + timedelta(days=91)
    assert result.warnings == ()  # the refreshed targets are far from expiry again
    assert client_view(live, tmp_path / "fresh", root_bytes(live)) == {"prod/1/a.img": A}


def test_offline_roles_close_to_expiry_are_reported(live: Path, keys: KeyConfig) -> None:
    signers = load_role_signers(keys, ("snapshot", "timestamp"))
    soon = refresh(live, signers, T0 + timedelta(days=80))  # targets: 91 days
    assert [w.role for w in soon.warnings] == ["targets"]
    assert "in 11.0 days" in soon.warnings[0].message()
    assert "refresh REPO --keys KEYS --targets" in soon.warnings[0].message()
    late = refresh(live, signers, T0 + timedelta(days=360))  # root: 365 days
    assert [(w.role, w.expired) for w in late.warnings] == [("root", False), ("targets", True)]
    assert "EXPIRED" in late.warnings[1].message()
    assert "rotate-root" in late.warnings[0].message()


def test_refresh_refuses_a_naive_time_and_a_negative_window(live: Path, keys: KeyConfig) -> None:
    signers = load_role_signers(keys, ("snapshot", "timestamp"))
    with pytest.raises(UsageError):
        refresh(live, signers, datetime(2026, 1, 1))
    with pytest.raises(UsageError, match="non-negative"):
        refresh(live, signers, T0, within=timedelta(hours=-1))


# --- command line ------------------------------------------------------------------------------


def test_cli_refresh_json_and_within(
    live: Path, keys: KeyConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = str(keys.source)
    code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", conf, "--within", "2")
    assert code == 0, err
    assert "nothing due" in err and load_state(live).timestamp.signed.version == 2
    code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", conf, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["refreshed"] == ["snapshot", "timestamp"]
    assert (
        doc["roles"]["timestamp"]["version"] == 3
        and [w for w in doc["warnings"] if "role" in w] == []
    )  # demo keys only
    assert doc["roles"]["timestamp"]["expires"].endswith("Z")
    code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", conf)
    assert code == 0 and "timestamp v4" in out and "targets" not in out
    code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", conf, "--targets")
    assert code == 0 and "targets v3" in out and "timestamp v5" in out


def test_cli_refresh_warns_loudly_but_exits_zero(
    live: Path, keys: KeyConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "repo", "refresh", str(live), "--keys", str(keys.source), "--json",
        "--warn-days", "100",
    )  # fmt: skip
    assert code == 0, err
    assert "WARNING" in err and "targets" in err
    assert [w["role"] for w in json.loads(out)["warnings"] if "role" in w] == ["targets"]


def test_cli_refresh_with_a_wrong_key_exits_3(
    live: Path, keys: KeyConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(keys.source.read_text())
    doc["roles"]["timestamp"] = doc["roles"]["snapshot"]
    bad = keys.source.parent / "swapped.json"
    bad.write_text(json.dumps(doc))
    try:
        code, out, err = _run(capsys, "repo", "refresh", str(live), "--keys", str(bad))
    finally:
        bad.unlink()
    assert code == 3 and out == ""
    assert "security error" in err and "timestamp v3" in err
    assert "Traceback" not in err


def test_status_reports_expiries_and_a_stalled_refresh_timer(live: Path) -> None:
    files = _files(live)
    fine = repository_status(live, T0 + timedelta(hours=1))
    assert fine.warnings == () and fine.versions["timestamp"] == 2
    assert fine.expires["timestamp"] == T0 + timedelta(days=1)
    stalled = repository_status(live, T0 + timedelta(days=2))
    assert [(w.role, w.expired) for w in stalled.warnings] == [("timestamp", True)]
    assert "is its timer running?" in stalled.warnings[0].message()
    assert _files(live) == files


def test_cli_status_needs_no_keys(live: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "repo", "status", str(live), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (
        doc["roles"]["targets"]["version"] == 2
        and [w for w in doc["warnings"] if "role" in w] == []
    )  # demo keys only
    code, out, err = _run(capsys, "repo", "status", str(live), "--warn-days", "400")
    assert code == 0 and "WARNING: root v1 expires" in err
    assert out.splitlines()[0].startswith("root\tv1\texpires ")
