"""Root rotation: a new root N+1 with a new key set, and everything re-signed under it.

This is how an operator replaces, adds or revokes keys of any top-level role, and renews an
expiring root (rotate to the same key set). Revocation is rotation with the key left out.

Trust (TUF §5.3.4-5.3.5): root N+1 must carry a threshold of signatures from the root keys
of root N *and* a threshold from its own root keys; ``sign_metadata`` checks both against
the exact bytes that get published, so a rotation signed only by the new keys (an attacker
with repository write access) or only by the old ones (the new keys never proven) is refused
before anything is written.

Since any role's keys may change, targets, snapshot and timestamp are re-signed with the new
keys as version+1. Publication order decides what a client sees in between:

* **Bridged** (the default when the old online keys are still at hand): targets, snapshot
  and timestamp are signed by the new keys *and* the old ones, so they verify under root N
  and under root N+1. They are published first (timestamp last among them) and root N+1
  after them. A client still at root N sees either the old set or the new set, both valid
  under root N; once ``N+1.root.json`` exists, every client moves to root N+1, under which
  the new set is valid. A crash at any write leaves a repository every client accepts.
* **Root first** (some old online key is lost, so the new metadata cannot satisfy root N):
  ``N+1.root.json`` first, then targets, snapshot, timestamp. Between the root and the
  timestamp landing, a client that fetched root N+1 rejects the old timestamp/snapshot if
  their keys changed, and its refresh fails (it retries later, nothing is trusted wrongly).
  A crash there leaves a repository no client accepts until the rotation is rerun with
  ``resume=True`` (``--resume``): it finds root N+1 published and the online chain valid
  only under root N, and re-signs that chain under root N+1. Resuming is an explicit
  choice because the same on-disk picture is what an attacker holding a *revoked* key
  could fake (pointing timestamp at an older, still root-N-valid snapshot); the operator
  checks the listed targets first. The result says which mode was used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import Metadata, Root, Snapshot, Targets  # type: ignore[attr-defined]

from repo.demo_warnings import DemoKeyWarning, warn_demo_keys
from repo.errors import (
    OtakitError,
    RepositoryStateError,
    ThresholdError,
    UntrustedRepositoryError,
    UsageError,
)
from repo.keys import KeyConfig
from repo.layout import metadata_dir, metadata_filename
from repo.publish import ProgressFn, PublishDisk, SignedRelease, publish, publisher_lock
from repo.repository import Expiries, build_root, check_now, next_targets, stage_chain
from repo.roles import CHAIN_ROLES, TOP_LEVEL_ROLES, RoleSigners
from repo.signing import (
    SignedChain,
    SignedMetadata,
    StagedChain,
    sign_chain,
    sign_metadata,
    verifies_under,
)
from repo.state import RepoState, load_state
from verifier.effects import Disk


@dataclass(frozen=True)
class RoleChange:
    """How one role's keys differ between root N and root N+1."""

    role: str
    added: tuple[str, ...]
    revoked: tuple[str, ...]
    threshold: tuple[int, int]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.revoked) or self.threshold[0] != self.threshold[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "revoked": list(self.revoked),
            "threshold": {"old": self.threshold[0], "new": self.threshold[1]},
        }


@dataclass(frozen=True)
class RotationResult:
    """What a rotation published, in the order it was written."""

    old_root_version: int
    root_version: int
    versions: Mapping[str, int]
    changes: tuple[RoleChange, ...]
    bridged: bool
    written: tuple[str, ...]
    warnings: tuple[str, ...]
    #: public demo keys trusted by the new root or used to sign (also logged)
    demo_keys: tuple[DemoKeyWarning, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "old_root_version": self.old_root_version,
            "root_version": self.root_version,
            "versions": dict(self.versions),
            "roles": {c.role: c.to_json() for c in self.changes},
            "bridged": self.bridged,
            "written": list(self.written),
            "warnings": list(self.warnings),
        }


def role_changes(old: Root, new: Root) -> tuple[RoleChange, ...]:
    out = []
    for role in TOP_LEVEL_ROLES:
        before, after = old.roles[role], new.roles[role]
        out.append(
            RoleChange(
                role=role,
                added=tuple(sorted(set(after.keyids) - set(before.keyids))),
                revoked=tuple(sorted(set(before.keyids) - set(after.keyids))),
                threshold=(before.threshold, after.threshold),
            )
        )
    return tuple(out)


def sign_rotation(
    state: RepoState,
    new_keys: KeyConfig,
    old_signers: RoleSigners,
    new_signers: RoleSigners,
    now: datetime,
    expiries: Expiries,
) -> tuple[SignedRelease, tuple[str, ...]]:
    """Sign root N+1 and the re-signed online chain; returns the release and the online
    roles that could not be bridged (empty: publish root last)."""
    old_root = state.root.signed
    new_root = build_root(new_keys, now, expiries, version=old_root.version + 1)
    signed_root = sign_metadata(
        Metadata(new_root),
        [*old_signers.get("root", ()), *new_signers.get("root", ())],
        [old_root, new_root],
    )
    chain = _sign_online(state, new_root, old_root, old_signers, new_signers, now, expiries)
    return rotation_release(chain, signed_root), chain.unbridged


def sign_resume(
    state: RepoState,
    new_keys: KeyConfig,
    new_signers: RoleSigners,
    now: datetime,
    expiries: Expiries,
) -> SignedRelease:
    """Finish a root-first rotation that crashed after publishing root N+1: re-sign the
    online chain (verified under root N by ``load_state``) with the keys root N+1 grants."""
    root = state.root.signed
    wanted = build_root(new_keys, now, expiries, version=root.version)
    for role in TOP_LEVEL_ROLES:
        have, want = root.roles[role], wanted.roles[role]
        if set(have.keyids) != set(want.keyids) or have.threshold != want.threshold:
            raise RepositoryStateError(
                f"root v{root.version} was published by an interrupted rotation whose {role} "
                f"keys differ from {new_keys.source}",
                hint="rerun 'otakit repo rotate-root' with the --new-keys configuration of the "
                "interrupted run",
            )
    chain = _sign_online(state, root, None, {}, new_signers, now, expiries)
    return SignedRelease((), chain.targets, chain.snapshot, chain.timestamp)


def _sign_online(
    state: RepoState,
    new_root: Root,
    old_root: Root | None,
    old_signers: RoleSigners,
    new_signers: RoleSigners,
    now: datetime,
    expiries: Expiries,
) -> SignedChain:
    """Targets, snapshot and timestamp version+1 under ``new_root``, co-signed by the old
    keys when given; ``unbridged`` lists the roles that do not verify under ``old_root``."""
    both = {r: [*new_signers.get(r, ()), *old_signers.get(r, ())] for r in CHAIN_ROLES}
    return sign_online_under(
        state, new_root, old_root, both, now, expiries, next_targets(state, now, expiries)
    )


def sign_online_under(
    state: RepoState,
    new_root: Root,
    old_root: Root | None,
    signers: RoleSigners,
    now: datetime,
    expiries: Expiries,
    targets: Targets | SignedMetadata | None,
) -> SignedChain:
    """The chain a new root needs: targets (to sign, already signed by a ceremony, or None:
    the published one), then snapshot and timestamp version+1, each meeting ``new_root``'s
    threshold; ``unbridged`` lists the roles that do not also verify under ``old_root``
    (None: nothing to bridge), which decides the publication order (``rotation_release``)."""
    if isinstance(targets, SignedMetadata):
        staged = stage_chain(state, None, now, expiries)
        meta = {**staged.snapshot.meta, "targets.json": targets.meta_file()}
        snapshot = Snapshot(
            version=staged.snapshot.version, expires=staged.snapshot.expires, meta=meta
        )
        online = sign_chain(
            StagedChain(None, snapshot, staged.timestamp), signers, [new_root], bridge=old_root
        )
        lost = () if old_root is None or verifies_under(old_root, targets) else ("targets",)
        return SignedChain(targets, online.snapshot, online.timestamp, lost + online.unbridged)
    if targets is None and old_root is not None:
        published = state.targets.signed_bytes
        if not new_root.get_verification_result(
            "targets", published, state.targets.signatures
        ).verified:
            raise ThresholdError(
                f"published targets v{state.targets.signed.version}: expected it to meet root "
                f"v{new_root.version}'s targets threshold, found it does not",
                hint="stage new targets with the root change (otakit repo stage … root does)",
            )
    return sign_chain(
        stage_chain(state, targets, now, expiries), signers, [new_root], bridge=old_root
    )


def rotation_release(chain: SignedChain, root: SignedMetadata | None) -> SignedRelease:
    """Publication order of a new root and its chain: the root last when every re-signed
    role also verifies under the old root (bridged), else first (module docstring)."""
    return SignedRelease(
        (),
        chain.targets,
        chain.snapshot,
        chain.timestamp,
        root=root,
        root_last=root is not None and not chain.unbridged,
    )


def open_rotation(repo_dir: Path, *, resume: bool, rerun: str) -> tuple[RepoState, bool]:
    """The published state to rotate from (call under the publisher lock), and whether an
    interrupted root-first publication is being resumed (``resume`` asked for it and root
    N+1 is published with the online chain still under root N). ``rerun`` names the command
    to rerun in hints."""
    try:
        state = load_state(repo_dir)
    except UntrustedRepositoryError as refused:
        try:
            state = load_state(repo_dir, online_under_previous_root=True)
        except OtakitError:
            raise refused from None
        if not resume:
            raise UntrustedRepositoryError(
                f"{refused.message}; it verifies under root v{state.online_root_version}: "
                f"a rotation to root v{state.root.signed.version} was interrupted after "
                "publishing that root (or someone holding a revoked key changed timestamp)",
                hint=f"check 'otakit repo list REPO' shows the expected targets, then rerun "
                f"{rerun} with --resume",
            ) from None
        return state, True
    if resume:
        raise UsageError(
            f"nothing to resume: the repository verifies under its newest root "
            f"v{state.root.signed.version}",
            hint=f"run {rerun} without --resume",
        )
    return state, False


def rotation_warnings(
    *, resuming: bool, unbridged: tuple[str, ...], old_version: int, new_version: int
) -> tuple[str, ...]:
    if resuming:
        return (
            f"resumed an interrupted rotation: root v{new_version} was already "
            "published; re-signed targets, snapshot and timestamp under it",
        )
    if unbridged:
        return (
            f"not bridged: the new {', '.join(unbridged)} metadata does not verify under root "
            f"v{old_version} (old keys not loaded), so root "
            f"v{new_version} was published first; clients refreshing while this "
            "ran may have failed once and will succeed on their next attempt",
        )
    return ()


def written_order(release: SignedRelease) -> tuple[str, ...]:
    """The metadata files ``release`` writes, in the order ``publish`` writes them."""
    chain = (release.targets, *release.delegated, release.snapshot, release.timestamp)
    written = tuple(m.filename for m in chain if m is not None)
    if release.root is not None:
        roots = (release.root.filename, "root.json")
        written = written + roots if release.root_last else roots + written
    return written


def rotate_root(
    repo_dir: Path,
    new_keys: KeyConfig,
    now: datetime,
    *,
    old_signers: RoleSigners,
    new_signers: RoleSigners,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> RotationResult:
    """Publish root N+1 granting ``new_keys`` and re-sign targets, snapshot and timestamp.

    ``old_signers["root"]`` must meet root N's root threshold and ``new_signers`` every
    role's threshold in root N+1 (else ``ThresholdError``, nothing written). Old online
    signers (``old_signers["targets"]`` ...) are optional; with them the rotation is bridged.
    Rerunning after a crash is always safe: a bridged rotation simply rotates again; a
    root-first one that died after publishing root N+1 is finished with ``resume=True``
    (online chain only).
    """
    check_now(now)
    expiries = expiries or Expiries()
    with publisher_lock(repo_dir):
        state, resuming = open_rotation(
            repo_dir, resume=resume, rerun="the same rotate-root command"
        )
        if resuming:
            release = sign_resume(state, new_keys, new_signers, now, expiries)
            unbridged: tuple[str, ...] = CHAIN_ROLES
        else:
            release, unbridged = sign_rotation(
                state, new_keys, old_signers, new_signers, now, expiries
            )
        publish(repo_dir, release, disk=disk or PublishDisk(), progress=progress)
        after = load_state(repo_dir)
    old_version = state.online_root_version
    old_root: Metadata[Root] = state.root
    if resuming:
        old_root = Metadata.from_bytes(
            (metadata_dir(repo_dir) / metadata_filename("root", old_version)).read_bytes()
        )
    return RotationResult(
        old_root_version=old_version,
        root_version=after.root.signed.version,
        versions={r: getattr(after, r).signed.version for r in TOP_LEVEL_ROLES},
        changes=role_changes(old_root.signed, after.root.signed),
        bridged=not unbridged,
        written=written_order(release),
        warnings=rotation_warnings(
            resuming=resuming,
            unbridged=unbridged,
            old_version=state.root.signed.version,
            new_version=after.root.signed.version,
        ),
        demo_keys=warn_demo_keys(
            root=after.root.signed, repo=repo_dir, signers=[old_signers, new_signers]
        ),
    )
