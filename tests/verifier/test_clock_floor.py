"""Issue 9, "no clock floor": a clock set back must not revive metadata that has expired.

The device's clock is the ``now`` passed to ``update``. ngclient reads the system clock; the
tests set that to the same instant (``system_clock``), so that on code without a floor they
show exactly what a device whose clock was set back did: accept, and arm an image.
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc
from tuf.ngclient._internal import trusted_metadata_set

from tests.verifier.conftest import NOW, World, evolve, make_world
from verifier.effects import RealDisk
from verifier.errors import (
    InternalError,
    MetadataError,
    NothingToDoError,
    TransportError,
    TrustedMetadataError,
)
from verifier.state import StatePaths
from verifier.timefloor import TimeFloor, floor_path, load_floor
from verifier.tuf import client as tuf_client
from verifier.tuf.client import TufClient
from verifier.tuf.fetcher import OtaFetcher
from verifier.update import UpdateOptions, UpdateResult, update

DAY = timedelta(days=1)
YEAR_2020 = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def system_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Set what ngclient believes the system clock says."""

    def set_clock(when: datetime) -> None:
        class Clock(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> Clock:  # type: ignore[override]
                return cls.fromtimestamp(when.timestamp(), tz)

        fake = types.SimpleNamespace(datetime=Clock, timezone=dt.timezone)
        monkeypatch.setattr(trusted_metadata_set, "datetime", fake)

    return set_clock


class Offline(OtaFetcher):
    """The network is down."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        raise tuf_exc.DownloadError("network is unreachable")


def _update(w: World, clock: datetime, fetcher: OtaFetcher | None = None) -> UpdateResult:
    opts = UpdateOptions(mountinfo=w.mountinfo)
    return update(w.device(), clock, options=opts, fetcher=fetcher or w.sim)


def _long_lived(w: World) -> None:
    """Root 2 valid for a year (root is the long-lived role; timestamps live days)."""
    w.sim.root.signed.expires = NOW + 365 * DAY
    w.sim.rotate_root()
    for md in (w.sim.targets, w.sim.snapshot):
        md.signed.expires = NOW + 365 * DAY


def _floor(w: World) -> datetime | None:
    return load_floor(floor_path(w.state)).time


def _primed(tmp_path: Path, set_clock: Callable[[datetime], None]) -> World:
    """A device that refreshed at NOW (nothing to install); timestamps live 30 days."""
    w = make_world(tmp_path)
    _long_lived(w)
    w.sim.publish()
    set_clock(NOW)
    with pytest.raises(NothingToDoError):
        _update(w, NOW)
    return w


def test_a_clock_set_to_2020_does_not_accept_a_timestamp_that_expired_before_the_floor(
    tmp_path: Path, system_clock: Callable[[datetime], None]
) -> None:
    """A captured short-lived timestamp (with a new image) is replayed after it expired."""
    w = _primed(tmp_path, system_clock)
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish(timestamp_expires=NOW + 5 * DAY)  # captured by the attacker
    system_clock(NOW + 10 * DAY)
    with pytest.raises(TransportError):  # the device is offline while that timestamp expires
        _update(w, NOW + 10 * DAY, Offline())
    assert _floor(w) == NOW + 10 * DAY
    before = w.snapshot()
    system_clock(YEAR_2020)
    with pytest.raises(MetadataError, match="expired") as refused:
        _update(w, YEAR_2020)
    assert refused.value.exit_code == 3
    assert w.snapshot() == before  # booted slot, trusted metadata, boot pointer unchanged
    assert w.boot_control().read().trial is None  # nothing armed
    assert _floor(w) == NOW + 10 * DAY  # a clock behind never lowers it


def test_a_clock_stepped_back_after_expiry_does_not_revive_frozen_metadata(
    tmp_path: Path, system_clock: Callable[[datetime], None]
) -> None:
    """Indefinite freeze: the server keeps serving what the device already has."""
    w = _primed(tmp_path, system_clock)
    expires = w.sim.timestamp.signed.expires
    system_clock(NOW + 40 * DAY)
    with pytest.raises(MetadataError, match="expired"):
        _update(w, NOW + 40 * DAY)
    assert _floor(w) == expires  # capped by what it holds, not by the (unsigned) clock
    before = w.snapshot()
    system_clock(NOW + DAY)
    with pytest.raises(MetadataError, match="expired"):
        _update(w, NOW + DAY)
    assert w.snapshot() == before


def test_a_clock_far_ahead_raises_the_floor_only_to_the_trusted_timestamp_expiry(
    tmp_path: Path, system_clock: Callable[[datetime], None]
) -> None:
    """2099 once (a bad RTC, a hostile NTP answer) must not refuse every update after."""
    w = _primed(tmp_path, system_clock)
    held = w.sim.timestamp.signed.expires
    far = datetime(2099, 1, 1, tzinfo=UTC)
    system_clock(far)
    with pytest.raises(MetadataError, match="expired"):
        _update(w, far)
    assert _floor(w) == held
    # the repository's next timestamp (it expires later) is accepted with the clock right
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish(timestamp_expires=held + 7 * DAY)
    system_clock(NOW + DAY)
    assert str(_update(w, NOW + DAY).version) == "2.0"


def test_a_device_back_after_everything_expired_recovers_through_a_new_timestamp(
    tmp_path: Path, system_clock: Callable[[datetime], None]
) -> None:
    """The runbook case (docs/OPERATIONS.md): months offline, the repository kept signing."""
    w = _primed(tmp_path, system_clock)
    back = NOW + 60 * DAY  # the trusted timestamp expired 30 days ago
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish(timestamp_expires=back + DAY)
    system_clock(back)
    assert str(_update(w, back).version) == "2.0"
    assert _floor(w) == back


def test_a_dead_rtc_still_accepts_fresh_metadata_above_the_floor(
    tmp_path: Path, system_clock: Callable[[datetime], None]
) -> None:
    w = _primed(tmp_path, system_clock)
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish(timestamp_expires=NOW + 2 * DAY)
    system_clock(YEAR_2020)
    assert str(_update(w, YEAR_2020).version) == "2.0"  # checked at the floor (NOW)
    assert _floor(w) == NOW


# --- the one python-tuf attribute the floor relies on ---------------------------------------


def _client(w: World, now: datetime) -> TufClient:
    paths = StatePaths(w.state)
    return TufClient(
        paths, "http://repo.test/metadata/", "http://repo.test/targets/", RealDisk(), now=now,
        fetcher=w.sim,
    )  # fmt: skip


def test_ngclient_checks_expiry_against_the_reference_time_the_client_sets(
    tmp_path: Path,
) -> None:
    """Pins ``Updater._trusted_set.reference_time``: fails if python-tuf renames it or stops
    reading it (then the floor would silently not apply)."""
    w = make_world(tmp_path)
    with _client(w, NOW) as c:
        trusted = c._updater._trusted_set
        assert isinstance(trusted, trusted_metadata_set.TrustedMetadataSet)
        assert trusted.reference_time == NOW
    with _client(w, NOW) as c:
        c._updater._trusted_set.reference_time = NOW + 365 * DAY
        with pytest.raises(MetadataError, match="expired"):
            c.refresh()


def test_the_reference_time_is_the_floor_when_the_clock_is_behind(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    floor_path(w.state).write_bytes(TimeFloor(NOW).to_bytes())
    with _client(w, YEAR_2020) as c:
        assert c._updater._trusted_set.reference_time == NOW
    with _client(w, NOW + DAY) as c:
        assert c._updater._trusted_set.reference_time == NOW + DAY


def test_a_python_tuf_without_the_attribute_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = make_world(tmp_path)
    real = tuf_client.Updater

    def without(*args: object, **kw: object) -> object:
        u = real(*args, **kw)  # type: ignore[arg-type]
        del u._trusted_set.reference_time
        return u

    monkeypatch.setattr(tuf_client, "Updater", without)
    with pytest.raises(InternalError, match="reference_time"):
        _client(w, NOW)


# --- the floor file ----------------------------------------------------------------------------


def test_the_floor_never_moves_back_and_is_capped_by_its_bound() -> None:
    f = TimeFloor(NOW)
    assert f.advanced(NOW - DAY, None) == f
    assert f.advanced(NOW + 9 * DAY, NOW + 2 * DAY) == TimeFloor(NOW + 2 * DAY)
    assert f.reference(YEAR_2020) == NOW and f.reference(NOW + DAY) == NOW + DAY
    assert TimeFloor.from_bytes(f.to_bytes(), "x") == f


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"{}", "expected an object with 'schema' and 'time', found []"),
        (b'{"schema": 1, "time": "2026-01-01T00:00:00Z"', "truncated JSON"),
        (
            b'{"schema": 1, "time": "2099-01-01T00:00:00Z", "time": "2020-01-01T00:00:00Z"}',
            "duplicate key 'time' at the top level",
        ),
        (b'{"schema": 1, "time": "2026-01-01T00:00:00Z\\n"}', "expected YYYY-MM-DDTHH:MM:SSZ"),
    ],
    ids=["empty-object", "truncated", "duplicate-key", "newline"],
)
def test_a_damaged_floor_is_an_error_never_a_reset(
    tmp_path: Path, content: bytes, found: str
) -> None:
    w = make_world(tmp_path)
    floor_path(w.state).write_bytes(content)
    before = w.snapshot()
    with pytest.raises(TrustedMetadataError, match="time floor") as e:
        w.update()
    assert found in e.value.message and str(floor_path(w.state)) in e.value.message
    assert e.value.exit_code == 5 and e.value.hint and "OPERATIONS.md" in e.value.hint
    assert w.snapshot() == before and floor_path(w.state).read_bytes() == content
