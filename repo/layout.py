"""Where things live in a published repository.

A device is configured with one base URL ``U`` and fetches ``U/metadata/<file>`` and
``U/targets/<path>``, so the directory mirrors that: ``REPO/metadata`` and ``REPO/targets``.
With consistent snapshots every file a client fetches is immutable except ``timestamp.json``,
which lets a CDN cache everything else forever. Targets are stored the way python-tuf's
ngclient requests them (``prefix_targets_with_hash``): ``targets/<dir>/<sha256>.<basename>``.
Anything else in ``REPO`` (the publisher lock, temp files starting with ``.``) is never served.
"""

from __future__ import annotations

import re
from pathlib import Path

from repo.errors import UsageError

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
LOCK_NAME = ".otakit-publish.lock"

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")


def metadata_dir(repo_dir: Path) -> Path:
    return repo_dir / METADATA_DIR


def targets_dir(repo_dir: Path) -> Path:
    return repo_dir / TARGETS_DIR


def metadata_filename(role: str, version: int) -> str:
    """Consistent-snapshot file name; the timestamp is the one file fetched by its plain name."""
    return "timestamp.json" if role == "timestamp" else f"{version}.{role}.json"


def check_target_path(target_path: str) -> tuple[str, ...]:
    """Split a TUF target path into safe segments, or refuse it (P3: a name is never a path)."""
    segments = tuple(target_path.split("/"))
    if len(segments) > 16 or not all(_SEGMENT_RE.match(s) for s in segments):
        raise UsageError(
            f"target path {target_path!r}: expected 1-16 '/'-separated segments of "
            "[A-Za-z0-9._-], none empty or starting with '.'"
        )
    return segments


def stored_target_path(repo_dir: Path, target_path: str, sha256: str) -> Path:
    """The file a target is stored in: ``targets/<dir>/<sha256>.<basename>``."""
    segments = check_target_path(target_path)
    if not _HEX64_RE.match(sha256):
        raise UsageError(f"target {target_path!r}: expected a sha256 hex digest, found {sha256!r}")
    return targets_dir(repo_dir).joinpath(*segments[:-1], f"{sha256}.{segments[-1]}")
