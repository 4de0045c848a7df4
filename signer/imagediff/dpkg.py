"""The package-level summary: installed packages in two dpkg status files (added, removed,
upgraded, downgraded), versions ordered as dpkg orders them (``deb-version(7)``). Pure. The
comparison is shared with rpm databases (``rpmdb.py``), which bring their own version order."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

STATUS_PATH: Final = "/var/lib/dpkg/status"
_DIGITS: Final = frozenset("0123456789")

Package = tuple[str, str]  # (name, architecture)


@dataclass(frozen=True)
class PackageDiff:
    added: tuple[tuple[Package, str], ...]
    removed: tuple[tuple[Package, str], ...]
    upgraded: tuple[tuple[Package, str, str], ...]
    downgraded: tuple[tuple[Package, str, str], ...]
    count_a: int
    count_b: int
    database: str = "dpkg"  # or "rpm"

    def to_dict(self) -> dict[str, Any]:
        def one(p: Package, v: str) -> dict[str, str]:
            return {"name": p[0], "arch": p[1], "version": v}

        def two(p: Package, a: str, b: str) -> dict[str, str]:
            return {"name": p[0], "arch": p[1], "from": a, "to": b}

        return {
            "database": self.database,
            "installed_a": self.count_a,
            "installed_b": self.count_b,
            "added": [one(*x) for x in self.added],
            "removed": [one(*x) for x in self.removed],
            "upgraded": [two(*x) for x in self.upgraded],
            "downgraded": [two(*x) for x in self.downgraded],
        }


def parse_status(text: str) -> dict[Package, str]:
    """Installed packages and their versions. Stanzas are separated by blank lines;
    continuation lines (starting with a space) belong to the field above and are skipped."""
    out: dict[Package, str] = {}
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        name, version = fields.get("package"), fields.get("version")
        if name and version and fields.get("status", "").endswith(" installed"):
            out[(name, fields.get("architecture", ""))] = version
    return out


def diff_packages(
    a: dict[Package, str],
    b: dict[Package, str],
    compare: Callable[[str, str], int] | None = None,
    database: str = "dpkg",
) -> PackageDiff:
    """Added, removed, upgraded and downgraded packages, versions ordered by ``compare``
    (dpkg's order unless given: rpm passes its own)."""
    order = compare or compare_versions
    up, down = [], []
    for p in sorted(a.keys() & b.keys()):
        c = order(a[p], b[p])
        if c < 0:
            up.append((p, a[p], b[p]))
        elif c > 0:
            down.append((p, a[p], b[p]))
    return PackageDiff(
        added=tuple((p, b[p]) for p in sorted(b.keys() - a.keys())),
        removed=tuple((p, a[p]) for p in sorted(a.keys() - b.keys())),
        upgraded=tuple(up),
        downgraded=tuple(down),
        count_a=len(a),
        count_b=len(b),
        database=database,
    )


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as dpkg orders ``[epoch:]upstream[-revision]``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def _split(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return (int(epoch) if epoch and set(epoch) <= _DIGITS else 0), upstream, revision


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """Alternating non-digit and digit runs: non-digits by dpkg's character order (``~``
    before anything, even the end; letters before other symbols), digits numerically."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            ca = _order(a[i]) if i < len(a) and a[i] not in _DIGITS else 0
            cb = _order(b[j]) if j < len(b) and b[j] not in _DIGITS else 0
            if ca != cb:
                return -1 if ca < cb else 1
            i += 1 if i < len(a) and a[i] not in _DIGITS else 0
            j += 1 if j < len(b) and b[j] not in _DIGITS else 0
        ni = i
        while ni < len(a) and a[ni] in _DIGITS:
            ni += 1
        nj = j
        while nj < len(b) and b[nj] in _DIGITS:
            nj += 1
        da, db = int(a[i:ni] or 0), int(b[j:nj] or 0)
        if da != db:
            return -1 if da < db else 1
        i, j = ni, nj
    return 0
