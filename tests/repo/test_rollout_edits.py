"""The rollout edits as pure functions (repo/rollout.py): a policy and the time in, the policy
to sign out, or a refusal naming why. Every result is re-read by the device's parser."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from repo.errors import RolloutRefusedError
from repo.rollout import Request, advanced, halted, plan_edit, recalled, resumed
from repo.rollout_spec import parse_waves
from verifier.artifact import ArtifactInfo, ImageRef, ImageVersion, Withdrawal
from verifier.rollout import RolloutPolicy, Wave

START = datetime(2026, 12, 1, 6, tzinfo=UTC)
H = timedelta(hours=1)
SPEC = "5%@0,25%@24h,100%@3d"


def _waves(p: RolloutPolicy) -> list[tuple[int, int]]:
    return [(w.fleet_bp, int(w.after.total_seconds())) for w in p.waves]


def _info(
    rollout: RolloutPolicy | None = None, withdrawn: Withdrawal | None = None
) -> ArtifactInfo:
    img = ImageRef(4096, hashlib.sha256(b"2.0").hexdigest())
    return ArtifactInfo(
        "edge-gw", ("rpi4",), ImageVersion.parse("2.0"), "full", "zstd", img,
        withdrawn=withdrawn, rollout=rollout,
    )  # fmt: skip


# --- halt / resume ----------------------------------------------------------------------------


def test_halt_keeps_the_waves_and_sets_halted() -> None:
    p = parse_waves(SPEC, START)
    h = halted(p, START + 2 * H)
    assert h.halted and h.waves == p.waves and h.start == p.start
    assert h.allowed_bp(START + 100 * H) == 0
    assert halted(h, START + 5 * H) == h  # halting twice changes nothing


def test_halt_of_a_release_without_waves_makes_a_halted_whole_fleet_policy() -> None:
    h = halted(None, START)
    assert h == RolloutPolicy(START, (Wave(10_000, timedelta(0)),), halted=True)
    assert resumed(h) is not None and resumed(h).allowed_bp(START) == 10_000  # type: ignore[union-attr]


def test_resume_lifts_only_the_halt() -> None:
    p = parse_waves(SPEC, START)
    assert resumed(halted(p, START)) == p
    assert resumed(p) == p and resumed(None) is None


# --- advance ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "now", "to", "waves", "start_shift"),
    [
        # the next wave opens now; later waves keep their times
        (SPEC, 2 * H, None, [(500, 0), (2500, 7200), (10000, 259200)], 0),
        # again, from the second wave: everyone now
        ("5%@0,25%@1h,100%@3d", 2 * H, None, [(500, 0), (2500, 3600), (10000, 7200)], 0),
        # --to a share between waves: a wave at exactly that share, the 25 % one absorbed
        (SPEC, 2 * H, 5000, [(500, 0), (5000, 7200), (10000, 259200)], 0),
        # --to past the last wave of a policy that never reached 100 %
        ("5%@0,25%@1h", 2 * H, 10000, [(500, 0), (2500, 3600), (10000, 7200)], 0),
        # not started yet: it starts now and the later waves keep their absolute times
        ("5%@0,25%@24h", -2 * H, None, [(500, 0), (2500, 26 * 3600)], -2),
    ],
)
def test_advance_opens_the_next_share_now(
    spec: str,
    now: timedelta,
    to: int | None,
    waves: list[tuple[int, int]],
    start_shift: int,
) -> None:
    p = parse_waves(spec, START)
    a = advanced(p, START + now, to)
    assert _waves(a) == waves
    assert a.start == START + start_shift * H
    want = (
        to
        if to is not None
        else next(w.fleet_bp for w in p.waves if w.fleet_bp > p.allowed_bp(START + now))
    )
    assert a.allowed_bp(START + now) == want
    assert RolloutPolicy.from_dict(a.to_dict()) == a  # the device's parser accepts it


def test_advance_to_a_share_reached_already_changes_nothing() -> None:
    p = parse_waves(SPEC, START)
    assert advanced(p, START + 25 * H, 2500) == p
    assert advanced(p, START + 25 * H, 100) == p


def test_advance_never_exceeds_the_wave_limit() -> None:
    spec = ",".join(f"{i}%@{i}h" for i in range(1, 17))  # 16 waves, the maximum
    p = parse_waves(spec, START)
    a = advanced(p, START + 16 * H + H, 9000)
    assert len(a.waves) <= 16 and a.allowed_bp(START + 17 * H) == 9000


@pytest.mark.parametrize(
    ("policy", "now", "to", "match"),
    [
        (None, START, None, "no rollout policy"),
        (halted(parse_waves(SPEC, START), START), START, None, "halted"),
        (parse_waves("5%@0,100%@1h", START), START + 2 * H, None, "100 %"),
        (parse_waves("5%@0,25%@1h", START), START + 2 * H, None, "every wave is open"),
    ],
    ids=["no-waves", "halted", "at-100", "all-open"],
)
def test_advance_refuses_what_makes_no_sense(
    policy: RolloutPolicy | None, now: datetime, to: int | None, match: str
) -> None:
    with pytest.raises(RolloutRefusedError, match=match) as e:
        advanced(policy, now, to)
    assert e.value.exit_code == 2


# --- recall and the release-wide plan ---------------------------------------------------------


W1 = Withdrawal("bricks rev-B", "2026-12-01T07:00:00Z")
W2 = Withdrawal("another", "2026-12-01T08:00:00Z")


@pytest.mark.parametrize(
    ("current", "want", "warns"),
    [
        (None, Withdrawal("another", W2.time, recall=True), False),
        (W1, Withdrawal(W1.reason, W1.time, recall=True), True),  # upgraded, first reason
        (Withdrawal(W1.reason, W1.time, True), Withdrawal(W1.reason, W1.time, True), True),
        (Withdrawal("another", W1.time, True), Withdrawal("another", W1.time, True), False),
    ],
    ids=["new", "upgrade-plain", "already-other-reason", "already-same-reason"],
)
def test_recall_builds_on_the_withdrawal(
    current: Withdrawal | None, want: Withdrawal, warns: bool
) -> None:
    got, note = recalled(current, W2)
    assert got == want and (note is not None) == warns


@pytest.mark.parametrize(
    ("info", "action", "match"),
    [
        (_info(withdrawn=Withdrawal("x", W1.time, True)), "resume", "recalled .* final"),
        (_info(withdrawn=W1), "resume", "withdrawn .* final"),
        (_info(rollout=parse_waves(SPEC, START), withdrawn=W1), "advance", "withdrawn"),
        (_info(), "advance", "no rollout policy"),
    ],
)
def test_the_plan_refuses_changes_to_a_release_taken_back(
    info: ArtifactInfo, action: str, match: str
) -> None:
    with pytest.raises(RolloutRefusedError, match=match):
        plan_edit(info, Request(action, START))  # type: ignore[arg-type]


def test_the_plan_keeps_what_the_action_does_not_touch() -> None:
    p = parse_waves(SPEC, START)
    e = plan_edit(_info(rollout=p), Request("recall", START, withdrawal=W2))
    assert e.rollout == p and e.withdrawn == Withdrawal(W2.reason, W2.time, True)
    e = plan_edit(_info(rollout=p, withdrawn=W1), Request("halt", START))
    assert e.withdrawn == W1 and e.rollout is not None and e.rollout.halted
