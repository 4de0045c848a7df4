"""The update pipeline end to end on the simulator: install, trial, commit, failure memory,
idempotence, resumption, delta fallback, preflight, stream mode and the drift check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers_crash import publish_delta
from tests.verifier.conftest import NOW, World, evolve, make_world
from tests.verifier.repo_sim import full_info
from verifier.artifact import ArtifactInfo, BaseRef, ImageVersion
from verifier.device import mark_bad, mark_good, rollback
from verifier.errors import (
    NothingToDoError,
    SlotError,
    TransportError,
)
from verifier.report import status, verify_installed


def _publish_v2(w: World, seed: int = 2, version: str = "2.0") -> bytes:
    v2 = evolve(w.v1, seed)
    w.sim.add_full(w.v1, "1.0")
    w.sim.add_full(v2, version)
    w.sim.publish()
    return v2


def test_update_installs_into_inactive_slot_and_arms_a_trial(world: World) -> None:
    v2 = _publish_v2(world)
    result = world.update(tries=2)
    assert (result.slot, str(result.version), result.kind) == ("b", "2.0", "full")
    assert world.slot_b.read_bytes() == v2
    assert world.slot_a.read_bytes() == world.v1  # I1
    st = world.boot_control().read()
    assert (st.booted, st.primary, st.trial, st.tries_left) == ("a", "a", "b", 2)
    assert list((world.state / "staging").iterdir()) == []  # staging cleaned


def test_second_update_does_nothing_and_downloads_nothing(world: World) -> None:
    _publish_v2(world)
    world.update()
    world.sim.requests.clear()
    with pytest.raises(NothingToDoError, match="already pending"):
        world.update()
    assert world.sim.target_requests() == []
    world.reboot()
    mark_good(world.device(), NOW)
    with pytest.raises(NothingToDoError, match=r"version 2\.0 is installed"):
        world.update()
    assert world.sim.target_requests() == []


def test_commit_after_health_check(world: World) -> None:
    _publish_v2(world)
    world.update()
    world.reboot()
    assert status(world.device(), NOW).boot.in_trial
    with pytest.raises(SlotError, match="uncommitted trial"):
        world.update()  # never overwrite the last known-good slot during a trial
    assert "committed" in mark_good(world.device(), NOW)
    st = status(world.device(), NOW)
    assert (st.boot.booted, st.boot.primary, st.boot.trial) == ("b", "b", None)
    assert st.journal.pending is None
    report = verify_installed(world.device())
    assert report.ok and str(report.version) == "2.0"
    with pytest.raises(NothingToDoError):
        mark_good(world.device(), NOW)


def test_failed_trial_rolls_back_is_recorded_and_not_retried(world: World) -> None:
    _publish_v2(world)
    world.update(tries=2)
    world.reboot(3)  # two tries of b without mark-good, then the bootloader returns to a
    st = status(world.device(), NOW)
    assert st.boot.booted == "a" and st.boot.trial is None
    failure = st.journal.last_failure
    assert failure is not None and str(failure.version) == "2.0"
    assert "tries ran out" in failure.reason
    assert st.to_dict()["last_failure"]["reason"] == failure.reason
    world.sim.requests.clear()
    with pytest.raises(NothingToDoError, match="failed its trial"):
        world.update()
    assert world.sim.target_requests() == []
    # a newer version is installed (I5: a failed cycle never blocks the next one)
    v3 = evolve(evolve(world.v1, 2), 3)
    world.sim.add_full(v3, "2.1")
    world.sim.publish()
    assert str(world.update().version) == "2.1"
    assert world.slot_b.read_bytes() == v3


def test_health_check_marks_running_trial_bad(world: World) -> None:
    _publish_v2(world)
    world.update()
    world.reboot()
    msg = mark_bad(world.device(), "b", NOW)
    assert "next boot: slot a" in msg
    world.reboot()
    st = status(world.device(), NOW)
    assert st.boot.booted == "a"
    assert st.journal.last_failure is not None
    assert "marked bad" in st.journal.last_failure.reason


def test_mark_bad_refuses_running_committed_slot(world: World) -> None:
    with pytest.raises(SlotError, match="running, committed"):
        mark_bad(world.device(), "a", NOW)


def test_operator_rollback_of_running_trial_and_of_committed_slot(world: World) -> None:
    _publish_v2(world)
    world.update()
    world.reboot()
    rollback(world.device(), NOW)
    world.reboot()
    assert world.boot_control().read().booted == "a"
    # later: 2.1 installed and committed, then the operator goes back to the other slot
    world.sim.add_full(evolve(world.v1, 5), "2.1")
    world.sim.publish()
    world.update()
    world.reboot()
    mark_good(world.device(), NOW)
    assert "next boot tries slot a" in rollback(world.device(), NOW)
    world.reboot()
    mark_good(world.device(), NOW)
    st = status(world.device(), NOW)
    assert (st.boot.booted, st.boot.primary) == ("a", "a")


def test_interrupted_download_resumes_with_a_range_request(world: World) -> None:
    v2 = _publish_v2(world)
    world.sim.break_after = 70_000
    with pytest.raises(TransportError, match="kept 70000 bytes"):
        world.update()
    assert world.boot_control().read().trial is None
    world.update()
    starts = [start for key, start in world.sim.target_requests()]
    assert starts == [0, 70_000]
    assert world.slot_b.read_bytes() == v2


def test_resume_without_range_support_restarts(world: World) -> None:
    v2 = _publish_v2(world)
    world.sim.break_after = 70_000
    with pytest.raises(TransportError):
        world.update()
    world.sim.range_ok = False
    world.update()
    assert [s for _, s in world.sim.target_requests()] == [0, 0]
    assert world.slot_b.read_bytes() == v2


def test_corrupt_partial_download_is_discarded_and_refetched(world: World) -> None:
    v2 = _publish_v2(world)
    world.sim.break_after = 70_000
    with pytest.raises(TransportError):
        world.update()
    part = next((world.state / "staging").glob("*.part"))
    part.write_bytes(b"\xff" * 70_000)  # bit rot in the partial file
    world.update()
    assert [s for _, s in world.sim.target_requests()] == [0, 70_000, 0]
    assert world.slot_b.read_bytes() == v2


def test_written_but_unarmed_slot_is_reverified_and_armed(world: World) -> None:
    """Crash between journalling the written slot and moving the boot pointer (I6)."""
    v2 = _publish_v2(world)
    boot = world.boot_control()

    class Crash(Exception):
        pass

    orig = type(boot).set_trial

    def crash(self: object, slot: str, tries: int) -> None:
        raise Crash

    type(boot).set_trial = crash  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(Crash):
            world.update()
    finally:
        type(boot).set_trial = orig  # type: ignore[method-assign]
    assert world.device().journal().pending is not None
    world.sim.requests.clear()
    result = world.update()
    assert result.kind == "resumed"
    assert world.sim.target_requests() == []
    assert world.boot_control().read().trial == "b"
    assert world.slot_b.read_bytes() == v2


def test_broken_delta_falls_back_to_full(world: World) -> None:
    v2 = evolve(world.v1, 2)
    world.sim.add_full(world.v1, "1.0")
    world.sim.add_full(v2, "2.0")
    base = full_info(world.v1, "1.0").image
    info = ArtifactInfo(
        "edge-gw",
        ("rpi4",),
        ImageVersion.parse("2.0"),
        "delta",
        "otakit-delta",
        full_info(v2, "2.0").image,
        BaseRef(ImageVersion.parse("1.0"), base),
        full_info(b"header", "2.0").image,
    )
    world.sim.add_artifact(info, b"not a delta container at all" * 10)
    world.sim.publish()
    result = world.update()
    assert result.fell_back and result.kind == "full"
    assert [k.rsplit(".", 2)[-1] for k, _ in world.sim.target_requests()] == ["otd", "zst"]
    assert world.slot_b.read_bytes() == v2


def test_stream_mode_installs_without_staging(world: World) -> None:
    v2 = _publish_v2(world)
    result = world.update(mode="stream")
    assert result.kind == "full"
    assert world.slot_b.read_bytes() == v2
    assert list((world.state / "staging").iterdir()) == []


def test_progress_reports_stages_with_totals(world: World) -> None:
    from verifier.update import UpdateOptions, update

    v2 = _publish_v2(world)
    seen: list[tuple[str, int, int]] = []
    update(
        world.device(),
        NOW,
        options=UpdateOptions(mountinfo=world.mountinfo),
        fetcher=world.sim,
        progress=lambda s, d, t: seen.append((s, d, t)),
    )
    stages = {s for s, _, _ in seen}
    assert {"download", "decode", "verify-slot"} <= stages
    assert ("decode", len(v2), len(v2)) in seen


def test_preflight_refuses_a_slot_mounted_read_write(world: World) -> None:
    _publish_v2(world)
    world.mountinfo.write_text(
        f"36 35 98:0 / /mnt/b rw,noatime shared:1 - ext4 {world.slot_b} rw,errors=continue\n"
    )
    boot_before = world.boot_control().read()
    with pytest.raises(SlotError, match="mounted read-write"):
        world.update()
    assert world.boot_control().read() == boot_before
    assert world.slot_b.read_bytes() == b""
    world.mountinfo.write_text(
        f"36 35 98:0 / /mnt/b ro,noatime shared:1 - ext4 {world.slot_b} ro\n"
    )
    world.update()  # read-only mount is fine


def test_preflight_refuses_a_slot_that_is_the_booted_one(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.slot_b.unlink()
    w.slot_b.symlink_to(w.slot_a)
    _publish_v2(w)
    with pytest.raises(SlotError, match="are the same file"):
        w.update()
    assert w.slot_a.read_bytes() == w.v1


def test_preflight_refuses_missing_slot(world: World) -> None:
    _publish_v2(world)
    world.slot_b.unlink()
    with pytest.raises(SlotError, match="does not exist"):
        world.update()


def test_verify_installed_detects_drift(world: World) -> None:
    world.sim.add_full(world.v1, "1.0")
    world.sim.publish()
    with pytest.raises(NothingToDoError):
        world.update()
    assert verify_installed(world.device()).ok
    with world.slot_a.open("r+b") as f:
        f.seek(5000)
        f.write(b"tampered")
    report = verify_installed(world.device())
    assert not report.ok
    assert report.found_sha256 != report.expected.sha256


def test_artifact_not_zstd_is_rejected_before_arming(world: World) -> None:
    from verifier.errors import TargetVerificationError

    v2 = evolve(world.v1, 2)
    world.sim.add_artifact(full_info(v2, "2.0"), b"\x28\xb5\x2f\xfd" + b"garbage" * 50)
    world.sim.publish()
    with pytest.raises(TargetVerificationError, match="not a valid zstd stream"):
        world.update()
    assert world.boot_control().read().trial is None


def _publish_real_delta_and_full(w: World, tmp_path: Path) -> bytes:
    """Publish 2.0 as a delta from the booted 1.0 (real encoder) and as a full image."""
    v2 = evolve(w.v1, 2)
    publish_delta(w.sim, w.v1, v2, tmp_path)
    w.sim.publish()
    return v2


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_real_delta_is_applied_from_the_booted_slot(tmp_path: Path, mode: str) -> None:
    w = make_world(tmp_path)
    v2 = _publish_real_delta_and_full(w, tmp_path)
    result = w.update(mode=mode)
    assert (result.kind, result.fell_back) == ("delta", False)
    assert [k.rsplit(".", 1)[-1] for k, _ in w.sim.target_requests()] == ["otd"]
    assert w.slot_b.read_bytes() == v2
    assert w.slot_a.read_bytes() == w.v1


def test_delta_with_a_drifted_base_falls_back_to_full(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    v2 = _publish_real_delta_and_full(w, tmp_path)
    with w.slot_a.open("r+b") as f:  # the running image drifted from what was signed
        f.write(b"drift")
    result = w.update()
    assert result.fell_back and result.kind == "full"
    assert w.slot_b.read_bytes() == v2


def test_operator_clears_failure_memory(world: World) -> None:
    from verifier.device import clear_failures

    _publish_v2(world)
    world.update(tries=1)
    world.reboot(2)
    with pytest.raises(NothingToDoError, match="failed its trial"):
        world.update()
    assert "2.0" in clear_failures(world.device(), NOW)
    assert str(world.update().version) == "2.0"
    with pytest.raises(NothingToDoError):
        clear_failures(world.device(), NOW)


def test_one_device_process_at_a_time(world: World) -> None:
    from verifier.device import device_lock
    from verifier.errors import LocalError

    with (
        device_lock(world.state),
        pytest.raises(LocalError, match="another otakit-device"),
        device_lock(world.state),
    ):
        pass
    with device_lock(world.state):  # released
        pass
