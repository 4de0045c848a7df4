"""Preflight checks before a byte is written: space, slot size, not active, not mounted rw.

Reads only (``os.stat``, ``statvfs``, ``/proc/self/mountinfo``); the mountinfo path is a
parameter so tests can describe any mount table.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import SlotError, StorageError

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Mount:
    major_minor: str
    mount_point: str
    options: frozenset[str]
    source: str

    @property
    def read_write(self) -> bool:
        return "rw" in self.options


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse proc(5) mountinfo; malformed lines are skipped (the kernel never writes them)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        mounts.append(
            Mount(
                major_minor=fields[2],
                mount_point=_unescape(fields[4]),
                options=frozenset(fields[5].split(",")),
                source=_unescape(tail[1]),
            )
        )
    return mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def slot_capacity(path: Path) -> tuple[int, bool]:
    """(bytes available for an image, is a block device). A regular file may grow into the
    free space of its file system."""
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise SlotError(f"slot {path} does not exist") from e
    except OSError as e:
        raise SlotError(f"slot {path} cannot be examined: {e.strerror}") from e
    if stat.S_ISBLK(st.st_mode):
        with path.open("rb") as f:
            return f.seek(0, os.SEEK_END), True
    if stat.S_ISREG(st.st_mode):
        return st.st_size + free_space(path.parent), False
    raise SlotError(f"slot {path}: expected a regular file or a block device")


def free_space(directory: Path) -> int:
    try:
        vfs = os.statvfs(directory)
    except OSError as e:
        raise StorageError(f"cannot examine free space of {directory}: {e.strerror}") from e
    return vfs.f_bavail * vfs.f_frsize


def check_not_mounted_rw(path: Path, mountinfo: Path = MOUNTINFO) -> None:
    """Refuse a slot that is mounted read-write (by path, or by device number)."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return  # no procfs (e.g. some containers): nothing to check against
    real = str(path.resolve())
    rdev = None
    try:
        st = path.stat()
        if stat.S_ISBLK(st.st_mode):
            rdev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    except OSError:
        pass
    for m in parse_mountinfo(text):
        if not m.read_write:
            continue
        same_source = m.source.startswith("/") and _resolve(m.source) == real
        if same_source or (rdev is not None and m.major_minor == rdev):
            raise SlotError(
                f"slot {path} is mounted read-write at {m.mount_point}; expected it unmounted "
                f"or read-only before it is overwritten",
                hint=f"umount {m.mount_point}",
            )


def _resolve(p: str) -> str:
    try:
        return str(Path(p).resolve())
    except OSError:
        return p


def check_slots_differ(target: Path, booted: Path) -> None:
    """The target must not be the running slot under another name (I1)."""
    t, b = target.resolve(), booted.resolve()
    same = t == b
    if not same:
        try:
            st_t, st_b = t.stat(), b.stat()
            same = (st_t.st_dev, st_t.st_ino) == (st_b.st_dev, st_b.st_ino) or (
                stat.S_ISBLK(st_t.st_mode) and st_t.st_rdev == st_b.st_rdev
            )
        except OSError:
            same = False
    if same:
        raise SlotError(
            f"target slot {target} is the booted slot {booted}; the running slot is never written"
        )
