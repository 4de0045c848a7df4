"""Staged rollouts: which devices may start a release now, decided on the device.

The policy is part of the target's signed ``custom`` metadata (docs/FORMAT.md, "Rollout
policy"), so whoever runs the server cannot change who updates when without the targets
key: they can withhold metadata (a freeze, which the timestamp's expiry bounds) but not
single out a device or make a release reach more of the fleet than was signed.

Each device places itself in the fleet with ``fleet_position``: a number in [0, 1) hashed
from a secret per-device seed (made at ``init``, never sent anywhere) and the release, so
the server cannot know which devices are first, and the first devices differ between
releases (no device is everyone's canary). A wave allows the share of the fleet below its
``fleet_bp`` (parts per 10,000, cumulative) from its earliest time on; integers because
TUF's canonical JSON has no floats. A device that was offline during the waves simply finds
itself allowed when it comes back: the decision depends on the time and the position only.

``halted`` stops new starts; devices already on the release stay (the caller decides that,
this module only says whether a device that is *not* on it may start it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from verifier.errors import ArtifactSchemaError

#: 10,000 basis points are the whole fleet.
WHOLE_FLEET = 10_000
MAX_WAVES = 16
#: No wave may open later than this after the start: a typo in a spec should not park a
#: release for a century.
MAX_AFTER = timedelta(days=3650)
SEED_BYTES = 32
_DOMAIN = b"otakit-rollout-position-v1\x00"


@dataclass(frozen=True)
class Wave:
    """From ``start + after`` on, devices below ``fleet_bp``/10,000 of the fleet may start."""

    fleet_bp: int
    after: timedelta


@dataclass(frozen=True)
class RolloutPolicy:
    start: datetime
    waves: tuple[Wave, ...]
    halted: bool = False

    def allowed_bp(self, now: datetime) -> int:
        """The share of the fleet (basis points) allowed to start at ``now``."""
        if self.halted:
            return 0
        return max((w.fleet_bp for w in self.waves if now >= self.start + w.after), default=0)

    def next_opening(self, now: datetime) -> datetime | None:
        """When the allowed share next grows (None: it never does under this policy)."""
        if self.halted:
            return None
        later = [self.start + w.after for w in self.waves if self.start + w.after > now]
        return min(later, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": _iso(self.start),
            "waves": [
                {"fleet_bp": w.fleet_bp, "after_s": int(w.after.total_seconds())}
                for w in self.waves
            ],
            "halted": self.halted,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "rollout") -> RolloutPolicy:
        """Strictly parse the signed form; every bound is checked here, before any use."""
        if not isinstance(data, dict):
            raise ArtifactSchemaError(f"{where}: expected an object, found {_kind(data)}")
        extra = sorted(set(data) - {"start", "waves", "halted"})
        if extra:
            raise ArtifactSchemaError(f"{where}: unexpected fields {extra}")
        start = _parse_time(data.get("start"), f"{where}.start")
        halted = data.get("halted", False)
        if not isinstance(halted, bool):
            raise ArtifactSchemaError(f"{where}.halted: expected true or false, found {halted!r}")
        raw = data.get("waves")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_WAVES:
            raise ArtifactSchemaError(
                f"{where}.waves: expected a list of 1..{MAX_WAVES} waves, found {_kind(raw)}"
            )
        waves = tuple(_parse_wave(w, f"{where}.waves[{i}]") for i, w in enumerate(raw))
        for i, (a, b) in enumerate(pairwise(waves), start=1):
            if b.fleet_bp <= a.fleet_bp or b.after < a.after:
                raise ArtifactSchemaError(
                    f"{where}.waves[{i}]: expected a larger share ({a.fleet_bp} bp before) no "
                    f"earlier ({int(a.after.total_seconds())} s before), found "
                    f"{b.fleet_bp} bp after {int(b.after.total_seconds())} s"
                )
        return cls(start, waves, halted)


@dataclass(frozen=True)
class RolloutDecision:
    """Whether this device may start the release now, and why (for logs and ``status``)."""

    allowed: bool
    reason: str
    position_bp: int
    allowed_bp: int
    wait_until: datetime | None = None
    halted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``otakit-device status``'s ``rollout``): names are part of it."""
        return {
            "allowed": self.allowed,
            "reason": self.reason,
            "position_bp": self.position_bp,
            "allowed_bp": self.allowed_bp,
            "wait_until": None if self.wait_until is None else _iso(self.wait_until),
            "halted": self.halted,
        }


def fleet_position(seed: bytes, product: str, version: str) -> int:
    """This device's place in the fleet for one release, in basis points [0, 10,000)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"rollout seed: expected {SEED_BYTES} bytes, found {len(seed)}")
    digest = hashlib.sha256(_DOMAIN + seed + product.encode() + b"\x00" + version.encode())
    return int.from_bytes(digest.digest()[:8], "big") * WHOLE_FLEET >> 64


def decide(
    policy: RolloutPolicy | None,
    *,
    seed: bytes,
    product: str,
    version: str,
    now: datetime,
    override: bool = False,
) -> RolloutDecision:
    """May a device not yet on ``version`` start it at ``now``? Pure: seed and time passed in.

    No policy means the release is for everyone at once (what every release was before
    rollouts existed). ``override`` is ``update --now``: it skips the waves but never a halt,
    which is the operator saying "stop", not "later".
    """
    pos = fleet_position(seed, product, version)
    if policy is None:
        return RolloutDecision(True, "no rollout policy: the whole fleet", pos, WHOLE_FLEET)
    if policy.halted:
        return RolloutDecision(False, "the rollout is halted", pos, 0, halted=True)
    allowed = policy.allowed_bp(now)
    if override:
        return RolloutDecision(
            True, f"waves overridden (--now); {allowed} bp of the fleet allowed", pos, allowed
        )
    if pos < allowed:
        return RolloutDecision(
            True, f"in the allowed {_pct(allowed)} of the fleet (at {_pct(pos)})", pos, allowed
        )
    wait = _opening_for(policy, pos)
    when = f"from {_iso(wait)}" if wait is not None else "under a later policy"
    return RolloutDecision(
        False,
        f"not yet: {_pct(allowed)} of the fleet allowed, this device is at {_pct(pos)}; "
        f"it may start {when}",
        pos,
        allowed,
        wait,
    )


def _opening_for(policy: RolloutPolicy, pos: int) -> datetime | None:
    for w in policy.waves:
        if pos < w.fleet_bp:
            return policy.start + w.after
    return None


def _parse_wave(data: Any, where: str) -> Wave:
    if not isinstance(data, dict) or set(data) != {"fleet_bp", "after_s"}:
        raise ArtifactSchemaError(
            f"{where}: expected {{'fleet_bp': int, 'after_s': int}}, found {data!r}"[:300]
        )
    bp, after = data["fleet_bp"], data["after_s"]
    if not _is_int(bp) or not 1 <= bp <= WHOLE_FLEET:
        raise ArtifactSchemaError(f"{where}.fleet_bp: expected 1..{WHOLE_FLEET}, found {bp!r}")
    if not _is_int(after) or not 0 <= after <= MAX_AFTER.total_seconds():
        raise ArtifactSchemaError(
            f"{where}.after_s: expected 0..{int(MAX_AFTER.total_seconds())} seconds, "
            f"found {after!r}"
        )
    return Wave(bp, timedelta(seconds=after))


def _parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) != 20 or not value.endswith("Z"):
        raise ArtifactSchemaError(
            f"{where}: expected a UTC time like 2026-12-01T00:00:00Z, found {value!r}"[:300]
        )
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ArtifactSchemaError(
            f"{where}: expected a UTC time like 2026-12-01T00:00:00Z, found {value!r}"
        ) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    return type(v).__name__


def _pct(bp: int) -> str:
    return f"{bp / 100:g} %"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
