"""Every persistent effect the device makes goes through one ``Disk``.

Invariant I3 (every state change atomic and durable) and the crash sweep of the test suite
both depend on this: a test substitutes a simulated disk that counts each primitive, cuts
power after effect *k* and discards whatever was not covered by an fsync. Code above this
layer never calls ``open(..., 'w')``, ``os.replace`` or ``os.fsync`` directly.

Primitives are deliberately few: open a file for writing, positional write, fsync, rename,
unlink, fsync of a directory, mkdir. ``write_atomic`` composes them into the
temp-fsync-rename-fsync(dir) pattern.

No write can be redirected (issue 9): a file is opened with ``O_NOFOLLOW``, so a symlink
planted at its name is refused instead of followed; a new file is created with ``O_EXCL``
(under a random temp name for ``write_atomic``), so nothing planted can be reused; an existing
file (a download being resumed, a file slot) must be a regular file owned by us with exactly
one link, or a block device. A file that fails this is ``RedirectedWriteError`` (security:
inside the device's 0700 directories only root or the device itself can plant one).
Directories the device makes are 0700; ``check_private_dir`` refuses one that is a symlink,
foreign, or writable by group or others (``ConfigError``: a mode to fix, not an attack).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Protocol

from verifier.errors import ConfigError, OtakitError, RedirectedWriteError, StorageError

#: Mode of every directory the device creates (state, metadata, staging).
PRIVATE_DIR_MODE = 0o700


class WriteHandle(Protocol):
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def fsync(self) -> None: ...
    def close(self) -> None: ...


class Disk(Protocol):
    """The storage primitives of a device. Reads are not effects and use normal files."""

    def open_write(self, path: Path, *, new: bool, truncate: bool = False) -> WriteHandle:
        """``new``: create the file, refusing any existing entry (``O_EXCL``). Otherwise open
        an existing file (a slot, a download to resume), emptied first only if ``truncate``
        (the publisher's tools rewriting an output file; the device never truncates). Never
        follows a symlink at ``path`` (``O_NOFOLLOW``)."""
        ...

    def rename(self, src: Path, dst: Path) -> None: ...
    def unlink(self, path: Path) -> None: ...
    def fsync_dir(self, path: Path) -> None: ...
    def mkdir(self, path: Path) -> None: ...


def storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    """The one diagnostic for a failed storage primitive (also what a simulated disk raises)."""
    reason = errno.errorcode.get(exc.errno or 0, "error") + f" ({exc.strerror})"
    hint = None
    if exc.errno == errno.ENOSPC:
        hint = "free space on the device; the running image and trusted state are unchanged"
    return StorageError(f"{what} {path}: {reason}", hint=hint)


_REDIRECT_HINT = (
    "something other than otakit-device created this entry; inspect it (ls -l) and remove it "
    "before the next run. Nothing was written through it"
)


def _redirected(path: Path, found: str) -> RedirectedWriteError:
    return RedirectedWriteError(
        f"refusing to write {path}: expected a regular file owned by uid {os.geteuid()} with "
        f"one link (or a block device), found {found}",
        hint=_REDIRECT_HINT,
    )


def describe_unsafe(st: os.stat_result, *, block_ok: bool = True) -> str | None:
    """Why a file with status ``st`` must not be written (None: it is safe to write).
    ``block_ok``: a block device is fine (a slot), else it is refused too."""
    if stat.S_ISBLK(st.st_mode):
        return None if block_ok else "a block device"
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if not stat.S_ISREG(st.st_mode):
        return f"a file of type {stat.filemode(st.st_mode)[0]!r}"
    if st.st_uid != os.geteuid():
        return f"a file owned by uid {st.st_uid}"
    if st.st_nlink != 1:
        return f"a file with {st.st_nlink} hard links"
    return None


def open_fd(path: Path, *, new: bool, truncate: bool = False) -> int:
    """The one ``os.open`` of a file to write (RealDisk and the simulated disk share it)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    if new:
        flags |= os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _redirected(path, "a symlink") from e
        if new and e.errno == errno.EEXIST:
            found = "a symlink" if path.is_symlink() else "an existing entry (expected none)"
            raise _redirected(path, found) from e
        raise storage_error("cannot open for writing", path, e) from e
    try:
        why = describe_unsafe(os.fstat(fd))
    except OSError as e:
        os.close(fd)
        raise storage_error("cannot examine", path, e) from e
    if why is not None:
        os.close(fd)
        raise _redirected(path, why)
    if truncate and not new:  # only once the file is known to be ours: never O_TRUNC
        try:
            os.ftruncate(fd, 0)
        except OSError as e:
            os.close(fd)
            raise storage_error("cannot truncate", path, e) from e
    return fd


def existing_size(path: Path) -> int | None:
    """Size of the file at ``path`` that the device is about to reuse (None: absent).

    Looks at the entry itself (``lstat``): a planted symlink or hard link is refused here,
    before anything trusts its size, exactly as ``open_write`` would refuse to write it.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise storage_error("cannot examine", path, e) from e
    why = describe_unsafe(st, block_ok=False)
    if why is not None:
        raise _redirected(path, why)
    return st.st_size


def check_private_dir(path: Path, error: type[OtakitError] = ConfigError) -> None:
    """Refuse a device directory that is a symlink, not ours (or root's), or writable by group
    or others: anyone who can write it can plant a link the device would otherwise write
    through. An absent directory passes (it is created 0700 when needed)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise error(f"cannot examine directory {path}: {e.strerror or e}") from e
    found = None
    if stat.S_ISLNK(st.st_mode):
        found = "a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        found = "not a directory"
    elif st.st_uid not in (os.geteuid(), 0):
        found = f"owned by uid {st.st_uid}"
    elif st.st_mode & 0o022:
        found = f"mode {stat.filemode(st.st_mode)} (writable by group or others)"
    if found is not None:
        raise error(
            f"directory {path}: expected a real directory owned by uid {os.geteuid()} and "
            f"writable only by it, found {found}",
            hint=f"chmod 0700 {path} (and check who changed it), or use a new state directory",
        )


class _RealHandle:
    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd

    def pwrite(self, data: bytes, offset: int) -> None:
        """Write all of ``data``: a short write is continued; a write that makes no progress,
        or fails after part of the data, is a ``StorageError`` that says how far it got."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = os.pwrite(self._fd, view[done:], offset + done)
            except OSError as e:
                if done == 0:
                    raise storage_error("cannot write", self._path, e) from e
                raise self._short(done, len(view), offset, f": {os.strerror(e.errno or 0)}") from e
            if n <= 0:
                raise self._short(done, len(view), offset, "")
            done += n

    def _short(self, done: int, total: int, offset: int, why: str) -> StorageError:
        return StorageError(
            f"short write to {self._path}: wrote {done} of {total} bytes at offset {offset}{why}",
            hint="the medium is full or failing; the running image and trusted state are unchanged",
        )

    def fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise storage_error("cannot sync", self._path, e) from e

    def close(self) -> None:
        os.close(self._fd)


class RealDisk:
    """The real thing: POSIX calls, every failure turned into a ``StorageError``."""

    #: mode of directories it creates (before the umask)
    dir_mode = PRIVATE_DIR_MODE

    def open_write(self, path: Path, *, new: bool, truncate: bool = False) -> WriteHandle:
        return _RealHandle(path, open_fd(path, new=new, truncate=truncate))

    def rename(self, src: Path, dst: Path) -> None:
        try:
            src.replace(dst)
        except OSError as e:
            raise storage_error(f"cannot rename {src} to", dst, e) from e

    def unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise storage_error("cannot remove", path, e) from e

    def fsync_dir(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise storage_error("cannot sync directory", path, e) from e

    def mkdir(self, path: Path) -> None:
        try:
            path.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error("cannot create directory", path, e) from e


class DiscardHandle:
    """A ``WriteHandle`` that keeps nothing: for decoding only to check (the decoders hash
    every byte they write), as the publisher's self-checks do."""

    def pwrite(self, data: bytes, offset: int) -> None:
        pass

    def fsync(self) -> None:
        pass

    def close(self) -> None:
        pass


def temp_path(path: Path, token: bytes) -> Path:
    """The temp file ``write_atomic`` writes before renaming it over ``path``: a dot file in
    the same directory, named with ``token`` (random) so no one can plant an entry there."""
    return path.with_name(f".{path.name}.{token.hex()}.tmp")


def write_atomic(disk: Disk, path: Path, data: bytes, *, token: bytes | None = None) -> None:
    """Replace ``path`` with ``data`` so that after a crash it holds the old or the new bytes.

    new temp file (random name, ``O_EXCL``) in the same directory → write → fsync → rename
    over → fsync the directory. ``token`` fixes the temp name (tests); default: random.
    """
    tmp = temp_path(path, os.urandom(8) if token is None else token)
    h = disk.open_write(tmp, new=True)
    try:
        h.pwrite(data, 0)
        h.fsync()
    finally:
        h.close()
    disk.rename(tmp, path)
    disk.fsync_dir(path.parent)


def copy_stream(disk: Disk, src: BinaryIO, path: Path, *, chunk: int = 1 << 20) -> int:
    """Write a stream to a new file durably (create, write, fsync). Returns bytes written."""
    h = disk.open_write(path, new=True)
    offset = 0
    try:
        while block := src.read(chunk):
            h.pwrite(block, offset)
            offset += len(block)
        h.fsync()
    finally:
        h.close()
    return offset
