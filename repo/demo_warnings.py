"""Loud warnings when the public demo keys of ``keys-example/`` are in use.

Their private halves are in the source tree, so a repository whose root trusts them can be
signed by anybody, and a release signed with them proves nothing. The ids are the device's
(``verifier.demokeys``); this module is the publisher's one place that decides whether a
command warns: every command that loads signers or verifies a repository passes what it
loaded and the root it verified to ``warn_demo_keys`` on every run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.metadata import Root  # type: ignore[attr-defined]

from repo.roles import TOP_LEVEL_ROLES, RoleSigners
from verifier.demokeys import DEMO_KEY_IDS, DEMO_KEY_WARNING, demo_keys_among

log = logging.getLogger("otakit.demokeys")


@dataclass(frozen=True)
class DemoKeyWarning:
    """Demo keys found in what one command trusts (a root) or signs with (its signers)."""

    subject: str
    roles: tuple[str, ...]
    keyids: tuple[str, ...]

    def message(self) -> str:
        ids = ", ".join(k[:12] for k in self.keyids)
        return f"{self.subject} {DEMO_KEY_WARNING} (roles {', '.join(self.roles)}; keys {ids})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "demo-keys",
            "subject": self.subject,
            "roles": list(self.roles),
            "keyids": list(self.keyids),
            "message": self.message(),
        }


def demo_key_warnings(
    *,
    root: Root | None = None,
    repo: Path | str | None = None,
    signers: Iterable[RoleSigners] = (),
) -> tuple[DemoKeyWarning, ...]:
    """A warning for a ``root`` that lists demo keys (for any role), and one for demo keys
    among ``signers`` that the root does not already account for."""
    out: list[DemoKeyWarning] = []
    reported: set[str] = set()
    if root is not None:
        trusted = demo_keys_among(root.keys)
        if trusted:
            roles = tuple(r for r in TOP_LEVEL_ROLES if set(root.roles[r].keyids) & set(trusted))
            subject = f"root v{root.version}"
            if repo is not None:
                subject = f"repository {repo} ({subject})"
            out.append(DemoKeyWarning(subject, roles, tuple(trusted)))
            reported.update(trusted)
    by_role: dict[str, set[str]] = {}
    for role_signers in signers:
        for role, role_list in role_signers.items():
            for s in role_list:
                keyid = str(s.public_key.keyid)
                if keyid in DEMO_KEY_IDS and keyid not in reported:
                    by_role.setdefault(role, set()).add(keyid)
    if by_role:
        roles = tuple(r for r in TOP_LEVEL_ROLES if r in by_role)
        ids = tuple(sorted(set().union(*by_role.values())))
        out.append(DemoKeyWarning("the loaded signing key set", roles, ids))
    return tuple(out)


def warn_demo_keys(
    *,
    root: Root | None = None,
    repo: Path | str | None = None,
    signers: Sequence[RoleSigners] = (),
) -> tuple[DemoKeyWarning, ...]:
    """``demo_key_warnings``, each logged at WARNING: the CLI contract shows every warning on
    stderr and lists it in the JSON result (``verifier.cli_contract``)."""
    warnings = demo_key_warnings(root=root, repo=repo, signers=signers)
    for w in warnings:
        log.warning("%s", w.message())
    return warnings
