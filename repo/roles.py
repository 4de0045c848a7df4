"""The top-level TUF roles, grouped by who holds their keys and what re-signs them.

One module so that "online", "offline" and "the chain a release signs" mean the same thing
in every publisher command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from securesystemslib.signer import Signer  # type: ignore[attr-defined]

TOP_LEVEL_ROLES = ("root", "targets", "snapshot", "timestamp")
#: Keys kept on a signing server: a refresh job re-signs these unattended.
ONLINE_ROLES = ("snapshot", "timestamp")
#: Keys kept offline (a ceremony signs these); a refresh can only warn before they expire.
OFFLINE_ROLES = ("root", "targets")
#: The chain ``repo.signing.sign_chain`` signs, in publication order: a release re-signs all
#: three, and so does a root rotation (any role's keys may have changed under the new root).
CHAIN_ROLES = ("targets", "snapshot", "timestamp")

#: role -> the signers loaded for it (any number; the threshold checks decide if enough).
RoleSigners = Mapping[str, Sequence[Signer]]
