"""A simulated device disk that can lose power after any effect, or fail one effect.

``SimDisk`` implements ``verifier.effects.Disk`` on top of a real directory, so the code under
test reads the files it wrote the normal way. Alongside, it keeps the *durable* picture of that
directory, the one a real file system guarantees after a power cut:

* file contents are durable up to their last ``fsync`` (a file never synced is empty);
* directory entries (create, rename, unlink, mkdir) are durable once the parent directory was
  ``fsync_dir``-ed; an entry whose directory is not durable vanishes with it.

Each primitive (open_write, pwrite, fsync, rename, unlink, fsync_dir, mkdir) is one effect
with a 1-based index. ``crash_after=k`` lets effects 1..k happen and raises ``PowerCut`` when
effect k+1 is attempted, and on every later attempt: the machine is off. ``reboot()`` then
makes the real directory exactly the durable picture — every unsynced write and every file
created outside the ``Disk`` is gone — and the disk works again.

``fault=Fault(k, kind)`` makes effect k fail the way the real disk would (a ``StorageError``
built by ``verifier.effects``) instead of, or for a short write after part of, its work.

This model is stricter than ext4 (data=ordered, auto_da_alloc): anything a real file system
may lose, it loses. It does not model reordering *within* a synced file, nor the post-EIO
"fsync succeeds but the data is gone" behaviour of Linux page cache write-back errors.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from verifier.effects import PRIVATE_DIR_MODE, open_fd, storage_error
from verifier.errors import StorageError

Op = Literal["open_write", "pwrite", "fsync", "close", "rename", "unlink", "fsync_dir", "mkdir"]
FaultKind = Literal["enospc", "eio", "short_write", "rename_fail"]
FAULT_KINDS: tuple[FaultKind, ...] = ("enospc", "eio", "short_write", "rename_fail")


class PowerCut(BaseException):
    """The power went out. A BaseException so that no ``except Exception`` in the code under
    test can swallow it, as nothing survives a real power cut."""


@dataclass(frozen=True)
class Effect:
    index: int
    op: Op
    path: Path


@dataclass(frozen=True)
class Fault:
    at: int
    kind: FaultKind

    def applies_to(self, op: Op) -> bool:
        return applies(self.kind, op)


def applies(kind: FaultKind, op: Op) -> bool:
    """Which faults a real disk can produce for which primitive."""
    if kind == "short_write":
        return op == "pwrite"
    if kind == "rename_fail":
        return op == "rename"
    return op != "close"


_ERRNO: dict[FaultKind, int] = {
    "enospc": errno.ENOSPC,
    "eio": errno.EIO,
    "short_write": errno.ENOSPC,
    "rename_fail": errno.EROFS,
}

# The wording RealDisk uses for each primitive, so messages match the real thing.
_WHAT: dict[Op, str] = {
    "open_write": "cannot open for writing",
    "pwrite": "cannot write",
    "fsync": "cannot sync",
    "rename": "cannot rename",
    "unlink": "cannot remove",
    "fsync_dir": "cannot sync directory",
    "mkdir": "cannot create directory",
}


class SimHandle:
    def __init__(self, disk: SimDisk, path: Path, inode: int, fd: int) -> None:
        self._disk = disk
        self._path = path
        self._inode = inode
        self._fd = fd

    def pwrite(self, data: bytes, offset: int) -> None:
        fault = self._disk._effect("pwrite", self._path)
        if fault is not None:
            if fault.kind == "short_write":  # what RealDisk reports after a partial write
                half = len(data) // 2
                os.pwrite(self._fd, data[:half], offset)
                raise StorageError(
                    f"short write to {self._path}: wrote {half} of {len(data)} bytes at "
                    f"offset {offset}: {os.strerror(_ERRNO['short_write'])}"
                )
            raise self._disk._error(fault, "pwrite", self._path)
        os.pwrite(self._fd, data, offset)

    def fsync(self) -> None:
        fault = self._disk._effect("fsync", self._path)
        if fault is not None:
            raise self._disk._error(fault, "fsync", self._path)
        size = os.fstat(self._fd).st_size
        self._disk._data[self._inode] = os.pread(self._fd, size, 0) if size else b""

    def close(self) -> None:
        # Not an effect (nothing becomes durable), and it must work after a power cut too,
        # or ``finally: h.close()`` would mask the original exception with a leaked fd.
        if self._fd >= 0:
            os.close(self._fd)
            self._disk._open.discard(self._fd)
            self._fd = -1


class SimDisk:
    def __init__(
        self,
        root: Path,
        *,
        crash_after: int | None = None,
        fault: Fault | None = None,
    ) -> None:
        self.root = root.resolve()
        self.crash_after = crash_after
        self.fault = fault
        self.effects: list[Effect] = []
        self.fault_fired = False
        self.powered = True
        self._next_inode = 0
        self._open: set[int] = set()
        # volatile (what the real directory holds now) and durable namespaces
        self._names: dict[Path, int] = {}
        self._dirs: set[Path] = {self.root}
        self._durable_names: dict[Path, int] = {}
        self._durable_dirs: set[Path] = {self.root}
        self._data: dict[int, bytes] = {}  # durable content per inode
        self._adopt_existing()

    # --- bookkeeping ----------------------------------------------------------------------

    def _adopt_existing(self) -> None:
        """Everything already under root when the disk is created is durable."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            for name in dirnames:
                self._dirs.add(d / name)
            for name in filenames:
                p = d / name
                ino = self._new_inode()
                self._names[p] = ino
                self._data[ino] = p.read_bytes()
        self._durable_names = dict(self._names)
        self._durable_dirs = set(self._dirs)

    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode

    def _inside(self, path: Path) -> Path:
        p = Path(os.path.abspath(path))
        if p != self.root and self.root not in p.parents:
            raise AssertionError(f"SimDisk({self.root}) asked to touch {p}, outside its root")
        return p

    @property
    def count(self) -> int:
        return len(self.effects)

    def _effect(self, op: Op, path: Path) -> Fault | None:
        """Record an effect; cut the power or return the fault to inject, if it is due."""
        if not self.powered:
            raise PowerCut(f"power is off ({op} {path})")
        if self.crash_after is not None and len(self.effects) >= self.crash_after:
            self.powered = False
            raise PowerCut(f"power cut before effect {len(self.effects) + 1} ({op} {path})")
        self.effects.append(Effect(len(self.effects) + 1, op, path))
        f = self.fault
        if f is not None and f.at == len(self.effects) and f.applies_to(op):
            self.fault_fired = True
            return f
        return None

    def _error(self, fault: Fault, op: Op, path: Path) -> StorageError:
        code = _ERRNO[fault.kind]
        return storage_error(_WHAT[op], path, OSError(code, os.strerror(code)))

    # --- the Disk protocol ----------------------------------------------------------------

    def open_write(self, path: Path, *, new: bool, truncate: bool = False) -> SimHandle:
        p = self._inside(path)
        fault = self._effect("open_write", p)
        if fault is not None:
            raise self._error(fault, "open_write", p)
        # the real disk's own open: O_NOFOLLOW, O_EXCL for new files, the same checks
        fd = open_fd(p, new=new, truncate=truncate)
        self._open.add(fd)
        if new:
            self._names.pop(p, None)  # O_EXCL: whatever the model knew there is gone
        if p not in self._names:
            # new, or created behind the Disk's back (a tool's output): a new, volatile entry
            self._names[p] = self._new_inode()
            self._data.setdefault(self._names[p], b"")
        return SimHandle(self, p, self._names[p], fd)

    def rename(self, src: Path, dst: Path) -> None:
        s, d = self._inside(src), self._inside(dst)
        fault = self._effect("rename", d)
        if fault is not None:
            raise storage_error(
                f"{_WHAT['rename']} {s} to", d, OSError(_ERRNO[fault.kind], "injected")
            )
        try:
            s.replace(d)
        except OSError as e:
            raise storage_error(f"{_WHAT['rename']} {s} to", d, e) from e
        ino = self._names.pop(s, None)
        if ino is None:  # renaming a file the Disk never saw: adopt it as volatile
            ino = self._new_inode()
            self._data[ino] = b""
        self._names[d] = ino

    def unlink(self, path: Path) -> None:
        p = self._inside(path)
        fault = self._effect("unlink", p)
        if fault is not None:
            raise self._error(fault, "unlink", p)
        try:
            p.unlink(missing_ok=True)
        except OSError as e:
            raise storage_error(_WHAT["unlink"], p, e) from e
        self._names.pop(p, None)

    def fsync_dir(self, path: Path) -> None:
        d = self._inside(path)
        fault = self._effect("fsync_dir", d)
        if fault is not None:
            raise self._error(fault, "fsync_dir", d)
        if not d.is_dir():
            raise storage_error(_WHAT["fsync_dir"], d, OSError(errno.ENOENT, "no directory"))
        for p in [p for p in self._durable_names if p.parent == d]:
            del self._durable_names[p]
        for p, ino in self._names.items():
            if p.parent == d:
                self._durable_names[p] = ino
        self._durable_dirs = {x for x in self._durable_dirs if x.parent != d or x in self._dirs}
        self._durable_dirs |= {x for x in self._dirs if x.parent == d}

    def mkdir(self, path: Path) -> None:
        p = self._inside(path)
        fault = self._effect("mkdir", p)
        if fault is not None:
            raise self._error(fault, "mkdir", p)
        try:
            p.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except OSError as e:
            raise storage_error(_WHAT["mkdir"], p, e) from e
        while p != self.root and p not in self._dirs:
            self._dirs.add(p)
            p = p.parent

    # --- power ----------------------------------------------------------------------------

    def _chain_durable(self, d: Path) -> bool:
        """``d`` and every directory above it up to root have durable entries."""
        while d != self.root:
            if d not in self._durable_dirs:
                return False
            d = d.parent
        return True

    def durable_files(self) -> dict[Path, bytes]:
        """What a reboot would find: path -> content."""
        return {
            p: self._data.get(ino, b"")
            for p, ino in self._durable_names.items()
            if self._chain_durable(p.parent)
        }

    def durable_dirs(self) -> set[Path]:
        return {d for d in self._durable_dirs if self._chain_durable(d)}

    def reboot(self) -> None:
        """Power back on: the directory becomes exactly its durable picture."""
        for fd in list(self._open):
            os.close(fd)
        self._open.clear()
        files, dirs = self.durable_files(), self.durable_dirs()
        for child in list(self.root.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        for d in sorted(dirs, key=lambda x: len(x.parts)):
            d.mkdir(exist_ok=True)
        inodes: dict[Path, int] = {}
        for p, data in files.items():
            p.write_bytes(data)
            inodes[p] = self._durable_names[p]
        self._names = dict(inodes)
        self._durable_names = dict(inodes)
        self._dirs = set(dirs)
        self._durable_dirs = set(dirs)
        self.powered = True
        self.crash_after = None
        self.fault = None
        self.effects = []
