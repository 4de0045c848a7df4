"""Every root and targets version a repository still holds, each with what it changed.

``build_history`` builds one ``InspectReport`` per version with ``build_report`` (``Pick``:
root N, targets N), so each version is verified by the same walk as ``otakit inspect``, and
compares each with the previous one held with ``diff_reports``. Root files are read once for
all the walks (a root-only cache: targets files are read once each anyway, and caching them
would hold every version in memory). At most ``MAX_HISTORY_VERSIONS`` newest versions of
each role are listed (P4: a version number read from a hostile repository bounds nothing).
Judging the history across versions is ``repo.findings``' job (``HISTORY_RULES``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from repo.inspect_diff import ReportDiff, diff_parts_json, diff_reports
from repo.inspect_report import (
    InspectReport,
    Pick,
    build_report,
    failure_json,
    json_time,
)
from verifier.errors import UsageError
from verifier.tuf.published import MetadataSource
from verifier.tuf.rootchain import MAX_ROOT_VERSIONS

#: Version of the ``--json`` document of ``otakit inspect history`` (docs/INSPECT.md).
HISTORY_JSON_VERSION = 1
#: The newest versions of each role listed; older ones are counted, not read.
MAX_HISTORY_VERSIONS = 200


@dataclass(frozen=True)
class VersionEntry:
    """One version of root or targets: its report, or why there is none (``problem``), and
    what changed from the previous version listed (None for the first)."""

    role: str
    version: int
    report: InspectReport | None
    problem: str | None = None
    changes: ReportDiff | None = None

    @property
    def verified(self) -> bool:
        return self.report is not None and self.report.verified


@dataclass(frozen=True)
class History:
    source: str
    at: datetime
    current: InspectReport
    roots: tuple[VersionEntry, ...]
    targets: tuple[VersionEntry, ...]
    #: targets versions up to the current one that the repository no longer holds
    targets_not_kept: tuple[int, ...]
    #: versions older than the listed window (``MAX_HISTORY_VERSIONS``), not read
    roots_not_listed: int = 0
    targets_not_listed: int = 0

    @property
    def verified(self) -> bool:
        """The current state and every version listed verify."""
        return self.current.verified and all(e.verified for e in self.roots + self.targets)


@dataclass
class _RootCache:
    """``source`` with its root files read once (every per-version walk reads them all)."""

    source: MetadataSource
    roots: dict[str, bytes | None] = field(default_factory=dict)

    def get(self, name: str, /) -> bytes | None:
        if not name.endswith(".root.json"):
            return self.source.get(name)
        if name not in self.roots:
            self.roots[name] = self.source.get(name)
        return self.roots[name]


def build_history(
    source: MetadataSource,
    pinned_root: bytes,
    at: datetime,
    *,
    source_name: str = "",
    max_versions: int = MAX_HISTORY_VERSIONS,
    max_root_versions: int = MAX_ROOT_VERSIONS,
) -> History:
    """The history of ``source`` from ``pinned_root`` (module docstring). Raises what
    ``build_report`` raises for the pinned root and for an unreadable source."""
    files = _RootCache(source)

    def report(pick: Pick | None) -> InspectReport:
        return build_report(
            files,
            pinned_root,
            at,
            source_name=source_name,
            max_root_versions=max_root_versions,
            pick=pick,
        )

    current = report(None)
    accepted = [link.version for link in current.root_chain if link.problem is None]
    roots = _entries("root", accepted[-max_versions:], report)
    roots += [
        VersionEntry("root", link.version, None, link.problem)
        for link in current.root_chain
        if link.problem is not None
    ]
    newest = current.role("targets").version or _probe_newest_targets(files, max_versions)
    first = max(1, newest - max_versions + 1)
    targets = _entries("targets", range(first, newest + 1), report)
    held = {e.version for e in targets}
    return History(
        source=source_name,
        at=at,
        current=current,
        roots=tuple(roots),
        targets=tuple(targets),
        targets_not_kept=tuple(v for v in range(first, newest + 1) if v not in held),
        roots_not_listed=max(0, len(accepted) - max_versions),
        targets_not_listed=first - 1,
    )


def _entries(
    role: str, versions: Iterable[int], report: Callable[[Pick | None], InspectReport]
) -> list[VersionEntry]:
    """An entry per version held, each compared with the previous one held."""
    out: list[VersionEntry] = []
    previous: InspectReport | None = None
    for v in versions:
        try:
            rep: InspectReport = report(Pick(role, v))
        except UsageError:  # not held (pruned, or never published under that name)
            continue
        changes = diff_reports(previous, rep) if previous is not None else None
        out.append(VersionEntry(role, v, rep, None, changes))
        previous = rep
    return out


def _probe_newest_targets(files: _RootCache, limit: int) -> int:
    """The newest ``N.targets.json`` held counting up from 1, when the current state does
    not say (its timestamp or snapshot cannot be read); 0 if there is none."""
    newest = 0
    while newest < limit and files.get(f"{newest + 1}.targets.json") is not None:
        newest += 1
    return newest


# --- JSON ------------------------------------------------------------------------------------


def _entry_json(e: VersionEntry) -> dict[str, Any]:
    r = e.report
    role = r.role(e.role) if r is not None else None
    return {
        "version": e.version,
        "verified": e.verified,
        "problem": e.problem,
        "root_version": r.root_version if r is not None else None,
        "expires": json_time(role.expires) if role is not None else None,
        "signatures": (
            {
                "threshold": role.threshold,
                "present": role.signatures_present,
                "valid": list(role.signatures_valid),
                "missing": list(role.signatures_missing),
            }
            if role is not None
            else None
        ),
        "failures": [failure_json(f) for f in r.failures] if r is not None else [],
        "changes": diff_parts_json(e.changes) if e.changes is not None else None,
    }


def history_json(h: History) -> dict[str, Any]:
    """The versioned ``--json`` document of ``otakit inspect history`` (without findings)."""
    return {
        "otakit_inspect_history": HISTORY_JSON_VERSION,
        "source": h.source,
        "at": json_time(h.at),
        "verified": h.verified,
        "current": {
            "verified": h.current.verified,
            "failures": [failure_json(f) for f in h.current.failures],
        },
        "roots": [_entry_json(e) for e in h.roots],
        "targets": [_entry_json(e) for e in h.targets],
        "targets_not_kept": list(h.targets_not_kept),
        "roots_not_listed": h.roots_not_listed,
        "targets_not_listed": h.targets_not_listed,
    }
