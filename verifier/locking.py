"""The one exclusive lock: a non-blocking ``flock`` on a lock file, held for a ``with`` block.

Used by the device (one ``otakit-device`` per state directory: a timer and an operator may
race) and by the publisher (one release per repository). ``flock`` belongs to the open file
description, so the kernel releases it when the holder dies however it dies: there is never a
stale lock to clean up. The holder writes its pid into the file so the one who is refused can
be told who holds it; the pid is information only (a dead holder's pid stays in the file until
the next holder overwrites it), never a reason to wait or to break the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verifier.effects import describe_unsafe
from verifier.errors import LocalError

_MAX_PID_TEXT = 32


@contextmanager
def exclusive_lock(
    path: Path,
    *,
    holder: str,
    busy: type[LocalError] = LocalError,
    cannot_open: type[LocalError] = LocalError,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600 if missing).

    Taken already: ``busy`` naming ``holder`` (e.g. "another publisher") and its pid. The
    lock file cannot be opened: ``cannot_open``. Both are local errors: waiting or fixing the
    directory helps, retrying at once does not.
    """
    try:
        # O_NOFOLLOW: a symlink planted at the lock's name must not make us create, truncate
        # or write (the pid) a file somewhere else
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        what = "is a symlink" if e.errno == errno.ELOOP else f"{e.strerror or e}"
        raise cannot_open(
            f"cannot open the lock file {path}: {what}; expected a regular file of ours"
        ) from e
    try:
        why = describe_unsafe(os.fstat(fd), block_ok=False)
        if why is not None:
            raise cannot_open(
                f"cannot use the lock file {path}: expected a regular file owned by uid "
                f"{os.geteuid()} with one link, found {why}",
                hint=f"remove {path} (nothing holds a lock through it) and check who made it",
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise cannot_open(f"cannot lock {path}: {e.strerror or e}") from e
            raise busy(
                f"{holder} is working on {path.parent} (lock {path.name} {_holder(fd)}); "
                "expected to be alone",
                hint="wait for it to finish; the lock is released when that process exits",
            ) from e
        _record_pid(fd)
        yield
    finally:
        os.close(fd)


def _record_pid(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is a courtesy for the next caller's message, not part of the lock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, _MAX_PID_TEXT, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return f"held by pid {text}" if text.isdigit() else "held by another process"
