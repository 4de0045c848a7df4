"""What a fleet run measured: the data the JSON and HTML reports are made of.

Kept free of how it was measured (simulator, collected device reports), so the report can
be tested on its own and the same page serves a real fleet's collected reports later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """The fleet at one moment of the run."""

    t: float  #: seconds since the run started
    versions: Mapping[str, int]  #: running version (or "updating", "failed") -> devices
    bytes_served: int  #: cumulative bytes the repository served so far


@dataclass(frozen=True)
class FleetSummary:
    devices: int
    new_version: str
    old_version: str
    on_new: int
    rolled_back: int
    #: devices on neither version, or with no bootable committed slot: must be zero
    on_neither: int
    rollback_reasons: Mapping[str, int]
    failures_by_kind: Mapping[str, int]
    bytes_served: int
    #: what serving every device the full image would have cost
    bytes_all_full: int
    #: the bound the issue sets: deltas for devices with a base, full images for the others
    bytes_bound: int
    wall_s: float
    samples: tuple[Sample, ...] = field(default=())
    #: back on the version they ran before, after a recall
    recalled: int = 0
    #: still on the version they ran, never having started the new one (waves, a halt or a
    #: recall held them back)
    not_started: int = 0

    @property
    def devices_per_minute(self) -> float:
        return self.devices / (self.wall_s / 60) if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "new_version": self.new_version,
            "old_version": self.old_version,
            "on_new": self.on_new,
            "rolled_back": self.rolled_back,
            "recalled": self.recalled,
            "not_started": self.not_started,
            "on_neither": self.on_neither,
            "rollback_reasons": dict(self.rollback_reasons),
            "failures_by_kind": dict(self.failures_by_kind),
            "bytes_served": self.bytes_served,
            "bytes_all_full": self.bytes_all_full,
            "bytes_bound": self.bytes_bound,
            "wall_s": round(self.wall_s, 3),
            "devices_per_minute": round(self.devices_per_minute, 1),
            "samples": [
                {"t": round(s.t, 3), "versions": dict(s.versions), "bytes_served": s.bytes_served}
                for s in self.samples
            ],
        }
