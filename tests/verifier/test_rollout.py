"""The waves' decision (verifier/rollout.py): seeded, time passed in, tested as tables."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from verifier.errors import ArtifactSchemaError
from verifier.rollout import (
    WHOLE_FLEET,
    RolloutPolicy,
    Wave,
    decide,
    fleet_position,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
H = timedelta(hours=1)
POLICY = RolloutPolicy(T0, (Wave(500, timedelta(0)), Wave(2500, 24 * H), Wave(WHOLE_FLEET, 72 * H)))


def _seeds(n: int, salt: str = "fleet") -> list[bytes]:
    rnd = random.Random(salt)
    return [rnd.randbytes(32) for _ in range(n)]


@pytest.mark.parametrize(
    "now, allowed_bp",
    [
        (T0 - timedelta(seconds=1), 0),  # before the start: nobody
        (T0, 500),
        (T0 + 23 * H, 500),
        (T0 + 24 * H, 2500),
        (T0 + 72 * H, WHOLE_FLEET),
        (T0 + 1000 * H, WHOLE_FLEET),  # a device offline for weeks is allowed when back
    ],
)
def test_the_allowed_share_grows_wave_by_wave(now: datetime, allowed_bp: int) -> None:
    assert POLICY.allowed_bp(now) == allowed_bp


@pytest.mark.parametrize(
    "now, low, high",  # of 4,000 devices; binomial bounds far beyond 5 sigma
    [(T0, 120, 290), (T0 + 24 * H, 860, 1140), (T0 + 72 * H, 4000, 4000)],
)
def test_the_share_of_a_fleet_that_starts_matches_the_wave(
    now: datetime, low: int, high: int
) -> None:
    started = sum(
        decide(POLICY, seed=s, product="edge-gw", version="2.0", now=now).allowed
        for s in _seeds(4000)
    )
    assert low <= started <= high


def test_each_release_has_other_first_devices() -> None:
    seeds = _seeds(2000)
    first = [
        {i for i, s in enumerate(seeds) if fleet_position(s, "edge-gw", v) < 500}
        for v in ("2.0", "2.1")
    ]
    assert first[0] and first[1]
    assert len(first[0] & first[1]) < 0.25 * len(first[0])


def test_the_position_is_stable_and_needs_the_seed() -> None:
    s = _seeds(1)[0]
    assert fleet_position(s, "p", "1") == fleet_position(s, "p", "1")
    assert 0 <= fleet_position(s, "p", "1") < WHOLE_FLEET
    with pytest.raises(ValueError, match="32 bytes"):
        fleet_position(b"short", "p", "1")


def test_a_device_told_to_wait_learns_when() -> None:
    late = next(s for s in _seeds(500) if fleet_position(s, "edge-gw", "2.0") >= 2500)
    d = decide(POLICY, seed=late, product="edge-gw", version="2.0", now=T0 + H)
    assert not d.allowed and d.wait_until == T0 + 72 * H
    assert "may start from 2026-12-04T00:00:00Z" in d.reason


def test_a_halt_stops_every_start_and_the_override_does_not_lift_it() -> None:
    halted = RolloutPolicy(POLICY.start, POLICY.waves, halted=True)
    for s in _seeds(200):
        for override in (False, True):
            d = decide(
                halted, seed=s, product="p", version="2", now=T0 + 100 * H, override=override
            )
            assert not d.allowed and d.reason == "the rollout is halted"
    assert halted.next_opening(T0) is None


def test_the_override_skips_the_waves() -> None:
    s = next(s for s in _seeds(500) if fleet_position(s, "p", "2") >= 500)
    assert not decide(POLICY, seed=s, product="p", version="2", now=T0).allowed
    d = decide(POLICY, seed=s, product="p", version="2", now=T0, override=True)
    assert d.allowed and "overridden" in d.reason


def test_no_policy_is_the_whole_fleet_at_once() -> None:
    d = decide(None, seed=_seeds(1)[0], product="p", version="2", now=T0)
    assert d.allowed and d.allowed_bp == WHOLE_FLEET


def test_the_signed_form_round_trips() -> None:
    assert RolloutPolicy.from_dict(POLICY.to_dict()) == POLICY
    assert POLICY.to_dict()["waves"][1] == {"fleet_bp": 2500, "after_s": 86400}


_GOOD = {"start": "2026-12-01T00:00:00Z", "waves": [{"fleet_bp": 10000, "after_s": 0}]}


@pytest.mark.parametrize(
    "data, says",
    [
        ([], "expected an object"),
        ({**_GOOD, "extra": 1}, "unexpected fields ['extra']"),
        ({**_GOOD, "start": "2026-12-01 00:00:00"}, "expected a UTC time"),
        ({**_GOOD, "start": "2026-13-01T00:00:00Z"}, "expected a UTC time"),
        ({**_GOOD, "start": 1764547200}, "expected a UTC time"),
        ({**_GOOD, "halted": "no"}, "expected true or false"),
        ({**_GOOD, "waves": []}, "expected a list of 1..16 waves"),
        ({**_GOOD, "waves": [{"fleet_bp": 1, "after_s": 0}] * 17}, "1..16 waves"),
        ({**_GOOD, "waves": [{"fleet_bp": 0.5, "after_s": 0}]}, "fleet_bp: expected 1..10000"),
        ({**_GOOD, "waves": [{"fleet_bp": 0, "after_s": 0}]}, "fleet_bp: expected 1..10000"),
        ({**_GOOD, "waves": [{"fleet_bp": 10001, "after_s": 0}]}, "expected 1..10000"),
        ({**_GOOD, "waves": [{"fleet_bp": True, "after_s": 0}]}, "expected 1..10000"),
        ({**_GOOD, "waves": [{"fleet_bp": 5, "after_s": -1}]}, "after_s: expected 0.."),
        ({**_GOOD, "waves": [{"fleet_bp": 5, "after_s": 10**12}]}, "after_s: expected 0.."),
        ({**_GOOD, "waves": [{"fleet_bp": 5}]}, "expected {'fleet_bp': int"),
        (
            {**_GOOD, "waves": [{"fleet_bp": 50, "after_s": 0}, {"fleet_bp": 50, "after_s": 9}]},
            "waves[1]: expected a larger share",
        ),
        (
            {**_GOOD, "waves": [{"fleet_bp": 5, "after_s": 9}, {"fleet_bp": 50, "after_s": 0}]},
            "no earlier",
        ),
    ],
)  # fmt: skip
def test_a_malformed_policy_is_refused_saying_what_was_expected(data: object, says: str) -> None:
    with pytest.raises(ArtifactSchemaError, match=None) as e:
        RolloutPolicy.from_dict(data)
    assert says in e.value.message
