"""Rollouts and recall through the real update pipeline on the simulator: the rollout seed,
waves at a passed-in time, ``--now``, and a recall's switch back through the trial
machinery (and what happens when the other slot is no longer the previous image)."""

from __future__ import annotations

import dataclasses
import json
import stat
from datetime import timedelta

import pytest

from tests.verifier.conftest import NOW, World, evolve
from tests.verifier.test_plan_rollout import _seed_at
from verifier.artifact import ArtifactInfo, Withdrawal
from verifier.device import mark_good
from verifier.device_report import device_report
from verifier.errors import NothingToDoError, RolloutSeedError, SecurityError
from verifier.report import status
from verifier.rollout import WHOLE_FLEET, RolloutPolicy, Wave, fleet_position
from verifier.update import UpdateOptions, update

RECALL = Withdrawal("health check fails on rev-C", "2026-12-02T10:00:00Z", recall=True)
H = timedelta(hours=1)
#: a device at 40-60 % of the fleet for release 2.0
MID = _seed_at(4000, 6000, "2.0")
WAVES = RolloutPolicy(NOW.replace(microsecond=0), (Wave(500, 0 * H), Wave(WHOLE_FLEET, 48 * H)))


def _set_seed(w: World, seed: bytes) -> None:
    (w.state / "rollout-seed").write_bytes(seed)


def _change(w: World, version: str, **changes: object) -> None:
    """Re-sign every target of ``version`` with changed otakit metadata (what the
    publisher's rollout and recall commands do: only ``custom`` changes)."""
    for tf in w.sim.targets.signed.targets.values():
        info = ArtifactInfo.from_custom(tf.unrecognized_fields["custom"])
        if str(info.version) == version:
            tf.unrecognized_fields["custom"] = dataclasses.replace(info, **changes).to_custom()  # type: ignore[arg-type]
    w.sim.publish()


def _publish(w: World, policy: RolloutPolicy | None = None) -> bytes:
    v2 = evolve(w.v1, 2)
    w.sim.add_full(w.v1, "1.0")
    w.sim.add_full(v2, "2.0")
    w.sim.publish()
    if policy is not None:
        _change(w, "2.0", rollout=policy)
    return v2


def _on_v2(w: World) -> bytes:
    """A device that took 2.0 and committed it: slot a still holds 1.0."""
    v2 = _publish(w)
    w.update()
    w.reboot()
    mark_good(w.device(), NOW)
    return v2


# --- the seed ---------------------------------------------------------------------------------


def test_init_makes_a_private_32_byte_seed_that_no_report_shows(world: World) -> None:
    path = world.state / "rollout-seed"
    seed = path.read_bytes()
    assert len(seed) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    texts = [
        json.dumps(status(world.device(), NOW).to_dict()),
        json.dumps(device_report(world.device(), NOW).data),
    ]
    for text in texts:
        assert seed.hex() not in text and seed.hex()[:16] not in text


def test_a_state_directory_from_before_seeds_gets_one_at_its_first_update(world: World) -> None:
    (world.state / "rollout-seed").unlink()
    _publish(world)
    made: list[int] = []

    def token(n: int) -> bytes:
        made.append(n)
        return MID

    update(
        world.device(),
        NOW,
        options=UpdateOptions(mountinfo=world.mountinfo),
        fetcher=world.sim,
        token=token,
    )
    assert made == [32] and (world.state / "rollout-seed").read_bytes() == MID
    assert stat.S_IMODE((world.state / "rollout-seed").stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"", b"short", bytes(33)], ids=["empty", "short", "long"])
def test_a_damaged_seed_is_a_local_error_and_never_replaced(world: World, content: bytes) -> None:
    _publish(world)
    path = world.state / "rollout-seed"
    path.write_bytes(content)
    before = world.snapshot()
    with pytest.raises(RolloutSeedError, match=f"expected 32 bytes, found {len(content)}") as e:
        world.update()
    assert e.value.exit_code == 5 and e.value.kind() == "rollout-seed"
    assert path.read_bytes() == content  # not silently replaced
    assert world.snapshot() == before
    assert world.slot_b.read_bytes() == b""


# --- waves ------------------------------------------------------------------------------------


def test_a_device_outside_the_wave_waits_then_updates_when_time_has_moved(world: World) -> None:
    _set_seed(world, MID)
    v2 = _publish(world, WAVES)
    pos = fleet_position(MID, "edge-gw", "2.0")
    with pytest.raises(NothingToDoError, match=f"this device is at {pos / 100:g} %") as e:
        world.update()
    assert "5 % of the fleet allowed" in str(e.value)
    assert world.sim.target_requests() == [] and world.slot_b.read_bytes() == b""
    st = status(world.device(), NOW).to_dict()["rollout"]
    assert st["version"] == "2.0" and st["position_bp"] == pos and st["allowed_bp"] == 500
    assert st["halted"] is False and st["wait_until"] == (WAVES.start + 48 * H).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

    # the same device, two days later (it may have been off all the while)
    later = NOW + 49 * H
    result = update(
        world.device(),
        later,
        options=UpdateOptions(mountinfo=world.mountinfo, ignore_backoff=True),
        fetcher=world.sim,
    )
    assert str(result.version) == "2.0" and world.slot_b.read_bytes() == v2


def test_now_overrides_the_waves_and_is_recorded(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    _set_seed(world, MID)
    _publish(world, WAVES)
    result = world.update(override_waves=True)
    assert str(result.version) == "2.0" and result.waves_overridden
    assert result.rollout is not None and "overridden" in result.rollout.reason
    assert "waves of signed rollouts are overridden" in caplog.text
    last = device_report(world.device(), NOW).data["last_cycle"]
    assert last["outcome"] == "installed" and last["waves_overridden"] is True
    assert "update --now" in device_report(world.device(), NOW).text()


def test_a_halted_release_is_not_started_even_with_now(world: World) -> None:
    _publish(world, dataclasses.replace(WAVES, halted=True))
    for override in (False, True):
        with pytest.raises(NothingToDoError, match="halted"):
            world.update(override_waves=override)
    assert world.sim.target_requests() == [] and world.slot_b.read_bytes() == b""
    assert status(world.device(), NOW).to_dict()["rollout"]["halted"] is True


# --- recall -----------------------------------------------------------------------------------


def test_a_recall_switches_back_to_the_other_slot_with_nothing_downloaded(world: World) -> None:
    _on_v2(world)
    _change(world, "2.0", withdrawn=RECALL)
    world.sim.requests.clear()
    result = world.update()
    # status reads the trusted metadata the update just refreshed
    assert any("recalled: health check" in w for w in status(world.device(), NOW).warnings)
    assert status(world.device(), NOW).to_dict()["recalled"]["reason"] == RECALL.reason
    assert (result.kind, str(result.version), result.slot) == ("switch", "1.0", "a")
    assert result.recall == RECALL.reason
    assert world.sim.target_requests() == []  # no artifact fetched
    st = world.boot_control().read()
    assert (st.booted, st.primary, st.trial) == ("b", "b", "a")  # armed like after a write
    with pytest.raises(NothingToDoError, match="already pending"):
        world.update()
    world.reboot()
    mark_good(world.device(), NOW)
    st = world.boot_control().read()
    assert (st.booted, st.primary, st.trial) == ("a", "a", None)
    report = device_report(world.device(), NOW)
    last = report.data["last_cycle"]
    assert (last["outcome"], last["version"], last["detail"]) == (
        "recalled-switch",
        "1.0",
        "switch",
    )
    assert last["message"] == f"recalled: {RECALL.reason}"
    assert "recalled: health check fails" in report.text()
    # and it stays there: the recalled release is never installed again
    with pytest.raises(NothingToDoError, match=r"2\.0 was recalled"):
        world.update()


def test_a_switch_back_whose_slot_no_longer_hashes_installs_the_previous_version(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal says slot a holds 1.0, but its bytes changed: it is re-hashed before the
    switch, found wrong, and 1.0 is downloaded and written instead (checked as signed)."""
    _on_v2(world)
    _change(world, "2.0", withdrawn=RECALL)
    data = bytearray(world.slot_a.read_bytes())
    data[100] ^= 1
    world.slot_a.write_bytes(bytes(data))
    result = world.update()
    assert (result.kind, str(result.version), result.slot) == ("full", "1.0", "a")
    assert world.slot_a.read_bytes() == world.v1
    assert "installing the newest good version instead" in caplog.text
    last = device_report(world.device(), NOW).data["last_cycle"]
    assert last["outcome"] == "recalled-install" and last["message"].startswith("recalled: ")
    assert world.sim.target_requests() != []


def test_a_failed_switch_back_trial_returns_to_the_recalled_image_and_is_not_retried(
    world: World,
) -> None:
    _on_v2(world)
    _change(world, "2.0", withdrawn=RECALL)
    world.update(tries=1)
    world.reboot(2)  # the one try of slot a without mark-good, then back to b
    st = world.boot_control().read()
    assert (st.booted, st.primary, st.trial) == ("b", "b", None)
    with pytest.raises(NothingToDoError, match="no published version to go back to") as e:
        world.update()
    assert "1.0 failed its trial" in str(e.value)


def test_a_recall_that_is_not_signed_by_the_targets_key_moves_nothing(world: World) -> None:
    """Whoever runs the server cannot make a device go back: a recall is a targets change,
    and one signed with any other key is refused before the plan sees it."""
    from securesystemslib.signer import CryptoSigner

    _on_v2(world)
    before = world.snapshot()
    for tf in world.sim.targets.signed.targets.values():
        info = ArtifactInfo.from_custom(tf.unrecognized_fields["custom"])
        if str(info.version) == "2.0":
            changed = dataclasses.replace(info, withdrawn=RECALL)
            tf.unrecognized_fields["custom"] = changed.to_custom()
    world.sim.publish(targets_signer=CryptoSigner.generate_ed25519())
    with pytest.raises(SecurityError) as e:
        world.update()
    assert e.value.exit_code == 3
    assert world.snapshot() == before
    st = world.boot_control().read()
    assert (st.booted, st.primary, st.trial) == ("b", "b", None)
    rec = world.device().journal().slot("b")
    assert rec is not None and str(rec.version) == "2.0"


def test_a_halt_lifted_or_waves_widened_without_the_targets_key_is_refused(world: World) -> None:
    """The server cannot make a halted release start, nor let more of the fleet in than was
    signed: the policy is inside the targets metadata, and re-signing it with any other key
    fails verification before the plan reads it."""
    from securesystemslib.signer import CryptoSigner

    _publish(world, dataclasses.replace(WAVES, halted=True))
    with pytest.raises(NothingToDoError, match="halted"):
        world.update()
    before = world.snapshot()
    _forged = dataclasses.replace(WAVES, waves=(Wave(WHOLE_FLEET, 0 * H),))
    for tf in world.sim.targets.signed.targets.values():
        info = ArtifactInfo.from_custom(tf.unrecognized_fields["custom"])
        if str(info.version) == "2.0":
            tf.unrecognized_fields["custom"] = dataclasses.replace(
                info, rollout=_forged
            ).to_custom()
    world.sim.publish(targets_signer=CryptoSigner.generate_ed25519())
    with pytest.raises(SecurityError) as e:
        world.update(override_waves=True)
    assert e.value.exit_code == 3
    assert world.snapshot() == before and world.slot_b.read_bytes() == b""


@pytest.mark.parametrize(
    "pulled",
    [RECALL, Withdrawal("bad build", "2026-12-02T10:00:00Z")],
    ids=["recalled", "withdrawn"],
)
def test_a_trial_armed_but_not_booted_is_cancelled_when_its_release_is_pulled(
    world: World, pulled: Withdrawal
) -> None:
    """2.0 is written and armed; before the device reboots, the publisher takes 2.0 back.
    The next cycle disarms it: the device never boots a release that was taken back."""
    _publish(world)
    world.update()
    assert world.boot_control().read().trial == "b"
    _change(world, "2.0", withdrawn=pulled)
    taken = "recalled" if pulled.recall else "withdrawn"
    with pytest.raises(NothingToDoError, match=rf"cancelled the trial of version 2\.0 .*{taken}"):
        world.update()
    st = world.boot_control().read()
    assert (st.booted, st.primary, st.trial) == ("a", "a", None)
    journal = world.device().journal()
    assert journal.pending is None
    assert [f.reason for f in journal.failures] == [
        f"cancelled before its trial boot: {taken}: {pulled.reason} (version 2.0 on slot b)"
    ]
    world.reboot()
    assert world.boot_control().read().booted == "a"  # not the release taken back
    with pytest.raises(NothingToDoError, match=r"2\.0 was (recalled|withdrawn)"):
        world.update()  # and it is never armed again


def test_an_armed_trial_whose_release_is_still_published_stays_armed(world: World) -> None:
    _publish(world)
    world.update()
    with pytest.raises(NothingToDoError, match="already pending"):
        world.update()
    assert world.boot_control().read().trial == "b"
