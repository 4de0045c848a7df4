"""``--waves SPEC`` (repo/rollout_spec.py): the operator's form of the signed policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from repo.errors import UsageError
from repo.rollout_spec import describe, parse_waves
from verifier.rollout import Wave

START = datetime(2026, 12, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    "spec, waves",
    [
        ("100%@0", [(10000, 0)]),
        ("5%@0,25%@24h,100%@3d", [(500, 0), (2500, 86400), (10000, 259200)]),
        ("0.5%@90m, 10%@1w", [(50, 5400), (1000, 604800)]),
        ("1%@30s,2%@45", [(100, 30), (200, 45)]),
    ],
)
def test_a_spec_becomes_the_signed_waves(spec: str, waves: list[tuple[int, int]]) -> None:
    policy = parse_waves(spec, START)
    assert policy.waves == tuple(Wave(bp, timedelta(seconds=s)) for bp, s in waves)
    assert policy.start == START and not policy.halted


@pytest.mark.parametrize(
    "spec, says",
    [
        ("", "expected SHARE%@AFTER"),
        ("5@0", "expected SHARE%@AFTER"),
        ("5%@1y", "expected SHARE%@AFTER"),
        ("5.555%@0", "expected SHARE%@AFTER"),
        ("-5%@0", "expected SHARE%@AFTER"),
        ("0%@0", "fleet_bp: expected 1..10000"),
        ("101%@0", "fleet_bp: expected 1..10000"),
        ("50%@1d,20%@2d", "expected a larger share"),
        ("20%@2d,50%@1d", "no earlier"),
        ("5%@99999d", "after_s: expected 0.."),
    ],
)
def test_a_bad_spec_is_a_usage_error_saying_what_was_expected(spec: str, says: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_waves(spec, START)
    assert says in e.value.message


def test_the_start_must_be_utc() -> None:
    with pytest.raises(UsageError, match="expected a UTC time"):
        parse_waves("100%@0", datetime(2026, 12, 1))


def test_describe_says_when_each_share_opens() -> None:
    assert describe(parse_waves("5%@0,100%@1d", START)) == [
        "5 % of the fleet from 2026-12-01 06:00:00Z",
        "100 % of the fleet from 2026-12-02 06:00:00Z",
    ]
