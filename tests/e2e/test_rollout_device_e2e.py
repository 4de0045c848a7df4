"""The device side of staged rollouts and recall, for real: the installed ``otakit-device``
(file boot backend, file slots) against nginx serving a repository whose targets the test
re-signs with a rollout policy or a recall, through the publisher library (the same
``custom`` change ``otakit rollout …`` signs; that command is another part's)."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

from repo.keys import load_key_config
from repo.nginx import served_requests
from repo.repository import load_role_signers, open_transaction
from repo.roles import CHAIN_ROLES
from repo.withdraw import listed_artifacts
from tests.e2e.test_end_to_end import PRODUCT, make_device, run, sha, status
from tests.e2e.test_end_to_end import published as published  # the module-scoped fixture
from tests.e2e.test_lifecycle_e2e import _device_on
from verifier.artifact import ArtifactInfo, Withdrawal
from verifier.rollout import WHOLE_FLEET, RolloutPolicy, Wave, fleet_position

REASON = "health check fails on rev-C"


def _seed_at(low: int, high: int) -> bytes:
    for i in range(10_000):
        seed = i.to_bytes(32, "big")
        if low <= fleet_position(seed, PRODUCT, "2.0") < high:
            return seed
    raise AssertionError("no seed")


MID = _seed_at(4000, 6000)


def resign(repo: Path, published: Path, version: str, **changes: object) -> None:
    """Change the otakit metadata of every target of ``version`` in one signed publication."""
    signers = load_role_signers(load_key_config(published / "keys" / "keys.json"), CHAIN_ROLES)
    with open_transaction(repo) as tx:
        for a in listed_artifacts(tx.state.targets.signed):
            if a.info.product == PRODUCT and str(a.info.version) == version:
                info = dataclasses.replace(a.info, **changes)  # type: ignore[arg-type]
                tx.set_custom(a.path, {**a.custom, **info.to_custom()})
        tx.commit(signers, datetime.now(UTC))


def update(state: Path, *args: str, ok: bool = True) -> tuple[dict[str, object], str]:
    proc = run("otakit-device", "--state", state, "update", "--json", *args, ok=ok)
    last = json.loads(proc.stdout.splitlines()[-1])
    assert isinstance(last, dict)
    return last, proc.stderr


def report(state: Path) -> dict[str, object]:
    data = json.loads(run("otakit-device", "--state", state, "report", "--json").stdout)
    assert isinstance(data, dict)
    return data


def _now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_a_device_outside_the_wave_waits_then_updates_once_its_wave_opens(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    (state / "rollout-seed").write_bytes(MID)  # a known place in the fleet: 40-60 %
    opens_in = 15
    start = _now_s() - timedelta(seconds=10)
    policy = RolloutPolicy(
        start, (Wave(500, timedelta(0)), Wave(WHOLE_FLEET, timedelta(seconds=10 + opens_in)))
    )
    resign(repo, published, "2.0", rollout=policy)
    opening = start + timedelta(seconds=10 + opens_in)

    last, _ = update(state)
    assert last["event"] == "nothing-to-do", last
    pos = fleet_position(MID, PRODUCT, "2.0")
    msg = str(last["message"])
    assert f"this device is at {pos / 100:g} %" in msg and "5 % of the fleet allowed" in msg
    assert opening.strftime("%Y-%m-%dT%H:%M:%SZ") in msg
    st = status(state)
    rollout = st["rollout"]
    assert isinstance(rollout, dict)
    assert (rollout["version"], rollout["position_bp"], rollout["allowed_bp"]) == ("2.0", pos, 500)
    assert rollout["wait_until"] == opening.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rollout["halted"] is False and st["trial"] is None
    text = run("otakit-device", "--state", state, "status").stdout
    assert "rollout of 2.0: is not started" in text

    time.sleep(max(0.0, (opening - datetime.now(UTC)).total_seconds()) + 1)
    last, _ = update(state)
    assert (last["event"], last["version"], last["kind"]) == ("done", "2.0", "delta")
    assert last["waves_overridden"] is False
    assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")


def test_now_overrides_the_waves_loudly_and_version_alone_does_not(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    (state / "rollout-seed").write_bytes(MID)
    later = timedelta(days=3)
    waves = (Wave(500, timedelta(0)), Wave(WHOLE_FLEET, later))
    resign(repo, published, "2.0", rollout=RolloutPolicy(_now_s(), waves))
    last, _ = update(state)
    assert last["event"] == "nothing-to-do"
    proc = run("otakit-device", "--state", state, "update", "--version", "2.0", "--json", ok=False)
    assert proc.returncode == 2
    err = json.loads(proc.stdout.splitlines()[-1])["error"]
    assert err["kind"] == "rollout-wait" and "--now" in err["hint"]

    last, stderr = update(state, "--now")
    assert (last["event"], last["version"], last["waves_overridden"]) == ("done", "2.0", True)
    assert "warning" in stderr.lower() and "overridden" in stderr
    cycle = report(state)["last_cycle"]
    assert isinstance(cycle, dict)
    assert (cycle["outcome"], cycle["waves_overridden"]) == ("installed", True)


def test_a_halted_release_is_not_started_not_even_with_now(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    empty = sha(tmp_path / "slot-b.img")
    policy = RolloutPolicy(_now_s() - timedelta(days=1), (Wave(WHOLE_FLEET, timedelta(0)),), True)
    resign(repo, published, "2.0", rollout=policy)
    for args in ((), ("--now",)):
        last, _ = update(state, *args)
        assert last["event"] == "nothing-to-do" and "halted" in str(last["message"])
    proc = run(
        "otakit-device", "--state", state, "update", "--version", "2.0", "--now", "--json", ok=False
    )  # fmt: skip
    assert proc.returncode == 2
    assert json.loads(proc.stdout.splitlines()[-1])["error"]["kind"] == "halted-release"
    assert sha(tmp_path / "slot-b.img") == empty
    rollout = status(state)["rollout"]
    assert isinstance(rollout, dict) and rollout["halted"] is True


def test_a_recall_switches_back_with_no_artifact_downloaded_then_commits(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    assert update(state)[0]["event"] == "done"
    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")
    slot_a = sha(tmp_path / "slot-a.img")
    resign(repo, published, "2.0", withdrawn=Withdrawal(REASON, "2026-12-02T10:00:00Z", True))
    before = len(served_requests(tmp_path / "nginx"))

    last, _ = update(state)
    assert (last["event"], last["kind"], last["version"], last["slot"]) == (
        "done", "switch", "1.0", "a",
    )  # fmt: skip
    assert last["outcome"] == "recalled-switch" and last["recalled"] == REASON
    cycle = served_requests(tmp_path / "nginx")[before:]
    assert [r.path for r in cycle if "/targets/" in r.path] == []  # not one artifact byte
    metadata_bytes = sum(r.body_bytes for r in cycle)
    got = report(state)
    last_cycle = got["last_cycle"]
    assert isinstance(last_cycle, dict)
    assert last_cycle["outcome"] == "recalled-switch"
    # the new metadata only (nginx also counts the body of the 404 for the next root)
    assert all("/metadata/" in r.path for r in cycle)
    assert 0 < int(last_cycle["bytes_downloaded"]) <= metadata_bytes  # type: ignore[call-overload]
    assert sha(tmp_path / "slot-a.img") == slot_a  # switched to, not rewritten
    st = status(state)
    assert (st["booted"], st["trial"]) == ("b", "a")
    assert any(f"recalled: {REASON}" in w for w in st["warnings"])  # type: ignore[union-attr]
    text = run("otakit-device", "--state", state, "report").stdout
    assert f"recalled: {REASON}" in text

    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")
    st = status(state)
    assert (st["booted"], st["primary"], st["trial"]) == ("a", "a", None)
    drift = json.loads(run("otakit-device", "--state", state, "verify-installed", "--json").stdout)
    assert drift["ok"] is True and drift["version"] == "1.0"
    again, _ = update(state)  # the recalled release is never installed again
    assert again["event"] == "nothing-to-do" and f"2.0 was recalled: {REASON}" in str(
        again["message"]
    )


def test_a_recall_with_no_previous_image_in_the_other_slot_installs_the_older_release(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = _device_on(tmp_path, "dev", url, repo, published / "v2.img", "2.0")
    resign(repo, published, "2.0", withdrawn=Withdrawal(REASON, "2026-12-02T10:00:00Z", True))
    last, _ = update(state)
    assert (last["event"], last["kind"], last["version"], last["slot"]) == (
        "done", "full", "1.0", "b",
    )  # fmt: skip
    assert last["outcome"] == "recalled-install"
    assert sha(tmp_path / "dev" / "slot-b.img") == sha(published / "v1.img")
    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")
    cycle = report(state)
    assert cycle["running"] == {"slot": "b", "version": "1.0", "committed": True}


def test_a_recall_forged_on_the_server_without_the_targets_key_is_refused(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    """A compromised server holding the online keys (snapshot, timestamp) publishes a new
    targets version recalling 2.0, signed with a key of its own: the device running 2.0
    refuses it (exit 3) and stays; the slot it would have gone back to is not armed."""
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    assert update(state)[0]["event"] == "done"
    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")
    before = status(state)
    meta = repo / "metadata"

    def newest(role: str) -> Path:
        return max(meta.glob(f"*.{role}.json"), key=lambda p: int(p.name.split(".")[0]))

    targets = Metadata[Targets].from_bytes(newest("targets").read_bytes())
    for tf in targets.signed.targets.values():
        custom = tf.unrecognized_fields["custom"]
        info = ArtifactInfo.from_custom(custom)
        if str(info.version) == "2.0":
            recalled = dataclasses.replace(
                info, withdrawn=Withdrawal("forged", "2026-12-02T10:00:00Z", True)
            )
            tf.unrecognized_fields["custom"] = {**custom, **recalled.to_custom()}
    targets.signed.version += 1
    targets.signatures.clear()
    targets.sign(CryptoSigner.generate_ed25519())
    (meta / f"{targets.signed.version}.targets.json").write_bytes(targets.to_bytes())
    online = load_role_signers(
        load_key_config(published / "keys" / "keys.json"), ("snapshot", "timestamp")
    )
    snapshot = Metadata[Snapshot].from_bytes(newest("snapshot").read_bytes())
    snapshot.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    snapshot.signed.version += 1
    snapshot.signatures.clear()
    for signer in online["snapshot"]:
        snapshot.sign(signer, append=True)
    (meta / f"{snapshot.signed.version}.snapshot.json").write_bytes(snapshot.to_bytes())
    timestamp = Metadata[Timestamp].from_bytes((meta / "timestamp.json").read_bytes())
    timestamp.signed.snapshot_meta = MetaFile(snapshot.signed.version)
    timestamp.signed.version += 1
    timestamp.signatures.clear()
    for signer in online["timestamp"]:
        timestamp.sign(signer, append=True)
    (meta / "timestamp.json").write_bytes(timestamp.to_bytes())

    proc = run("otakit-device", "--state", state, "update", "--now", "--json", ok=False)
    assert proc.returncode == 3, proc.stderr
    err = json.loads(proc.stdout.splitlines()[-1])["error"]
    assert err["family"] == "security" and "not signed by the authorized keys" in err["hint"], err
    after = status(state)
    for key in ("booted", "primary", "trial", "pending"):
        assert after[key] == before[key]
