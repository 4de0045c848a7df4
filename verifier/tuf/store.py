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
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib import parse

from verifier.effects import Disk, write_atomic
from verifier.errors import ConfigError

_GEN_FILE_RE = re.compile(r"^([0-9]{1,12})\.(.+)\.json$")
_ROOT_FILE_RE = re.compile(r"^([1-9][0-9]{0,8})\.root\.json$")


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
        try:
            raw = json.loads((self.dir / "current.json").read_bytes())
        except FileNotFoundError:
            return 0, {}
        except (OSError, ValueError) as e:
            raise ConfigError(f"trusted metadata pointer {self.dir}/current.json: {e}") from e
        gen = raw.get("generation") if isinstance(raw, dict) else None
        roles = raw.get("roles") if isinstance(raw, dict) else None
        if not isinstance(gen, int) or not isinstance(roles, list):
            raise ConfigError(f"trusted metadata pointer {self.dir}/current.json is malformed")
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
        """The stored (not yet re-verified) bytes of root ``version``, None if absent."""
        path = self._roots / f"{version}.root.json"
        return path.read_bytes() if path.is_file() else None

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
            # ngclient verified everything it left here; a stored copy that differs (damaged
            # or tampered, hence skipped by newest_verified_root) is replaced, not kept.
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


class NoDisk:
    """Reading the store needs no effects; any attempt is a programming error."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"read-only trusted store: {name} not allowed")
