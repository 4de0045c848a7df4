"""Retries across cycles: the backoff arithmetic (pure, seeded) and what ``update`` does with it.

Regression: an artifact that failed to decode stayed in staging and was decoded again on
every cycle, with no failure recorded and no backoff.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tests.verifier.conftest import NOW, World, evolve
from tests.verifier.repo_sim import full_info
from verifier.backoff import Backoff, after_failure, gate
from verifier.errors import NothingToDoError, SecurityError, TransportError
from verifier.state import Retry, load_journal

POLICY = Backoff(base=60, cap=3600, jitter=0.5)


@pytest.mark.parametrize(
    ("failures", "rand", "seconds"),
    [
        (1, 0.0, 60),  # no jitter drawn: the full wait
        (2, 0.0, 120),
        (3, 0.0, 240),
        (6, 0.0, 1920),
        (7, 0.0, 3600),  # capped
        (10_000, 0.0, 3600),  # no overflow
        (1, 0.5, 45),  # jitter takes up to half
        (7, 0.999, 3600 * (1 - 0.5 * 0.999)),
    ],
)
def test_delay(failures: int, rand: float, seconds: float) -> None:
    assert POLICY.delay(failures, rand) == pytest.approx(seconds)


def test_jitter_spreads_a_fleet_and_is_reproducible_with_a_seed() -> None:
    waits = [POLICY.delay(3, random.Random(seed).random()) for seed in range(200)]
    assert min(waits) >= 120 and max(waits) <= 240
    assert max(waits) - min(waits) > 100  # a fleet that failed together does not retry together
    again = [POLICY.delay(3, random.Random(seed).random()) for seed in range(200)]
    assert waits == again


def test_consecutive_failures_count_up_and_wait_longer() -> None:
    rng = random.Random(7)
    retry = None
    waits = []
    for i in range(1, 9):
        retry = after_failure(retry, TransportError("down"), NOW, rng.random(), POLICY)
        assert retry.failures == i and retry.kind == "transport" and retry.reason == "down"
        waits.append((retry.not_before - NOW).total_seconds())
    lows = [min(3600, 60 * 2 ** (i - 1)) / 2 for i in range(1, 9)]
    assert all(low <= w <= 2 * low for w, low in zip(waits, lows, strict=True)), waits


GATE = [
    ("no failure yet", None, NOW, False),
    ("before the next attempt", Retry(2, NOW + timedelta(minutes=2), "transport", "x"), NOW, True),
    ("at the next attempt", Retry(2, NOW, "transport", "x"), NOW, False),
    ("after it", Retry(2, NOW, "transport", "x"), NOW + timedelta(seconds=1), False),
    (
        "clock set back: the wait is longer than any backoff, so it is not honoured",
        Retry(3, NOW + timedelta(days=400), "transport", "x"),
        NOW,
        False,
    ),
]


@pytest.mark.parametrize(("name", "retry", "now", "waits"), GATE, ids=[g[0] for g in GATE])
def test_gate(name: str, retry: Retry | None, now: object, waits: bool) -> None:
    reason = gate(retry, now, POLICY)  # type: ignore[arg-type]
    assert (reason is not None) == waits
    if reason is not None:
        assert reason.startswith("next attempt after ") and "--now" in reason


# --- update: record, wait, reset -----------------------------------------------------------


def _publish_v2(world: World) -> bytes:
    v2 = evolve(world.v1, 2)
    world.sim.add_full(v2, "2.0")
    world.sim.publish()
    return v2


def test_a_transport_failure_backs_off_and_a_success_resets(world: World) -> None:
    _publish_v2(world)
    world.sim.targets_offline = True
    with pytest.raises(TransportError):
        world.update(ignore_backoff=False)
    retry = load_journal(world.device().paths).retry
    assert retry is not None and retry.failures == 1 and retry.kind == "transport"
    with pytest.raises(
        NothingToDoError,
        match=r"next attempt after \S+ \(1 consecutive failed cycle, last: transport",
    ):
        world.update(ignore_backoff=False)
    with pytest.raises(TransportError):
        world.update(ignore_backoff=True)
    assert load_journal(world.device().paths).retry.failures == 2  # type: ignore[union-attr]
    world.sim.targets_offline = False
    assert str(world.update(ignore_backoff=True).version) == "2.0"
    assert load_journal(world.device().paths).retry is None


def test_nothing_to_do_after_a_refresh_resets_the_backoff(world: World) -> None:
    _publish_v2(world)
    world.sim.targets_offline = True
    with pytest.raises(TransportError):
        world.update()
    assert load_journal(world.device().paths).retry is not None
    world.sim.targets.signed.targets.pop("edge-gw/2.0/full.img.zst")  # 2.0 withdrawn
    world.sim.publish()
    with pytest.raises(NothingToDoError, match="is published"):
        world.update()
    assert load_journal(world.device().paths).retry is None


def test_a_signed_artifact_that_does_not_decode_is_recorded_removed_and_backs_off(
    world: World,
) -> None:
    """Regression: it stayed in staging and was decoded again on every cycle."""
    v2 = evolve(world.v1, 2)
    world.sim.add_artifact(full_info(v2, "2.0"), b"signed, but not a zstd frame" * 100)
    world.sim.publish()
    before = world.snapshot()
    with pytest.raises(SecurityError) as raised:
        world.update(ignore_backoff=False)
    assert raised.value.message.startswith("decode: ")
    journal = load_journal(world.device().paths)
    failure = journal.last_failure
    assert failure is not None and str(failure.version) == "2.0"
    assert "matches its signed hashes but does not decode" in failure.reason
    assert journal.retry is not None and journal.retry.failures == 1
    assert list((world.state / "staging").iterdir()) == []
    after = world.snapshot()
    assert (after["booted"], after["booted_slot"]) == (before["booted"], before["booted_slot"])
    # the image is not tried again, however the backoff ends
    with pytest.raises(NothingToDoError):
        world.update(ignore_backoff=True)


def test_a_download_that_does_not_verify_backs_off_without_blaming_the_image(
    world: World,
) -> None:
    """Bytes that differ from the signed hashes are the network's or a mirror's fault: the
    image is not recorded as failed (a network attacker must not be able to block it)."""
    _publish_v2(world)
    key = world.sim.target_key("edge-gw/2.0/full.img.zst")
    good = world.sim.files[key]
    world.sim.files[key] = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(SecurityError, match="download: "):
        world.update(ignore_backoff=False)
    journal = load_journal(world.device().paths)
    assert journal.failures == () and journal.retry is not None
    assert list((world.state / "staging").iterdir()) == []
    world.sim.files[key] = good
    assert str(world.update(ignore_backoff=True).version) == "2.0"
