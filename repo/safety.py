"""What the publisher refuses to sign: under an expired root, or metadata that would expire
almost at once.

Both failures used to pass silently: a release under a root that expired long ago is signed,
published and then refused by every device; metadata signed to expire within minutes is
refused by devices that fetch it a little later. The publisher is the place to stop both,
before any key is used.

* ``check_root_current``: the trusted (newest) root must not have expired at ``now``. Every
  command that signs under the published root calls it (release, withdraw, prune, refresh).
  A root rotation is exempt: it is how an expired root is renewed (devices walk the root
  chain regardless of the expiry of intermediate roots, TUF 5.3.4), and the new root it signs
  is bound by the margin below like every new metadata file.
* ``Margins``: each role's new metadata must stay valid for longer than its margin after it is
  signed (``Expiries`` enforces this when it is built, so every command that signs, rotation
  included, is covered). The margins are the least time a device needs to fetch and use a
  file: an hour for the online roles (a device refreshes at least that often), a day for
  targets, a week for root (a new root must reach devices that are offline for days).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tuf.api.metadata import Root  # type: ignore[attr-defined]

from repo.errors import ExpiryMarginError, RootExpiredError

ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Margins:
    """The least lifetime of newly signed metadata, per role (docs/OPERATIONS.md)."""

    root: timedelta = timedelta(days=7)
    targets: timedelta = timedelta(days=1)
    snapshot: timedelta = timedelta(hours=1)
    timestamp: timedelta = timedelta(hours=1)

    def check(self, role: str, lifetime: timedelta) -> None:
        """Refuse a lifetime for ``role`` that is not longer than its margin."""
        margin: timedelta = getattr(self, role)
        if lifetime <= margin:
            raise ExpiryMarginError(
                f"expiry of {role}: expected a lifetime longer than the {role} margin of "
                f"{margin}, found {lifetime} (devices would refuse the metadata almost at once)",
                hint=f"choose a longer expiry (--{role}-expiry-days)",
            )


def check_root_current(root: Root, now: datetime) -> None:
    """Refuse to sign under a trusted root that has expired at ``now``."""
    if root.expires <= now:
        ago = now - root.expires
        raise RootExpiredError(
            f"root v{root.version}: expected an unexpired trusted root, found one that expired "
            f"at {root.expires.strftime(ISO)} ({ago.days} days ago); every device refuses "
            "metadata under it, so nothing is signed",
            hint="renew the root first (with the offline root keys): otakit repo rotate-root "
            "REPO --old-keys KEYS --new-keys KEYS (OLD = NEW renews it)",
        )
