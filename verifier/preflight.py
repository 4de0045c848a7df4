"""Preflight checks before a byte is written: slot paths still name the slots chosen at
init, space, slot size, not active, not mounted rw.

Reads only (``os.stat``, ``statvfs``, ``/proc/self/mountinfo``); the mountinfo path is a
parameter so tests can describe any mount table.

Slot paths (``check_slot_paths``): a slot may be named through symlinks — that is the
recommended way (``/dev/disk/by-partlabel/root-a`` is a link to ``/dev/sdX2`` by design) —
but what the name resolves to is recorded at init, and every command that reads or writes a
slot refuses when it now resolves elsewhere: a retargeted link, a renumbered disk or a file
replaced by a link would otherwise make ``update`` write whatever the name points at today.
The operator who really moved a slot initializes the device again and sees what is recorded.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import OtakitError, SlotError, StorageError, UsageError

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


def require_absolute(value: str | Path, what: str, error: type[OtakitError], hint: str) -> Path:
    """A path the device stores (a slot, a boot-option file) must be absolute: it is used later
    from whatever directory a command runs in, where a relative one names a different file.

    ``error`` is ``UsageError`` for a path just typed (then the absolute path it meant in this
    working directory is suggested) and ``ConfigError`` for one read back from the state.
    """
    path = Path(value)
    if path.is_absolute():
        return path
    suggestion = ""
    if issubclass(error, UsageError):
        with contextlib.suppress(OSError):  # the working directory was removed
            suggestion = f"; did you mean {Path.cwd() / path}?"
    raise error(
        f"{what}: expected an absolute path, found {str(path)!r} (a relative path names a "
        f"different file from every working directory){suggestion}",
        hint=hint,
    )


def _resolve(p: str) -> str:
    try:
        return str(Path(p).resolve())
    except OSError:
        return p


def resolve_slot(path: Path, what: str) -> Path:
    """The file ``path`` names now, every symlink followed; it must be a file or block device."""
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except FileNotFoundError as e:
        raise SlotError(f"{what} {path} does not exist") from e
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
        raise SlotError(f"{what} {path} cannot be resolved: {getattr(e, 'strerror', e)}") from e
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise SlotError(f"{what} {path}: expected a regular file or a block device")
    return real


def check_slot_paths(
    slots: tuple[Path, Path],
    state_dir: Path,
    recorded: Sequence[Path] | None,
    *,
    alias_error: type[OtakitError] = SlotError,
) -> tuple[Path, Path]:
    """Resolve slots a and b; refuse if they are one file, live in the state directory, or
    (when ``recorded``, the resolutions made at init) now resolve somewhere else.

    The one alias check of the booted slot, run by ``init`` (``alias_error=UsageError``: the
    operator just typed both paths) and by every command that touches a slot (``SlotError``).
    Returns the resolved paths: opening those, not the names, keeps a link retargeted after
    this check from redirecting the write.
    """
    real = (resolve_slot(slots[0], "slot a"), resolve_slot(slots[1], "slot b"))
    how = _same_file(real[0], real[1])
    if how is not None:
        raise alias_error(
            f"slots a ({slots[0]}) and b ({slots[1]}) are the same {how}; expected two "
            f"different slots (one of them is the booted slot, which is never written)",
            hint="name the other slot's partition or file for the second path",
        )
    state = state_dir.resolve()
    for name, given, r in zip("ab", slots, real, strict=True):
        if r == state or r.is_relative_to(state):
            raise SlotError(
                f"slot {name} ({given}) resolves to {r}, inside the state directory {state}; "
                f"expected a slot outside it (writing an image there would destroy the "
                f"device's own state)"
            )
    if recorded is not None:
        for name, given, r, was in zip("ab", slots, real, recorded, strict=True):
            if r != was:
                raise SlotError(
                    f"slot {name} ({given}) now resolves to {r}; at init it resolved to {was}. "
                    f"Refusing to use a slot that changed meaning",
                    hint="if the slot really moved, initialize a new state directory; "
                    "nothing was written",
                )
    return real


def _same_file(a: Path, b: Path) -> str | None:
    """How resolved paths ``a`` and ``b`` name one slot (symlinks and ``..`` are resolved
    already; a hard link shares the inode; two device nodes share major:minor), or None."""
    if a == b:
        return f"file {a} once every symlink and '..' is resolved"
    try:
        st_a, st_b = a.stat(), b.stat()
    except OSError:
        return None
    if (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino):
        return f"file: {a} and {b} are hard links to one inode ({st_a.st_ino})"
    if stat.S_ISBLK(st_a.st_mode) and stat.S_ISBLK(st_b.st_mode) and st_a.st_rdev == st_b.st_rdev:
        dev = f"{os.major(st_a.st_rdev)}:{os.minor(st_a.st_rdev)}"
        return f"block device: {a} and {b} are both device {dev}"
    return None
