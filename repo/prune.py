"""Retention: drop old releases from the targets metadata, then delete their files.

``plan_prune`` (pure) keeps, per product, the newest ``keep`` versions with all their targets
(withdrawn ones count: a device running a withdrawn release must still be told so), plus the
full artifact of every version a kept delta is built on: a device running that base is the
one the delta is for, and ``verify-installed``/``status`` on it look its image up in the
signed targets. Targets that are not otakit's are never touched.

``prune`` runs in two steps, in this order, under the publisher lock:

1. a signed targets change without the dropped targets, published like a release (targets,
   snapshot, ``timestamp.json`` last);
2. only then, the deletion of every file under ``targets/`` that the *published* targets
   metadata (re-read and verified after step 1) does not name: the dropped releases' files
   and any orphan a crashed publication left behind (hidden temp files included).

A crash in between leaves a valid repository with orphan files, which the next ``prune``
deletes (step 1 then has nothing to sign, step 2 still runs). Files are named as stored
(consistent snapshots: ``targets/<dir>/<sha256>.<name>``, ``repo.layout.stored_target_path``).
Metadata files are never pruned: every root version must stay for a device that walks the
root chain from an old pinned root, and old targets/snapshot versions cost little.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile, Targets  # type: ignore[attr-defined]

from repo.demo_warnings import warn_demo_keys
from repo.errors import OtakitError, PublishError, RepositoryStateError, UsageError
from repo.keys import KeyConfig, PromptFn
from repo.layout import stored_target_path, targets_dir
from repo.publish import ProgressFn, PublishDisk, publisher_lock
from repo.repository import Expiries, Transaction, change_signers, check_now
from repo.roles import RoleSigners
from repo.state import RepoState, load_state
from repo.withdraw import listed_artifacts, product_listing
from verifier.artifact import ImageVersion
from verifier.effects import Disk


@dataclass(frozen=True)
class PrunePlan:
    """Which targets stay and which go, and why each kept version stays."""

    keep: tuple[str, ...]
    remove: tuple[str, ...]
    #: product -> kept versions, newest first ("2.0" or "1.0 (base of a kept delta)")
    kept_versions: Mapping[str, tuple[str, ...]]
    #: delegated products left as they are: no key file of theirs was given
    skipped: tuple[str, ...] = ()


def plan_prune(targets: Targets | Mapping[str, TargetFile], keep: int) -> PrunePlan:
    """Keep the newest ``keep`` versions per product plus the bases of their deltas.

    ``targets``: a targets role, or every listed target (``repo.withdraw.product_listing``:
    top-level and delegated products' roles and bins together)."""
    if keep < 1:
        raise UsageError(f"--keep: expected at least 1 version per product, found {keep}")
    entries = targets.targets if isinstance(targets, Targets) else targets
    listed = listed_artifacts(entries)
    by_product: dict[str, dict[ImageVersion, list[str]]] = {}
    for a in listed:
        by_product.setdefault(a.info.product, {}).setdefault(a.info.version, []).append(a.path)
    kept: set[str] = set(entries) - {a.path for a in listed}
    why: dict[str, tuple[str, ...]] = {}
    for product, versions in sorted(by_product.items()):
        newest = sorted(versions, reverse=True)[:keep]
        bases: set[ImageVersion] = set()
        for a in listed:
            if a.info.product == product and a.info.version in newest:
                kept.add(a.path)
                if a.info.base is not None and a.info.base.version not in newest:
                    bases.add(a.info.base.version)
        for a in listed:
            if a.info.product == product and a.info.version in bases and a.info.kind == "full":
                kept.add(a.path)
        why[product] = tuple(
            [str(v) for v in newest]
            + [f"{v} (base of a kept delta)" for v in sorted(bases, reverse=True) if v in versions]
        )
    return PrunePlan(
        keep=tuple(sorted(kept)),
        remove=tuple(sorted(set(entries) - kept)),
        kept_versions=why,
    )


def unreferenced_files(
    repo_dir: Path, listed: Mapping[str, TargetFile], keep: Iterable[str]
) -> list[Path]:
    """Files under ``targets/`` that none of the ``keep`` target paths of ``listed`` names.

    Walks without following symbolic links (a link is itself a file to delete, never a way
    out of the directory)."""
    referenced = set()
    for path in keep:
        sha = listed[path].hashes.get("sha256")
        if sha is None:
            raise RepositoryStateError(
                f"published target {path}: expected a sha256 hash (its stored file name), "
                "found none; nothing is deleted"
            )
        referenced.add(stored_target_path(repo_dir, path, sha))
    out: list[Path] = []
    top = targets_dir(repo_dir)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        d = Path(dirpath)
        names = filenames + [n for n in dirnames if (d / n).is_symlink()]
        out.extend(d / n for n in names if d / n not in referenced)
    return sorted(out)


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    #: files deleted (or, in a dry run, that would be), relative to the repository
    deleted: tuple[str, ...]
    freed_bytes: int
    #: metadata versions after the prune (unchanged when nothing was dropped)
    targets_version: int
    snapshot_version: int
    timestamp_version: int
    published: bool
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "published": self.published,
            "kept_versions": {p: list(v) for p, v in self.plan.kept_versions.items()},
            "removed_targets": list(self.plan.remove),
            "kept_targets": len(self.plan.keep),
            "skipped_products": list(self.plan.skipped),
            "deleted_files": list(self.deleted),
            "freed_bytes": self.freed_bytes,
            "metadata": {
                "targets": self.targets_version,
                "snapshot": self.snapshot_version,
                "timestamp": self.timestamp_version,
            },
        }


def prune(
    repo_dir: Path,
    keyconf: KeyConfig,
    keep: int,
    now: datetime,
    *,
    dry_run: bool = False,
    signers: RoleSigners | None = None,
    expiries: Expiries | None = None,
    disk: Disk | None = None,
    product_keys: Mapping[str, KeyConfig] | None = None,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
    progress: ProgressFn | None = None,
) -> PruneResult:
    """Drop old releases, publish, then delete unreferenced files (module docstring).

    A delegated product is pruned like any other, its role and bins re-signed with its own
    keys (``product_keys[product]``, no top-level targets key needed); a delegated product
    whose key file is not given is left as it is (``PrunePlan.skipped``).

    ``dry_run`` takes no lock and writes nothing (like ``release --dry-run``). Keys are
    loaded only when targets are to be dropped: deleting leftover orphans needs no signature.
    """
    check_now(now)
    product_keys = product_keys or {}
    if dry_run:
        state = load_state(repo_dir)
        plan = _plan(state, keep, product_keys, signers)
        listed = product_listing(state)
        files = unreferenced_files(repo_dir, listed, plan.keep)
        return _result(repo_dir, state, plan, files, _sizes(files), published=False, dry_run=True)
    disk = disk or PublishDisk()
    with publisher_lock(repo_dir):
        state = load_state(repo_dir)
        plan = _plan(state, keep, product_keys, signers)
        published = False
        if plan.remove:
            tx = Transaction(state)
            for path in plan.remove:
                tx.remove_target(path)
            if signers is None:
                signers = change_signers(
                    state, keyconf, tx.signing_roles(), product_keys, env=env, prompt=prompt
                )
            state = tx.commit(signers, now, expiries=expiries, disk=disk, progress=progress)
            published = True
        # The published state, re-read and verified, decides what may go (never the plan).
        listed = product_listing(state)
        files = unreferenced_files(repo_dir, listed, listed)
        sizes = _sizes(files)
        say = progress or (lambda _msg: None)
        for f in files:
            say(f"deleting {f.relative_to(repo_dir)}")
            try:
                disk.unlink(f)
            except (OtakitError, OSError) as e:
                done = "published the pruned metadata; " if published else ""
                why = e.message if isinstance(e, OtakitError) else f"{e.strerror or e}"
                raise PublishError(
                    f"{done}deleting {f} failed: {why}",
                    hint="the repository is valid; rerun 'otakit repo prune' to delete the "
                    "files left over",
                ) from e
        _remove_empty_dirs(targets_dir(repo_dir), {f.parent for f in files})
    warn_demo_keys(root=state.root.signed, repo=repo_dir, signers=[signers] if signers else [])
    return _result(repo_dir, state, plan, files, sizes, published=published)


def _plan(
    state: RepoState,
    keep: int,
    product_keys: Mapping[str, KeyConfig],
    signers: RoleSigners | None,
) -> PrunePlan:
    """``plan_prune`` over every listed target, leaving alone each delegated product
    whose keys are not at hand (its role and bins can only be signed by them)."""
    plan = plan_prune(product_listing(state), keep)
    tx = Transaction(state)
    have = set(product_keys) | set(signers or ())
    skipped = sorted(
        {r for p in plan.remove if (r := tx.signing_role(p)) != "targets" and r not in have}
    )
    if not skipped:
        return plan
    stay = {p for p in plan.remove if tx.signing_role(p) in skipped}
    return PrunePlan(
        keep=tuple(sorted({*plan.keep, *stay})),
        remove=tuple(p for p in plan.remove if p not in stay),
        kept_versions={p: v for p, v in plan.kept_versions.items() if p not in skipped},
        skipped=tuple(skipped),
    )


def _sizes(files: Sequence[Path]) -> int:
    return sum(f.lstat().st_size for f in files)


def _remove_empty_dirs(top: Path, dirs: Iterable[Path]) -> None:
    """Best effort: directories the deletion emptied (not ``targets/`` itself)."""
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        while d != top and top in d.parents:
            try:
                d.rmdir()
            except OSError:
                break  # not empty (or already gone): fine either way
            d = d.parent


def _result(
    repo_dir: Path,
    state: RepoState,
    plan: PrunePlan,
    files: Sequence[Path],
    freed: int,
    *,
    published: bool,
    dry_run: bool = False,
) -> PruneResult:
    return PruneResult(
        plan=plan,
        deleted=tuple(str(f.relative_to(repo_dir)) for f in files),
        freed_bytes=freed,
        targets_version=state.targets.signed.version,
        snapshot_version=state.snapshot.signed.version,
        timestamp_version=state.timestamp.signed.version,
        published=published,
        dry_run=dry_run,
    )
