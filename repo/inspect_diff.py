"""What changed between two repository states: what a reviewer approves in a release or a
key ceremony.

``diff_reports`` is pure: two ``InspectReport`` values in (each built by
``repo.inspect_report.build_report`` from a pinned root, so each side is verified the way a
device would verify it), a ``ReportDiff`` out. Every part is compared field by field over a
flat view of it (``_role_fields``, ``_target_fields`` ...), so a field added to a report is
one line here, and nothing that differs can go unlisted. A side that failed verification is
still compared; its failures travel with the diff and the command exits 3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from repo.inspect_report import (
    Delegation,
    InspectReport,
    KeyInfo,
    RoleInfo,
    TargetInfo,
    failure_json,
    json_time,
    key_json,
    target_json,
)

#: Version of the ``--json`` document of ``otakit inspect diff`` (docs/INSPECT.md).
DIFF_JSON_VERSION = 1

#: A compared value: scalars, or a tuple of names (key ids, paths, hardware).
Value = str | int | bool | None | tuple[str, ...]
Status = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class FieldChange:
    """``field`` was ``old`` and is ``new`` (None: absent on that side)."""

    field: str
    old: Value
    new: Value


@dataclass(frozen=True)
class RoleDiff:
    """A top-level role whose grant or published file changed."""

    name: str
    keys_added: tuple[str, ...]
    keys_removed: tuple[str, ...]
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class DelegationDiff:
    delegator: str
    name: str
    status: Status
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class TargetDiff:
    """A target added, removed or changed; ``target`` is the new side's (the old one's when
    removed)."""

    path: str
    status: Status
    changes: tuple[FieldChange, ...]
    target: TargetInfo


@dataclass(frozen=True)
class ReportDiff:
    old: InspectReport
    new: InspectReport
    #: repository-wide fields (root version, consistent snapshots)
    repository: tuple[FieldChange, ...]
    roles: tuple[RoleDiff, ...]
    keys_added: tuple[KeyInfo, ...]
    keys_removed: tuple[KeyInfo, ...]
    delegations: tuple[DelegationDiff, ...]
    targets: tuple[TargetDiff, ...]

    @property
    def verified(self) -> bool:
        return self.old.verified and self.new.verified

    @property
    def changed(self) -> bool:
        return bool(
            self.repository
            or self.roles
            or self.keys_added
            or self.keys_removed
            or self.delegations
            or self.targets
        )


def diff_reports(old: InspectReport, new: InspectReport) -> ReportDiff:
    """Everything that differs from ``old`` to ``new`` (module docstring)."""
    old_keys = {k.keyid: k for k in old.keys}
    new_keys = {k.keyid: k for k in new.keys}
    return ReportDiff(
        old=old,
        new=new,
        repository=_changes(_repository_fields(old), _repository_fields(new)),
        roles=tuple(
            d
            for o, n in zip(old.roles, new.roles, strict=True)
            if (d := _role_diff(o, n)) is not None
        ),
        keys_added=tuple(k for i, k in sorted(new_keys.items()) if i not in old_keys),
        keys_removed=tuple(k for i, k in sorted(old_keys.items()) if i not in new_keys),
        delegations=_delegation_diffs(old.delegations, new.delegations),
        targets=_target_diffs(old.targets, new.targets),
    )


def _changes(old: dict[str, Value], new: dict[str, Value]) -> tuple[FieldChange, ...]:
    """Fields whose values differ, in the order the flat views list them."""
    names = list(old) + [n for n in new if n not in old]
    return tuple(FieldChange(n, old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n))


def _repository_fields(r: InspectReport) -> dict[str, Value]:
    return {"root_version": r.root_version, "consistent_snapshot": r.consistent_snapshot}


def _role_fields(r: RoleInfo) -> dict[str, Value]:
    return {
        "threshold": r.threshold,
        "keys": len(r.keyids),
        "version": r.version,
        "expires": json_time(r.expires),
    }


def _role_diff(old: RoleInfo, new: RoleInfo) -> RoleDiff | None:
    added = tuple(k for k in new.keyids if k not in old.keyids)
    removed = tuple(k for k in old.keyids if k not in new.keyids)
    changes = _changes(_role_fields(old), _role_fields(new))
    if not (added or removed or changes):
        return None
    return RoleDiff(new.name, added, removed, changes)


def _delegation_fields(d: Delegation) -> dict[str, Value]:
    return {
        "threshold": d.threshold,
        "keyids": tuple(sorted(d.keyids)),
        "terminating": d.terminating,
        "paths": d.paths,
        "path_hash_prefixes": d.path_hash_prefixes,
    }


def _delegation_diffs(
    old: tuple[Delegation, ...], new: tuple[Delegation, ...]
) -> tuple[DelegationDiff, ...]:
    before = {(d.delegator, d.name): d for d in old}
    after = {(d.delegator, d.name): d for d in new}
    out: list[DelegationDiff] = []
    for key in sorted(before.keys() | after.keys()):
        o, n = before.get(key), after.get(key)
        if o is None or n is None:
            side = o or n
            assert side is not None
            out.append(
                DelegationDiff(
                    *key,
                    "added" if o is None else "removed",
                    _changes({}, _delegation_fields(side))
                    if o is None
                    else _changes(_delegation_fields(side), {}),
                )
            )
        elif changes := _changes(_delegation_fields(o), _delegation_fields(n)):
            out.append(DelegationDiff(*key, "changed", changes))
    return tuple(out)


def _target_fields(t: TargetInfo) -> dict[str, Value]:
    """A target flattened: its file, then every artifact metadata field a device acts on."""
    out: dict[str, Value] = {"length": t.length}
    out.update({f"hashes.{algo}": h for algo, h in t.hashes})
    a = t.artifact
    if a is not None:
        out.update(
            {
                "product": a.product,
                "hardware": a.hardware,
                "version": str(a.version),
                "kind": a.kind,
                "image_type": a.image_type,
                "image.length": a.image.length,
                "image.sha256": a.image.sha256,
                "base.version": str(a.base.version) if a.base is not None else None,
                "base.length": a.base.image.length if a.base is not None else None,
                "base.sha256": a.base.image.sha256 if a.base is not None else None,
                "compression": a.compression,
                "allow_downgrade": a.allow_downgrade,
            }
        )
    out["artifact_error"] = t.artifact_error
    return out


def _target_diffs(
    old: tuple[TargetInfo, ...], new: tuple[TargetInfo, ...]
) -> tuple[TargetDiff, ...]:
    before = {t.path: t for t in old}
    after = {t.path: t for t in new}
    out: list[TargetDiff] = []
    for path in sorted(before.keys() | after.keys()):
        o, n = before.get(path), after.get(path)
        if o is None and n is not None:
            out.append(TargetDiff(path, "added", (), n))
        elif n is None and o is not None:
            out.append(TargetDiff(path, "removed", (), o))
        elif (
            o is not None
            and n is not None
            and (changes := _changes(_target_fields(o), _target_fields(n)))
        ):
            out.append(TargetDiff(path, "changed", changes, n))
    return tuple(out)


# --- JSON ------------------------------------------------------------------------------------


def _value(v: Value) -> Any:
    return list(v) if isinstance(v, tuple) else v


def changes_json(changes: tuple[FieldChange, ...]) -> list[dict[str, Any]]:
    return [{"field": c.field, "old": _value(c.old), "new": _value(c.new)} for c in changes]


def side_json(r: InspectReport) -> dict[str, Any]:
    """One side of a comparison: what it is and whether it verified."""
    return {
        "source": r.source,
        "state": str(r.pick) if r.pick is not None else "current",
        "verified": r.verified,
        "root_version": r.root_version,
        "failures": [failure_json(f) for f in r.failures],
    }


def diff_parts_json(d: ReportDiff) -> dict[str, Any]:
    """The changes of ``d`` (shared by ``diff_json`` and ``otakit inspect history``)."""
    return {
        "changed": d.changed,
        "repository": changes_json(d.repository),
        "roles": [
            {
                "name": r.name,
                "keys_added": list(r.keys_added),
                "keys_removed": list(r.keys_removed),
                "changes": changes_json(r.changes),
            }
            for r in d.roles
        ],
        "keys": {
            "added": [key_json(k) for k in d.keys_added],
            "removed": [key_json(k) for k in d.keys_removed],
        },
        "delegations": [
            {
                "delegator": x.delegator,
                "name": x.name,
                "status": x.status,
                "changes": changes_json(x.changes),
            }
            for x in d.delegations
        ],
        "targets": [
            {
                "path": t.path,
                "status": t.status,
                "changes": changes_json(t.changes),
                "target": target_json(t.target),
            }
            for t in d.targets
        ],
    }


def diff_json(d: ReportDiff) -> dict[str, Any]:
    """The versioned ``--json`` document of ``otakit inspect diff`` (docs/INSPECT.md)."""
    return {
        "otakit_inspect_diff": DIFF_JSON_VERSION,
        "at": json_time(d.new.at),
        "verified": d.verified,
        "old": side_json(d.old),
        "new": side_json(d.new),
        **diff_parts_json(d),
    }
