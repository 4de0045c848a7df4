"""Waves, halt, ``--now`` and recall in the plan (verifier.plan): pure tables, the device's
seed and the time passed in. What each row proves is in its name."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest

from tests.verifier.test_plan import delta, facts, full, img
from verifier.artifact import ImageVersion, Withdrawal
from verifier.errors import (
    DowngradeError,
    HaltedReleaseError,
    RolloutWaitError,
    UsageError,
    WithdrawnVersionError,
)
from verifier.plan import (
    Candidate,
    DeviceFacts,
    Installed,
    NothingToDo,
    Policy,
    SwitchBack,
    UpdatePlan,
    resolve,
    rollout_outlook,
)
from verifier.rollout import WHOLE_FLEET, RolloutPolicy, Wave, fleet_position

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
H = timedelta(hours=1)
RECALL = Withdrawal("health check fails on rev-C", "2026-12-02T10:00:00Z", recall=True)
WITHDRAWN = Withdrawal("bad build", "2026-12-02T09:00:00Z")


def _seed_at(low: int, high: int, version: str = "3.0") -> bytes:
    """A seed whose position for edge-gw ``version`` is in [low, high) (deterministic)."""
    for i in range(10_000):
        seed = i.to_bytes(32, "big")
        if low <= fleet_position(seed, "edge-gw", version) < high:
            return seed
    raise AssertionError("no seed found")


#: a device at 40-60 % of the fleet for 3.0: outside a 5 % and a 25 % wave, inside 100 %
MID = _seed_at(4000, 6000)
#: a device in the first 5 % for 3.0
EARLY = _seed_at(0, 500)
WAVES = RolloutPolicy(T0, (Wave(500, 0 * H), Wave(2500, 24 * H), Wave(WHOLE_FLEET, 72 * H)))
HALTED = dataclasses.replace(WAVES, halted=True)


def rolled(c: Candidate, policy: RolloutPolicy | None) -> Candidate:
    return dataclasses.replace(c, info=dataclasses.replace(c.info, rollout=policy))


def taken_back(c: Candidate, w: Withdrawal = RECALL) -> Candidate:
    return dataclasses.replace(c, info=dataclasses.replace(c.info, withdrawn=w))


def dev(
    installed: str = "2.0",
    *,
    seed: bytes | None = MID,
    now: datetime = T0 + H,
    other: str | None = None,
    failed: tuple[str, ...] = (),
    pending: str | None = None,
) -> DeviceFacts:
    f = facts(installed, failed, pending)
    prev = None if other is None else Installed(ImageVersion.parse(other), img(other))
    return dataclasses.replace(f, seed=seed, now=now, other=prev)


def v(text: str) -> ImageVersion:
    return ImageVersion.parse(text)


# --- waves and halt ---------------------------------------------------------------------------


def test_a_release_without_a_policy_goes_to_the_whole_fleet_as_before() -> None:
    out = resolve([full("2.0"), full("3.0")], dev())
    assert isinstance(out, UpdatePlan) and out.version == v("3.0")
    assert out.rollout is not None and out.rollout.allowed_bp == WHOLE_FLEET


def test_a_device_in_the_first_wave_starts_the_release() -> None:
    out = resolve([full("2.0"), rolled(full("3.0"), WAVES)], dev(seed=EARLY))
    assert isinstance(out, UpdatePlan) and out.version == v("3.0")
    assert out.rollout is not None and out.rollout.allowed and out.rollout.allowed_bp == 500


def test_a_device_outside_the_wave_waits_and_says_where_it_is_and_when() -> None:
    out = resolve([full("2.0"), rolled(full("3.0"), WAVES)], dev())
    assert isinstance(out, NothingToDo)
    pos = fleet_position(MID, "edge-gw", "3.0")
    assert "version 3.0 is not started" in out.reason
    assert f"this device is at {pos / 100:g} %" in out.reason
    assert "5 % of the fleet allowed" in out.reason
    assert "from 2026-12-04T06:00:00Z" in out.reason  # the 100 % wave: 72 h after the start


def test_a_newer_release_in_its_waves_does_not_block_an_older_one_rolled_out_fully() -> None:
    targets = [full("1.0"), full("2.0"), delta("2.0", "1.0"), rolled(full("3.0"), WAVES)]
    out = resolve(targets, dev("1.0"))
    assert isinstance(out, UpdatePlan)
    assert (out.version, out.artifact.path) == (v("2.0"), "edge-gw/2.0/delta-from-1.0.otd")


@pytest.mark.parametrize(
    ("hours", "starts"),
    [(-1, False), (1, False), (25, False), (71, False), (72, True), (24 * 30, True)],
)
def test_an_offline_device_updates_when_it_comes_back(hours: int, starts: bool) -> None:
    """The decision depends on time and position only: a device that slept through every
    wave (no state kept of them) starts as soon as it checks after its wave opened."""
    out = resolve([full("2.0"), rolled(full("3.0"), WAVES)], dev(now=T0 + hours * H))
    assert isinstance(out, UpdatePlan) is starts


def test_a_halted_release_is_started_by_no_device_not_even_the_first_wave() -> None:
    for seed in (EARLY, MID):
        out = resolve([full("2.0"), rolled(full("3.0"), HALTED)], dev(seed=seed, now=T0 + 99 * H))
        assert isinstance(out, NothingToDo) and "halted" in out.reason


def test_now_overrides_the_waves() -> None:
    out = resolve([full("2.0"), rolled(full("3.0"), WAVES)], dev(), Policy(override_waves=True))
    assert isinstance(out, UpdatePlan) and out.version == v("3.0")
    assert out.rollout is not None and "overridden" in out.rollout.reason


def test_now_never_overrides_a_halt() -> None:
    out = resolve([full("2.0"), rolled(full("3.0"), HALTED)], dev(), Policy(override_waves=True))
    assert isinstance(out, NothingToDo) and "halted" in out.reason


def test_now_never_overrides_a_withdrawal_or_a_recall() -> None:
    for w in (WITHDRAWN, RECALL):
        out = resolve([full("2.0"), taken_back(full("3.0"), w)], dev(), Policy(override_waves=True))
        assert isinstance(out, NothingToDo), out


def test_a_device_running_a_halted_release_stays_on_it() -> None:
    out = resolve([full("2.0"), rolled(full("3.0"), HALTED)], dev("3.0", other="2.0"))
    assert isinstance(out, NothingToDo) and "3.0 is installed" in out.reason


def test_targets_of_one_version_with_different_policies_fail_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other_policy = dataclasses.replace(WAVES, waves=(Wave(WHOLE_FLEET, 0 * H),))
    targets = [
        full("1.0"),
        full("2.0"),
        rolled(full("3.0"), other_policy),  # everyone now …
        rolled(delta("3.0", "2.0"), WAVES),  # … or 5 %: the device cannot tell which is meant
    ]
    with caplog.at_level(logging.WARNING, "otakit.plan"):
        out = resolve(targets, dev("1.0", seed=MID))
    assert isinstance(out, UpdatePlan) and out.version == v("2.0")
    assert "different rollout policies" in caplog.text
    only = resolve(targets[2:], dev("2.0"), Policy(override_waves=True))
    assert isinstance(only, NothingToDo) and "different rollout policies" in only.reason


def test_a_policy_without_a_device_seed_is_not_started() -> None:
    out = resolve([full("2.0"), rolled(full("3.0"), WAVES)], dev(seed=None, now=T0 + 99 * H))
    assert isinstance(out, NothingToDo) and "no seed" in out.reason


def test_status_outlook_shows_the_newest_candidates_decision() -> None:
    got = rollout_outlook([full("2.0"), rolled(full("3.0"), WAVES)], dev())
    assert got is not None
    version, d = got
    assert version == v("3.0") and not d.allowed and not d.halted
    assert d.position_bp == fleet_position(MID, "edge-gw", "3.0") and d.allowed_bp == 500
    assert d.wait_until == T0 + 72 * H
    halted = rollout_outlook([full("2.0"), rolled(full("3.0"), HALTED)], dev())
    assert halted is not None and halted[1].halted
    assert rollout_outlook([full("2.0")], dev()) is None


# --- an explicit --version --------------------------------------------------------------------


def test_a_requested_version_outside_its_wave_needs_now() -> None:
    targets = [full("2.0"), rolled(full("3.0"), WAVES)]
    with pytest.raises(RolloutWaitError, match="not started") as e:
        resolve(targets, dev(), Policy(version=v("3.0")))
    assert isinstance(e.value, UsageError) and e.value.hint and "--now" in e.value.hint
    out = resolve(targets, dev(), Policy(version=v("3.0"), override_waves=True))
    assert isinstance(out, UpdatePlan) and out.version == v("3.0")


def test_a_requested_halted_version_is_refused_even_with_now() -> None:
    targets = [full("2.0"), rolled(full("3.0"), HALTED)]
    for override in (False, True):
        with pytest.raises(HaltedReleaseError, match="halted"):
            resolve(targets, dev(), Policy(version=v("3.0"), override_waves=override))


def test_a_requested_recalled_version_is_refused_as_recalled() -> None:
    with pytest.raises(WithdrawnVersionError, match="recalled by the publisher"):
        resolve([full("2.0"), taken_back(full("3.0"))], dev(), Policy(version=v("3.0")))


def test_a_recall_is_the_permission_to_request_an_older_version() -> None:
    targets = [full("1.0"), full("2.0"), taken_back(full("3.0"))]
    out = resolve(targets, dev("3.0"), Policy(version=v("1.0")))
    assert isinstance(out, UpdatePlan) and out.downgrade and out.recall == RECALL
    # without the recall, the same request is a downgrade and refused
    with pytest.raises(DowngradeError):
        resolve([full("1.0"), full("2.0"), full("3.0")], dev("3.0"), Policy(version=v("1.0")))


# --- recall -----------------------------------------------------------------------------------

GOOD = [full("1.0"), full("2.0")]


@pytest.mark.parametrize(
    ("name", "targets", "device", "expect"),
    [
        (
            "the other slot holds the previous image: switch back, no download",
            [*GOOD, taken_back(full("3.0"))],
            dev("3.0", other="2.0"),
            ("switch", "2.0"),
        ),
        (
            "one recalled target recalls the whole version (strictest reading)",
            [*GOOD, full("3.0"), taken_back(delta("3.0", "2.0"))],
            dev("3.0", other="2.0"),
            ("switch", "2.0"),
        ),
        (
            "the other slot was overwritten (unknown): install the newest good, older",
            [*GOOD, taken_back(full("3.0"))],
            dev("3.0", other=None),
            ("install", "edge-gw/2.0/full.img.zst"),
        ),
        (
            "the previous version was withdrawn since: install the newest good one",
            [full("1.0"), taken_back(full("2.0"), WITHDRAWN), taken_back(full("3.0"))],
            dev("3.0", other="2.0"),
            ("install", "edge-gw/1.0/full.img.zst"),
        ),
        (
            "the previous version is recalled too: further back",
            [full("1.0"), taken_back(full("2.0")), taken_back(full("3.0"))],
            dev("3.0", other="2.0"),
            ("install", "edge-gw/1.0/full.img.zst"),
        ),
        (
            "the previous image failed its trial (a failed switch-back): not again",
            [*GOOD, taken_back(full("3.0"))],
            dev("3.0", other="2.0", failed=("2.0",)),
            ("install", "edge-gw/1.0/full.img.zst"),
        ),
        (
            "the fallback respects a halt of the version it goes to",
            [full("1.0"), rolled(full("2.0"), HALTED), taken_back(full("3.0"))],
            dev("3.0", other="2.0"),
            ("install", "edge-gw/1.0/full.img.zst"),
        ),
        (
            "the switch back ignores the waves of the older version",
            [full("1.0"), rolled(full("2.0"), WAVES), taken_back(full("3.0"))],
            dev("3.0", other="2.0", now=T0),
            ("switch", "2.0"),
        ),
        (
            "a fallback install ignores the waves of the older version",
            [full("1.0"), rolled(full("2.0"), WAVES), taken_back(full("3.0"))],
            dev("3.0", other=None, now=T0),
            ("install", "edge-gw/2.0/full.img.zst"),
        ),
        (
            "a newer release still in its waves is not taken on the way out",
            [*GOOD, taken_back(full("3.0")), rolled(full("4.0"), WAVES)],
            dev("3.0", other=None),
            ("install", "edge-gw/2.0/full.img.zst"),
        ),
        (
            "a newer release rolled out fully is the newest good version",
            [*GOOD, taken_back(full("3.0")), full("4.0")],
            dev("3.0", other=None),
            ("install", "edge-gw/4.0/full.img.zst"),
        ),
        (
            "a delta from the recalled image to the good one is used (its base is ours)",
            [*GOOD, delta("2.0", "3.0"), taken_back(full("3.0"))],
            dev("3.0", other=None),
            ("install", "edge-gw/2.0/delta-from-3.0.otd"),
        ),
        (
            "nothing good is published: stay, and say so",
            [taken_back(full("3.0"))],
            dev("3.0", other=None),
            ("nothing", "no published version to go back to"),
        ),
        (
            "the switch back is already armed: nothing more",
            [*GOOD, taken_back(full("3.0"))],
            dev("3.0", other="2.0", pending="2.0"),
            ("nothing", "already pending its trial boot"),
        ),
        (
            "a device not running the recalled version never installs it",
            [*GOOD, taken_back(full("3.0"))],
            dev("2.0", other="1.0"),
            ("nothing", "3.0 was recalled: health check fails"),
        ),
    ],
)
def test_recall(
    name: str, targets: list[Candidate], device: DeviceFacts, expect: tuple[str, str]
) -> None:
    out = resolve(targets, device)
    what, detail = expect
    if what == "switch":
        assert isinstance(out, SwitchBack), out
        assert (out.version, out.image, out.recall) == (v(detail), img(detail), RECALL)
        assert out.leaving == device.installed.version
    elif what == "install":
        assert isinstance(out, UpdatePlan), out
        assert out.artifact.path == detail and out.recall == RECALL
        assert out.downgrade is (out.version < device.installed.version)
    else:
        assert isinstance(out, NothingToDo), out
        assert detail in out.reason


def test_a_switch_back_needs_the_slot_to_hold_the_signed_image_of_that_version() -> None:
    """The journal's record of the other slot must be the image signed for its version; a
    record that disagrees (another build of 2.0) is not switched to: the newest good version
    is installed instead, checked against its signed hash like any install."""
    wrong = Installed(v("2.0"), img("2.0-other-build"))
    device = dataclasses.replace(dev("3.0"), other=wrong)
    out = resolve([*GOOD, taken_back(full("3.0"))], device)
    assert isinstance(out, UpdatePlan) and out.artifact.path == "edge-gw/2.0/full.img.zst"


def test_without_a_recall_the_device_never_goes_back() -> None:
    """The downgrade permission is the signed recall, nothing else: the same device and slots,
    a plain withdrawal of the running version, stays (anti-rollback)."""
    out = resolve([*GOOD, taken_back(full("3.0"), WITHDRAWN)], dev("3.0", other="2.0"))
    assert isinstance(out, NothingToDo) and "3.0 is installed" in out.reason
