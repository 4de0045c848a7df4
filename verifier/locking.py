"""The one exclusive lock: a non-blocking ``flock`` on a lock file, held for a ``with`` block.

Used by the device (one ``otakit-device`` per state directory: a timer and an operator may
race) and by the publisher (one release per repository). ``flock`` belongs to the open file
description, so the kernel releases it when the holder dies however it dies: there is never a
stale lock to clean up. The holder writes its pid into the file so the one who is refused can
be told who holds it; the pid is information only (a dead holder's pid stays in the file until
the next holder overwrites it), never a reason to wait or to break the lock.

A directory that must hold nothing but its own files (the standalone TUF client's metadata
directory, which other tools list) is locked by ``flock`` on the directory itself: no file
is created, and the busy message cannot name the holder's pid.

A reader that must never wait (``otakit-device status``) does not take the lock: it asks
``lock_holder`` whether someone holds it, which costs a shared ``flock`` for a moment. So
that such a probe cannot make a real taker fail, a taker may wait ``wait`` seconds for the
lock; past that it is refused, never queued indefinitely behind a stalled holder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from verifier.effects import describe_unsafe
from verifier.errors import LocalError

_MAX_HOLDER_TEXT = 256
#: how often a waiting taker tries again
_POLL_S = 0.05


@contextmanager
def exclusive_lock(
    path: Path,
    *,
    holder: str,
    busy: type[LocalError] = LocalError,
    cannot_open: type[LocalError] = LocalError,
    purpose: str = "",
    wait: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600 if missing; an existing directory is
    locked itself, see the module docstring), waiting at most ``wait`` seconds for it.

    Still taken: ``busy`` naming ``holder`` (e.g. "another publisher"), its pid and what it
    said it is doing (``purpose``, e.g. "update"). The lock file cannot be opened:
    ``cannot_open``. Both are local errors: waiting or fixing the directory helps, retrying
    at once does not.
    """
    is_dir = path.is_dir() and not path.is_symlink()
    flags = os.O_RDONLY | os.O_DIRECTORY if is_dir else os.O_RDWR | os.O_CREAT
    try:
        # O_NOFOLLOW: a symlink planted at the lock's name must not make us create, truncate
        # or write (the pid) a file somewhere else
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        what = "is a symlink" if e.errno == errno.ELOOP else f"{e.strerror or e}"
        raise cannot_open(
            f"cannot open the lock file {path}: {what}; expected a regular file of ours"
        ) from e
    try:
        why = None if is_dir else describe_unsafe(os.fstat(fd), block_ok=False)
        if why is not None:
            raise cannot_open(
                f"cannot use the lock file {path}: expected a regular file owned by uid "
                f"{os.geteuid()} with one link, found {why}",
                hint=f"remove {path} (nothing holds a lock through it) and check who made it",
            )
        give_up = clock() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise cannot_open(f"cannot lock {path}: {e.strerror or e}") from e
                if clock() >= give_up:
                    lock = "locked" if is_dir else f"lock {path.name}"
                    raise busy(
                        f"{holder} is working on {path if is_dir else path.parent} ({lock} "
                        f"{_describe(_read_holder(fd))}); expected to be alone",
                        hint="wait for it to finish; the lock is released when that process exits",
                    ) from e
                time.sleep(_POLL_S)
        if is_dir:
            yield
            return
        _record(fd, purpose)
        try:
            yield
        finally:
            _record(fd, None)  # still held: nobody reads a half-cleared record
    finally:
        os.close(fd)


def lock_holder(path: Path) -> str | None:
    """Who holds the lock on ``path`` right now ("pid 123, update"), or None if nobody does.

    Never waits and never creates the file; a shared lock is held for the instant of the
    probe only (takers wait briefly for it, see the module docstring).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None  # no lock file: nobody ever held it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            return _describe(_read_holder(fd)).removeprefix("held by ")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _record(fd: int, purpose: str | None) -> None:
    """Write "PID PURPOSE" into the lock file (None: clear it, on release)."""
    try:
        os.ftruncate(fd, 0)
        if purpose is not None:
            os.pwrite(fd, f"{os.getpid()} {purpose}".strip().encode() + b"\n", 0)
    except OSError:
        pass  # the record is a courtesy for the next caller's message, not part of the lock


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, _MAX_HOLDER_TEXT, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _describe(text: str) -> str:
    pid, _, purpose = text.partition(" ")
    if not pid.isdigit():
        return "held by another process"
    clean = "".join(ch for ch in purpose if ch.isalnum() or ch in "-_ ")[:64]
    return f"held by pid {pid}" + (f", {clean}" if clean else "")
