"""The operator's short form of a rollout policy: ``--waves "5%@0,25%@24h,100%@3d"``.

Each comma-separated wave is ``SHARE@AFTER``: a cumulative share of the fleet (``5%``,
``0.5%``, ``100%``; at most two decimals, since the signed form counts basis points) and how
long after the start it opens (``0``, ``90m``, ``24h``, ``3d``, ``1w``; plain seconds too). The
signed form and its bounds belong to the device (``verifier.rollout``); this only translates,
then lets the device's own parser judge the result, so both sides enforce the same rules.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from repo.errors import UsageError
from verifier.errors import ArtifactSchemaError
from verifier.rollout import WHOLE_FLEET, RolloutPolicy

_SHARE = r"(\d{1,3}(?:\.\d{1,2})?)%"
_WAVE_RE = re.compile(rf"^{_SHARE}@(\d{{1,9}})([smhdw]?)\Z")
_SHARE_RE = re.compile(rf"^{_SHARE}\Z")
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EXAMPLE = "5%@0,25%@24h,100%@3d"


def parse_waves(spec: str, start: datetime) -> RolloutPolicy:
    """The policy ``spec`` describes, starting at ``start`` (UTC, whole seconds)."""
    if start.tzinfo is None or start.utcoffset() != timedelta(0):
        raise UsageError(f"rollout start: expected a UTC time, found {start!r}")
    waves = []
    for i, part in enumerate(spec.split(",")):
        m = _WAVE_RE.match(part.strip())
        if m is None:
            raise UsageError(
                f"--waves: wave {i + 1}: expected SHARE%@AFTER such as '25%@24h', "
                f"found {part.strip()!r} (whole spec, e.g.: {_EXAMPLE!r})"
            )
        share, amount, unit = m.groups()
        waves.append(
            {
                "fleet_bp": round(float(share) * 100),
                "after_s": int(amount) * _UNIT[unit],
            }
        )
    signed = {
        "start": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "waves": waves,
    }
    try:
        return RolloutPolicy.from_dict(signed, "--waves")
    except ArtifactSchemaError as e:
        raise UsageError(e.message, hint=f"for example --waves {_EXAMPLE!r}") from e


def parse_share(text: str, option: str) -> int:
    """A share of the fleet such as ``25%`` or ``0.5%``, in basis points (``advance --to``)."""
    m = _SHARE_RE.match(text.strip())
    bp = None if m is None else round(float(m.group(1)) * 100)
    if bp is None or not 1 <= bp <= WHOLE_FLEET:
        raise UsageError(
            f"{option}: expected a share of the fleet from 0.01% to 100% such as '25%', "
            f"found {text!r}"
        )
    return bp


def parse_time(text: str, option: str) -> datetime:
    """A UTC time in the signed form's shape (``2026-12-01T06:00:00Z``), for the CLI."""
    try:
        return datetime.strptime(text.strip(), _TIME).replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"{option}: expected a UTC time like 2026-12-01T06:00:00Z, found {text!r}"
        ) from None


def describe(policy: RolloutPolicy) -> list[str]:
    """One line a wave, for ``release`` and ``rollout status`` output."""
    return [
        f"{w.fleet_bp / 100:g} % of the fleet from "
        f"{(policy.start + w.after).strftime('%Y-%m-%d %H:%M:%SZ')}"
        for w in policy.waves
    ]
