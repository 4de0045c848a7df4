"""The package summary of rpm-based images: installed packages from the sqlite rpm database
(rpm >= 4.16: ``usr/lib/sysimage/rpm/rpmdb.sqlite``, or under ``var/lib/rpm``).

The database's bytes come from the image listing (``Listing.kept``, never a path in the image)
and are written to a temporary directory of our own, with its write-ahead log when the image
holds one (committed transactions may still sit there), and opened there with Python's
``sqlite3``: sqlite never sees a path taken from the image. Each row of the ``Packages`` table
is an rpm header blob; name, epoch, version, release and architecture are read from its tag
index by our own bounded parser (no ``rpm`` library needed).

Header blob layout (rpm's ``headerExport``; big-endian): ``il`` index entries and ``dl`` data
bytes, then ``il`` entries of (tag, type, offset, count), then the data store. A header read
from a package file carries an 8-byte magic first; it is skipped when present.
"""

from __future__ import annotations

import sqlite3
import struct
import tempfile
from pathlib import Path
from typing import Final

from repo.errors import ImageFormatError
from signer.imagediff.dpkg import Package

#: Where rpm keeps its sqlite database, newest layout first.
RPMDB_PATHS: Final = ("/usr/lib/sysimage/rpm/rpmdb.sqlite", "/var/lib/rpm/rpmdb.sqlite")
#: The files a summary needs whole: each database and its write-ahead log.
KEEP_PATHS: Final = frozenset(p + suffix for p in RPMDB_PATHS for suffix in ("", "-wal"))

_MAGIC: Final = b"\x8e\xad\xe8\x01"
_NAME, _VERSION, _RELEASE, _EPOCH, _ARCH = 1000, 1001, 1002, 1003, 1022
_INT32, _STRING, _I18NSTRING = 4, 6, 9
#: rpm's own bounds on a header (``hdrchkTags``, ``hdrchkData``), and ours on a database.
_MAX_TAGS: Final = 0xFFFF
_MAX_DATA: Final = 256 << 20
_MAX_PACKAGES: Final = 200_000
_MAX_STRING: Final = 4096
#: sqlite virtual-machine steps (in thousands) one read of the database may take.
_MAX_STEPS: Final = 100_000


def find_rpmdb(kept: dict[str, bytes]) -> tuple[bytes, bytes] | None:
    """The database and its write-ahead log (possibly empty) an image holds, if any."""
    for path in RPMDB_PATHS:
        if path in kept:
            return kept[path], kept.get(path + "-wal", b"")
    return None


def read_rpmdb(db: bytes, wal: bytes, what: str) -> dict[Package, str]:
    """Installed packages as ``(name, arch) -> [epoch:]version-release``."""
    with tempfile.TemporaryDirectory(prefix="otakit-rpmdb-") as tmp:
        path = Path(tmp) / "rpmdb.sqlite"
        path.write_bytes(db)
        if wal:
            (Path(tmp) / "rpmdb.sqlite-wal").write_bytes(wal)
        try:
            con = sqlite3.connect(path)
            try:
                blobs = _blobs(con, what)
            finally:
                con.close()
        except sqlite3.Error as e:
            raise ImageFormatError(
                f"{what}: the rpm database cannot be read: {e}",
                hint="the image's rpm database is corrupt, or not rpm's sqlite format",
            ) from e
    if len(blobs) > _MAX_PACKAGES:
        raise ImageFormatError(f"{what}: more than {_MAX_PACKAGES} packages in the rpm database")
    out: dict[Package, str] = {}
    for blob in blobs:
        if not isinstance(blob, bytes):
            raise ImageFormatError(f"{what}: an rpm database row is not a header blob")
        name, evr, arch = parse_header(blob, what)
        out[(name, arch)] = evr
    return out


def _blobs(con: sqlite3.Connection, what: str) -> list[object]:
    """Every ``Packages.blob``. The file is the image's: ``Packages`` must be a plain table
    (a crafted view could recurse for ever), schema code is not trusted, and a query that
    runs past its step budget is abandoned."""
    steps = [0]

    def budget() -> int:
        steps[0] += 1
        return 1 if steps[0] > _MAX_STEPS else 0

    con.set_progress_handler(budget, 1000)
    con.execute("PRAGMA trusted_schema = OFF")
    kind = con.execute("SELECT type FROM sqlite_master WHERE name = 'Packages'").fetchone()
    if kind is None or kind[0] != "table":
        raise ImageFormatError(
            f"{what}: the rpm database has no Packages table "
            f"(found {kind[0] if kind else 'nothing'})"
        )
    rows = con.execute("SELECT blob FROM Packages LIMIT ?", (_MAX_PACKAGES + 1,))
    return [row[0] for row in rows]


def parse_header(blob: bytes, what: str) -> tuple[str, str, str]:
    """(name, ``[epoch:]version-release``, arch) from one header blob."""

    def bad(why: str) -> ImageFormatError:
        return ImageFormatError(f"{what}: an rpm header in the database is malformed: {why}")

    if blob[:4] == _MAGIC:
        blob = blob[8:]
    if len(blob) < 8:
        raise bad(f"{len(blob)} bytes")
    il, dl = struct.unpack_from(">II", blob, 0)
    if not 1 <= il <= _MAX_TAGS or dl > _MAX_DATA or 8 + 16 * il + dl > len(blob):
        raise bad(f"{il} tags and {dl} data bytes in a {len(blob)}-byte blob")
    store = blob[8 + 16 * il : 8 + 16 * il + dl]
    found: dict[int, str | int] = {}
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">iIiI", blob, 8 + 16 * i)
        if tag not in (_NAME, _VERSION, _RELEASE, _EPOCH, _ARCH):
            continue
        if offset < 0 or offset >= len(store) or count < 1:
            raise bad(f"tag {tag} at offset {offset} outside its {len(store)}-byte store")
        if tag == _EPOCH:
            if kind != _INT32 or offset + 4 > len(store):
                raise bad("the epoch is not a 32-bit integer")
            found[tag] = struct.unpack_from(">I", store, offset)[0]
            continue
        if kind not in (_STRING, _I18NSTRING):
            raise bad(f"tag {tag} has type {kind}, expected a string")
        end = store.find(b"\0", offset, offset + _MAX_STRING + 1)
        if end < 0:
            raise bad(f"tag {tag}: a string without its end within {_MAX_STRING} bytes")
        found[tag] = store[offset:end].decode("utf-8", "replace")
    name, version, release = found.get(_NAME), found.get(_VERSION), found.get(_RELEASE)
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(release, str)):
        raise bad("no name, version or release")
    epoch = found.get(_EPOCH)
    arch = found.get(_ARCH, "")
    evr = f"{epoch}:{version}-{release}" if epoch is not None else f"{version}-{release}"
    return name, evr, str(arch)


def compare_evr(a: str, b: str) -> int:
    """-1, 0 or 1 as rpm orders ``[epoch:]version-release`` (a missing epoch is 0)."""
    ea, va, ra = _split(a)
    eb, vb, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return rpmvercmp(va, vb) or rpmvercmp(ra, rb)


def _split(evr: str) -> tuple[int, str, str]:
    epoch, sep, rest = evr.partition(":")
    if not sep or not epoch.isdigit():
        epoch, rest = "0", evr
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch), version, release


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def rpmvercmp(a: str, b: str) -> int:
    """rpm's segment comparison: runs of digits (numerically) and of letters (by byte), other
    characters separate; ``~`` sorts before everything, even the end; ``^`` after the end but
    before anything else; a numeric segment is newer than an alphabetic one; when one string
    runs out, the one with characters left is newer."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not _alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < len(b) and not _alnum(b[j]) and b[j] not in "~^":
            j += 1
        ta, tb = a[i : i + 1], b[j : j + 1]
        if ta == "~" or tb == "~":
            if ta != "~":
                return 1
            if tb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ta == "^" or tb == "^":
            if not ta:
                return -1
            if not tb:
                return 1
            if ta != "^":
                return 1
            if tb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ta and tb):
            break
        numeric = ta.isdigit()
        si, sj = i, j
        while i < len(a) and (a[i].isdigit() if numeric else a[i].isascii() and a[i].isalpha()):
            i += 1
        while j < len(b) and (b[j].isdigit() if numeric else b[j].isascii() and b[j].isalpha()):
            j += 1
        sa, sb = a[si:i], b[sj:j]
        if not sb:
            return 1 if numeric else -1
        if numeric:
            sa, sb = sa.lstrip("0"), sb.lstrip("0")
            if len(sa) != len(sb):
                return -1 if len(sa) < len(sb) else 1
        if sa != sb:
            return -1 if sa < sb else 1
    rest_a, rest_b = i < len(a), j < len(b)
    if rest_a == rest_b:
        return 0
    return 1 if rest_a else -1
