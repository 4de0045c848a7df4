"""``diff_images``: the two images read (in parallel: hashing and reads release the GIL),
compared, and summarised; ``render_text``: the report as an 80-column table."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from repo.errors import UsageError
from signer.imagediff.blocks import BlockDiff, diff_blocks
from signer.imagediff.diff import FileDiff, diff_listings
from signer.imagediff.dpkg import STATUS_PATH, PackageDiff, diff_packages, parse_status
from signer.imagediff.entry import Listing
from signer.imagediff.readers import Source, identify
from signer.imagediff.rpmdb import KEEP_PATHS as RPM_KEEP
from signer.imagediff.rpmdb import compare_evr, find_rpmdb, read_rpmdb
from signer.imagediff.source import TOOL_TIMEOUT, ReadOptions

#: The JSON document's version (docs/IMAGE-DIFF.md); bumped on any incompatible change.
SCHEMA: Final = "otakit.image-diff/1"
_KEEP: Final = frozenset({STATUS_PATH}) | RPM_KEEP


@dataclass(frozen=True)
class ImageDiff:
    a: Source
    b: Source
    files: FileDiff | None = None
    blocks: BlockDiff | None = None
    packages: PackageDiff | None = None
    unsafe_a: tuple[str, ...] = ()
    unsafe_b: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def level(self) -> str:
        return "files" if self.files is not None else "blocks"

    @property
    def bytes_changed(self) -> int:
        if self.files is not None:
            return self.files.bytes()
        assert self.blocks is not None
        return self.blocks.changed_bytes

    def to_dict(self) -> dict[str, Any]:
        def side(s: Source, n: int | None, unsafe: tuple[str, ...]) -> dict[str, Any]:
            return {"path": s.path, "type": s.type, "entries": n, "unsafe_paths": list(unsafe)}

        f = self.files
        return {
            "schema": SCHEMA,
            "level": self.level,
            "a": side(self.a, f.entries_a if f else None, self.unsafe_a),
            "b": side(self.b, f.entries_b if f else None, self.unsafe_b),
            "bytes_changed": self.bytes_changed,
            "summary": f.summary() if f else None,
            "changes": [c.to_dict() for c in f.changes] if f else None,
            "blocks": self.blocks.to_dict() if self.blocks else None,
            "packages": self.packages.to_dict() if self.packages else None,
            "notes": list(self.notes),
        }


def diff_images(path_a: str, path_b: str, *, tool_timeout: float = TOOL_TIMEOUT) -> ImageDiff:
    """A and B compared: file by file when both have a reader, else block by block. Either
    may be a slot (a block device, or a file larger than the filesystem it holds)."""
    a, b = identify(path_a), identify(path_b)
    opts = ReadOptions(_KEEP, tool_timeout)
    if not (a.file_level and b.file_level):
        if "dir" in (a.type, b.type):
            raise UsageError(
                f"cannot compare a directory with a {b.type if a.type == 'dir' else a.type} "
                "image: images without a file reader are compared block by block",
                hint="compare two images of the same kind, or two file-level images",
            )
        note = f"no file-level reader for {a.type}/{b.type}: compared 4 KiB blocks"
        return ImageDiff(a, b, blocks=diff_blocks(path_a, path_b), notes=(note,))
    with ThreadPoolExecutor(max_workers=2) as pool:
        fa, fb = pool.submit(a.read, opts), pool.submit(b.read, opts)
        la, lb = fa.result(), fb.result()
    return ImageDiff(
        a,
        b,
        files=diff_listings(la.entries, lb.entries),
        packages=_packages(a, la, b, lb),
        unsafe_a=tuple(la.unsafe),
        unsafe_b=tuple(lb.unsafe),
    )


def _packages(a: Source, la: Listing, b: Source, lb: Listing) -> PackageDiff | None:
    """dpkg's summary when both images hold a dpkg status file, else rpm's when both hold an
    rpm database, else none."""
    sa, sb = la.kept.get(STATUS_PATH), lb.kept.get(STATUS_PATH)
    if sa is not None and sb is not None:
        return diff_packages(
            parse_status(sa.decode("utf-8", "replace")),
            parse_status(sb.decode("utf-8", "replace")),
        )
    ra, rb = find_rpmdb(la.kept), find_rpmdb(lb.kept)
    if ra is not None and rb is not None:
        return diff_packages(
            read_rpmdb(*ra, a.path), read_rpmdb(*rb, b.path), compare_evr, database="rpm"
        )
    return None


# --- text --------------------------------------------------------------------------------------

_WIDTH: Final = 80


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _clip(path: str, width: int) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]


def render_text(d: ImageDiff, limit: int) -> str:
    lines = [
        f"{name}: {_clip(s.path, _WIDTH - 6 - len(s.type))} ({s.type})"
        for name, s in (("A", d.a), ("B", d.b))
    ]
    if d.blocks is not None:
        bl = d.blocks
        lines.append(
            f"{bl.changed_blocks} of {bl.blocks} 4 KiB blocks changed "
            f"({human(bl.changed_bytes)}); sizes {human(bl.length_a)} -> {human(bl.length_b)}"
        )
        if bl.runs:
            lines.append(f"{'OFFSET':>14}  {'LENGTH':>10}")
            lines += [f"{o:>14}  {human(n):>10}" for o, n in bl.runs]
        return "\n".join(lines)
    f = d.files
    assert f is not None
    shown = f.changes if limit <= 0 else f.changes[:limit]
    if shown:
        lines.append(f"{'CHANGE':<8} {'BYTES':>10}  {'WHAT':<18} PATH")
        for c in shown:
            entry = c.b or c.a
            assert entry is not None
            what = ",".join(c.fields) if c.fields else entry.kind
            if len(what) > 18:
                what = what[:17] + "…"
            lines.append(
                f"{c.change:<8} {human(c.bytes):>10}  {what:<18} {_clip(c.path, _WIDTH - 40)}"
            )
        if len(shown) < len(f.changes):
            lines.append(f"… and {len(f.changes) - len(shown)} more (--limit 0 or --json for all)")
    p = d.packages
    if p is not None:
        lines.append(
            f"packages ({p.database}): {len(p.added)} added, {len(p.removed)} removed, "
            f"{len(p.upgraded)} upgraded, {len(p.downgraded)} downgraded"
        )
        for (name, _), v in p.added:
            lines.append(f"  + {name} {v}")
        for (name, _), v in p.removed:
            lines.append(f"  - {name} {v}")
        for (name, _), old, new in p.upgraded + p.downgraded:
            lines.append(f"  ~ {name} {old} -> {new}")
    lines = [line if len(line) <= _WIDTH else line[: _WIDTH - 1] + "…" for line in lines]
    s = f.summary()
    lines.append(
        f"{s['added']} added, {s['removed']} removed, {s['modified']} modified, "
        f"{s['unchanged']} unchanged; {human(s['bytes_changed'])} changed"
    )
    return "\n".join(lines)
