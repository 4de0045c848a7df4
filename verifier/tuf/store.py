"""``STATE/metadata``: the device's trusted TUF metadata, committed so a crash never mixes sets.

ngclient's cache write does not fsync. So the ``Updater`` runs on a scratch copy of the trusted
metadata, and after a successful refresh the result is committed here through the ``Disk``:

- ``root/N.root.json``: the append-only chain of verified roots, each written atomically,
  first (ngclient treats a missing or invalid local root as absent, so a partial chain is
  harmless);
- ``G.<role>.json``: a complete set of timestamp/snapshot/targets for generation ``G``;
- ``current.json``: names the generation in force, replaced atomically *last*.

A power cut therefore leaves the old or the new trusted set, never a mix; files of a dead
generation are removed on the next commit.

Read back, every file is prechecked (``checks.precheck``: strict JSON, no signature or key
listed twice) and the role files must parse as their role and verify under one of the trusted
roots *before* ngclient sees them: ngclient treats an invalid local file as absent, which
would drop that role's rollback floor without a word. Damage is a ``TrustedMetadataError``
naming the file; docs/OPERATIONS.md ("Damaged trusted metadata") says how to recover.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib import parse

from tuf.api.metadata import Metadata, Root  # type: ignore[attr-defined]

from verifier import strictjson
from verifier.effects import Disk, write_atomic
from verifier.errors import MetadataError, TrustedMetadataError
from verifier.tuf.checks import TOP_LEVEL_ROLES, check_signatures, parse_metadata, precheck

_GEN_FILE_RE = re.compile(r"^([0-9]{1,12})\.(.+)\.json\Z")
_ROOT_FILE_RE = re.compile(r"^([1-9][0-9]{0,8})\.root\.json\Z")

RECOVERY_HINT = (
    "the device's trusted metadata is damaged (disk fault or tampering); "
    "see 'Damaged trusted metadata' in docs/OPERATIONS.md"
)


def read_trusted(path: Path, what: str) -> bytes:
    """A trusted file's bytes, prechecked; damage raises ``TrustedMetadataError``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrustedMetadataError(
            f"{what} {path} is unreadable: {e.strerror or e}", hint=RECOVERY_HINT
        ) from e
    try:
        precheck(data, f"{what} {path}", error=TrustedMetadataError)
    except TrustedMetadataError as e:
        e.hint = RECOVERY_HINT
        raise
    return data


class TrustedStore:
    """``STATE/metadata``: verified TUF metadata, committed so a crash never mixes two sets."""

    def __init__(self, directory: Path, disk: Disk) -> None:
        self.dir = directory
        self.disk = disk

    @property
    def _roots(self) -> Path:
        return self.dir / "root"

    def current(self) -> tuple[int, dict[str, Path]]:
        """The generation in force and its role files (role name -> path)."""
        pointer = self.dir / "current.json"
        try:
            data = pointer.read_bytes()
        except FileNotFoundError:
            return 0, {}
        except OSError as e:
            raise TrustedMetadataError(
                f"trusted metadata pointer {pointer} is unreadable: {e.strerror or e}",
                hint=RECOVERY_HINT,
            ) from e
        name = f"trusted metadata pointer {pointer}"
        raw = strictjson.loads(data, name=name, error=TrustedMetadataError, hint=RECOVERY_HINT)
        gen = raw.get("generation") if isinstance(raw, dict) else None
        roles = raw.get("roles") if isinstance(raw, dict) else None
        if (
            not isinstance(gen, int)
            or isinstance(gen, bool)
            or not isinstance(roles, list)
            or not all(_role_name(r) for r in roles)
        ):
            raise TrustedMetadataError(
                f"{name}: expected {{'generation': N, 'roles': [names]}}, found {data[:80]!r}",
                hint=RECOVERY_HINT,
            )
        return gen, {r: self.dir / f"{gen}.{parse.quote(r, '')}.json" for r in roles}

    def root_versions(self) -> list[tuple[int, Path]]:
        if not self._roots.is_dir():
            return []
        found = []
        for p in self._roots.iterdir():
            m = _ROOT_FILE_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def stored_root(self, version: int) -> bytes | None:
        """The stored, prechecked (not yet re-verified) bytes of root ``version``, None if
        absent."""
        path = self._roots / f"{version}.root.json"
        return read_trusted(path, "trusted root") if path.is_file() else None

    def check_roles(self, roots: Sequence[Root]) -> dict[str, Metadata[Any]]:
        """The role files in force, each parsed as its role and, for top-level roles, signed
        by a threshold of one of ``roots`` (the trusted chain, oldest first: a role committed
        before a key rotation verifies under the root of its time)."""
        out: dict[str, Metadata[Any]] = {}
        for role, path in sorted(self.current()[1].items()):
            what = f"trusted {role} metadata"
            if not path.is_file():
                raise TrustedMetadataError(
                    f"{what} {path} is missing (current.json names it)", hint=RECOVERY_HINT
                )
            data = read_trusted(path, what)
            kind = role if role in TOP_LEVEL_ROLES else "targets"
            try:
                md = parse_metadata(data, kind, f"{what} {path}")
            except MetadataError as e:
                raise TrustedMetadataError(e.message, hint=RECOVERY_HINT) from e
            if role in TOP_LEVEL_ROLES and role != "root":
                _signed_by_one_of(roots, role, md, f"{what} {path}")
            out[role] = md
        return out

    def expiry_bound(self) -> datetime | None:
        """The earliest expiry of the newest stored root and the timestamp in force (what
        caps the time floor, ``verifier.timefloor``); None before the first refresh."""
        found = []
        versions = self.root_versions()
        files = self.current()[1]
        for path in ([versions[-1][1]] if versions else []) + (
            [files["timestamp"]] if "timestamp" in files else []
        ):
            found.append(Metadata.from_bytes(read_trusted(path, "trusted")).signed.expires)
        return min(found) if found else None

    def materialize(self, scratch: Path) -> None:
        """Lay the trusted set out the way ngclient expects it in ``metadata_dir``."""
        (scratch / "root_history").mkdir(parents=True, exist_ok=True)
        for version, p in self.root_versions():
            shutil.copyfile(p, scratch / "root_history" / f"{version}.root.json")
        for role, p in self.current()[1].items():
            shutil.copyfile(p, scratch / f"{parse.quote(role, '')}.json")

    def commit_roots(self, scratch: Path) -> bool:
        """Persist the roots ngclient verified into ``scratch``; returns whether any were new."""
        self.disk.mkdir(self._roots)
        known = dict(self.root_versions())
        hist = scratch / "root_history"
        new_roots = []
        for p in hist.iterdir() if hist.is_dir() else []:
            m = _ROOT_FILE_RE.match(p.name)
            if not m:
                continue
            version = int(m.group(1))
            # ngclient verified everything it left here; a stored copy that differs (only if
            # it was rewritten behind our back) is replaced by the verified one.
            if version not in known or known[version].read_bytes() != p.read_bytes():
                new_roots.append((version, p))
        for version, p in sorted(new_roots):
            write_atomic(self.disk, self._roots / f"{version}.root.json", p.read_bytes())
        return bool(new_roots)

    def commit(self, scratch: Path) -> bool:
        """Persist what ngclient left in ``scratch``; returns whether anything changed."""
        new_roots = self.commit_roots(scratch)

        gen, files = self.current()
        scratch_roles: dict[str, bytes] = {}
        for p in scratch.iterdir():
            if p.is_file() and not p.is_symlink() and p.suffix == ".json" and p.name != "root.json":
                scratch_roles[parse.unquote(p.name[: -len(".json")])] = p.read_bytes()
        unchanged = set(scratch_roles) == set(files) and all(
            files[r].read_bytes() == data for r, data in scratch_roles.items()
        )
        if unchanged:
            return bool(new_roots)
        new_gen = gen + 1
        for role, data in sorted(scratch_roles.items()):
            write_atomic(self.disk, self.dir / f"{new_gen}.{parse.quote(role, '')}.json", data)
        pointer = {"generation": new_gen, "roles": sorted(scratch_roles)}
        write_atomic(self.disk, self.dir / "current.json", json.dumps(pointer).encode() + b"\n")
        self._collect(new_gen)
        return True

    def _collect(self, keep: int) -> None:
        for p in self.dir.iterdir():
            m = _GEN_FILE_RE.match(p.name)
            if m and int(m.group(1)) != keep:
                self.disk.unlink(p)


def _signed_by_one_of(roots: Sequence[Root], role: str, md: Metadata[Any], label: str) -> None:
    failures = []
    for root in reversed(roots):
        try:
            check_signatures(root, role, md, label)
            return
        except MetadataError as e:
            failures.append(e.message)
    raise TrustedMetadataError(
        f"{label} is signed by no trusted root's {role} keys ({failures[0] if failures else ''})",
        hint=RECOVERY_HINT,
    )


class NoDisk:
    """Reading the store needs no effects; any attempt is a programming error."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"read-only trusted store: {name} not allowed")


def _role_name(value: object) -> bool:
    """A role name this store can have written: a non-empty string that UTF-8 can encode (a
    lone surrogate cannot be a file name, and ``parse.quote`` would raise on it)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
