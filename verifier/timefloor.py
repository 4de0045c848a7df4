"""``STATE/time-floor.json``: the latest time this device knows has passed, never moving back.

TUF's freshness rests on the clock: metadata is refused once its ``expires`` is behind "now".
A clock set back (a dead RTC, a hostile NTP server, someone with a shell) revives metadata
that has expired, and a frozen repository is then accepted. The floor closes that: "now" for
TUF is ``max(clock, floor)`` (``reference``).

What may raise the floor must not let a clock set *ahead* brick the device forever. TUF
metadata carries no signing time, only ``expires``, so the floor takes the clock reading of
each refresh attempt, capped by a signed bound: the earliest ``expires`` of the trusted root
and timestamp the attempt left in force (``advanced``). Hence:

* a successful refresh proves every trusted role was valid at the reference time, so there the
  floor simply follows the clock;
* a clock far ahead (2099) fails the refresh and raises the floor only to the trusted
  timestamp's expiry: the next timestamp the repository signs (it always expires later) is
  accepted again: the damage is one timestamp period, not forever;
* a device held on a frozen repository while time passes raises the floor to the expiry of
  what it holds, so stepping the clock back afterwards finds it expired still.

docs/THREAT-MODEL.md ("Time") and docs/FORMAT.md ("Time floor") have the reasoning and the
bytes; docs/OPERATIONS.md how a device recovers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from verifier import strictjson
from verifier.effects import Disk, write_atomic
from verifier.errors import TrustedMetadataError

FLOOR_FILE = "time-floor.json"
FLOOR_SCHEMA = 1

_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
_HINT = "the file is written only by otakit-device; see 'Damaged time floor' in docs/OPERATIONS.md"


@dataclass(frozen=True)
class TimeFloor:
    """The floor (None: none yet, e.g. before the first refresh), at one-second precision."""

    time: datetime | None = None

    def __post_init__(self) -> None:
        if self.time is not None and self.time.utcoffset() is None:
            raise ValueError("TimeFloor needs an aware datetime")

    def reference(self, now: datetime) -> datetime:
        """The time TUF checks expiry against: the clock, unless it is behind the floor."""
        return now if self.time is None or now >= self.time else self.time

    def advanced(self, now: datetime, bound: datetime | None) -> TimeFloor:
        """The floor after an attempt at ``now`` that left metadata valid until ``bound``."""
        seen = now if bound is None else min(now, bound)
        seen = seen.astimezone(UTC).replace(microsecond=0)
        if self.time is not None and seen <= self.time:
            return self
        return TimeFloor(seen)

    def to_bytes(self) -> bytes:
        assert self.time is not None
        text = self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps({"schema": FLOOR_SCHEMA, "time": text}, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> TimeFloor:
        doc = strictjson.loads(data, name=name, error=TrustedMetadataError, hint=_HINT)
        if not isinstance(doc, dict) or set(doc) != {"schema", "time"}:
            found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise TrustedMetadataError(
                f"{name}: expected an object with 'schema' and 'time', found {found}", hint=_HINT
            )
        if doc["schema"] != FLOOR_SCHEMA:
            raise TrustedMetadataError(
                f"{name}: expected schema {FLOOR_SCHEMA}, found {doc['schema']!r}", hint=_HINT
            )
        text = doc["time"]
        if not isinstance(text, str) or not _TIME_RE.match(text):
            raise TrustedMetadataError(
                f"{name}: time: expected YYYY-MM-DDTHH:MM:SSZ, found {text!r}", hint=_HINT
            )
        try:
            when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError as e:
            raise TrustedMetadataError(f"{name}: time: {e}", hint=_HINT) from e
        return cls(when)


def floor_path(state: Path) -> Path:
    return state / FLOOR_FILE


def load_floor(path: Path) -> TimeFloor:
    """The stored floor; none if the file does not exist. Damage is an error, never a reset."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return TimeFloor()
    except OSError as e:
        raise TrustedMetadataError(
            f"time floor {path} is unreadable: {e.strerror or e}", hint=_HINT
        ) from e
    return TimeFloor.from_bytes(data, f"time floor {path}")


def save_floor(disk: Disk, path: Path, old: TimeFloor, new: TimeFloor) -> None:
    """Persist ``new`` (atomically, I3) if it moved; it never moves back."""
    if new.time is None or new == old:
        return
    if old.time is not None and new.time < old.time:
        raise ValueError("the time floor never moves back")
    write_atomic(disk, path, new.to_bytes())
