"""``otakit-device report`` and the journal's ``last_cycle`` it reads (issue 11)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.verifier.conftest import World, evolve
from verifier.device_report import device_report
from verifier.errors import ConfigError, TransportError, UsageError
from verifier.state import LastCycle, load_journal

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def test_a_failed_cycle_and_then_a_success_are_what_the_report_says(world: World) -> None:
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    world.sim.publish()
    world.sim.targets_offline = True
    with pytest.raises(TransportError):
        world.update(ignore_backoff=True)
    last = load_journal(world.device().paths).last_cycle
    assert last is not None and (last.outcome, last.detail) == ("failed", "transport")
    r = device_report(world.device(), NOW).data
    assert r["last_cycle"]["outcome"] == "failed" and r["retry"]["failures"] == 1
    assert r["running"] == {"slot": "a", "version": "1.0", "committed": True}

    world.sim.targets_offline = False
    world.update(ignore_backoff=True)
    r = device_report(world.device(), NOW).data
    assert r["last_cycle"]["outcome"] == "installed" and r["last_cycle"]["version"] == "2.0"
    assert r["pending"] == {"version": "2.0", "slot": "b", "armed": True} and r["retry"] is None
    assert "installed 2.0" in device_report(world.device(), NOW).text()


def test_the_report_carries_no_secret_and_no_local_path(world: World) -> None:
    r = device_report(world.device(), NOW).data
    text = repr(r)
    assert str(world.device().paths.root) not in text
    assert set(r) == {
        "otakit_report", "device_id", "at", "product", "hardware", "image_type", "running", "slots",
        "pending", "last_cycle", "last_failure", "retry", "update_in_progress",
    }  # fmt: skip


def test_the_collector_accepts_every_report_the_device_writes(world: World) -> None:
    """The publisher's strict reader (``repo.fleet_reports``) and the device's writer agree,
    in each state a report can show: fresh, after a failed cycle, with an install pending."""
    import json

    from repo.fleet_reports import parse_report

    def check() -> None:
        r = device_report(world.device(), NOW, "gw-0001").data
        assert parse_report(json.dumps(r).encode()).device_id == "gw-0001"
        assert r["device_id"] == "gw-0001"

    check()
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    world.sim.publish()
    world.sim.targets_offline = True
    with pytest.raises(TransportError):
        world.update(ignore_backoff=True)
    check()
    world.sim.targets_offline = False
    world.update(ignore_backoff=True)
    check()
    # no id given: a one-way hash of the rollout seed, the same on every report
    derived = device_report(world.device(), NOW).data["device_id"]
    assert (
        derived.startswith("seed-")
        and derived == device_report(world.device(), NOW).data["device_id"]
    )
    seed = world.device().paths.rollout_seed.read_bytes()
    assert seed.hex() not in derived
    with pytest.raises(UsageError, match="--device-id"):
        device_report(world.device(), NOW, "../etc")


def test_last_cycle_round_trips() -> None:
    c = LastCycle("2026-12-02T00:00:00+00:00", "installed", 123, "2.0", "delta", "")
    assert LastCycle.from_dict(c.to_dict()) == c


_OK: dict[str, Any] = LastCycle("t", "failed", 1, None, "transport", "m").to_dict()


@pytest.mark.parametrize(
    "data, says",
    [
        ({**_OK, "outcome": "maybe"}, "expected one of installed, failed, recalled-switch"),
        ({**_OK, "bytes_downloaded": -1}, "expected a count >= 0"),
        ({**_OK, "bytes_downloaded": True}, "expected a count >= 0"),
        ({**_OK, "detail": 5}, "detail: expected a string"),
        ({**_OK, "extra": 1}, "extra"),
    ],
)
def test_a_damaged_last_cycle_is_refused(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as e:
        LastCycle.from_dict(data)
    assert says in e.value.message
