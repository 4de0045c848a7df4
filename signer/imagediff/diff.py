"""Two listings compared: the pure core of ``otakit image diff``. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from signer.imagediff.entry import Entry

Change = Literal["added", "removed", "modified"]

#: The fields compared, in the order a reader scans them.
FIELDS: Final = ("kind", "sha256", "size", "mode", "uid", "gid", "target", "rdev", "xattrs")


@dataclass(frozen=True)
class FileChange:
    path: str
    change: Change
    fields: tuple[str, ...]  # what differs (modified only)
    bytes: int  # added: its size; removed: its size; new content: the larger size; else 0
    a: Entry | None
    b: Entry | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change,
            "fields": list(self.fields),
            "bytes": self.bytes,
            "a": self.a.to_dict() if self.a else None,
            "b": self.b.to_dict() if self.b else None,
        }


@dataclass(frozen=True)
class FileDiff:
    changes: tuple[FileChange, ...]  # largest first, then by path
    entries_a: int
    entries_b: int

    def count(self, change: Change) -> int:
        return sum(1 for c in self.changes if c.change == change)

    def bytes(self, change: Change | None = None) -> int:
        return sum(c.bytes for c in self.changes if change is None or c.change == change)

    def summary(self) -> dict[str, int]:
        return {
            "entries_a": self.entries_a,
            "entries_b": self.entries_b,
            "added": self.count("added"),
            "removed": self.count("removed"),
            "modified": self.count("modified"),
            "unchanged": self.entries_b - self.count("added") - self.count("modified"),
            "bytes_added": self.bytes("added"),
            "bytes_removed": self.bytes("removed"),
            "bytes_modified": self.bytes("modified"),
            "bytes_changed": self.bytes(),
        }


def compare(a: Entry, b: Entry) -> tuple[str, ...]:
    return tuple(f for f in FIELDS if getattr(a, f) != getattr(b, f))


def diff_listings(a: dict[str, Entry], b: dict[str, Entry]) -> FileDiff:
    """Every path added, removed or modified from ``a`` to ``b``. The root directory is
    compared only when both sides list it (a tar archive need not hold an entry for it)."""
    changes: list[FileChange] = []
    for path in a.keys() | b.keys():
        ea, eb = a.get(path), b.get(path)
        if ea is None and eb is not None:
            if path != "/":
                changes.append(FileChange(path, "added", (), eb.size, None, eb))
        elif eb is None and ea is not None:
            if path != "/":
                changes.append(FileChange(path, "removed", (), ea.size, ea, None))
        elif ea is not None and eb is not None:
            fields = compare(ea, eb)
            if fields:
                content = "sha256" in fields or "kind" in fields or "target" in fields
                size = max(ea.size, eb.size) if content else 0
                changes.append(FileChange(path, "modified", fields, size, ea, eb))
    changes.sort(key=lambda c: (-c.bytes, c.path))
    return FileDiff(tuple(changes), entries_a=len(a), entries_b=len(b))
