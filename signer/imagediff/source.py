"""What every reader opens: an image file or a block device (a device's slot), and the
external tools some formats need, each run under a deadline.

A slot is a partition (or a raw file standing for one) that is usually larger than the image
written into it: the filesystem's own size says where the image ends, and the bytes after it
(left from an older, larger image, or never written) are not part of the comparison. A block
device reports size 0 to ``stat``; its length is where ``lseek(SEEK_END)`` lands.

An external tool (``sqfs2tar``) reads an image we did not make; a crafted or merely huge one
could keep it busy for ever. Each run has a deadline, after which the tool's whole process
group is killed and the diff ends with a clear error instead of a hang.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Generic, TypeVar

from repo.errors import ImageReadError, LocalError

#: Seconds an external tool may take on one image by default (``--tool-timeout``): a 600 MiB
#: squashfs streams through sqfs2tar in seconds; ten minutes is a hang, not a big image.
TOOL_TIMEOUT: Final = 600.0

T = TypeVar("T")


@dataclass(frozen=True)
class ReadOptions:
    """What every reader is given: the paths whose content a summary needs whole (dpkg's
    status, the rpm database) and the deadline of any external tool it runs."""

    keep: frozenset[str] = field(default_factory=frozenset)
    tool_timeout: float = TOOL_TIMEOUT


@contextlib.contextmanager
def open_image(path: str) -> Iterator[tuple[int, int]]:
    """A read-only descriptor of an image file or block device, and its length in bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read the image: {e.strerror or e}") from e
    try:
        yield fd, os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def image_length(path: str) -> int:
    with open_image(path) as (_, length):
        return length


def tool(name: str, package: str, what: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LocalError(
            f"{what}: reading it needs {name}, which is not installed",
            hint=f"install {package} (apt-get install {package})",
        )
    return found


@dataclass(frozen=True)
class ToolRun(Generic[T]):
    """What ``run_tool`` hands back: the consumer's result (None when it raised), its error,
    the tool's exit code and the tail of its stderr."""

    result: T | None
    error: Exception | None
    returncode: int
    stderr: str


def run_tool(
    argv: list[str], consume: Callable[[IO[bytes]], T], what: str, timeout: float
) -> ToolRun[T]:
    """Run ``argv`` with its stdout handed to ``consume`` as a stream, killed (with anything
    it started) after ``timeout`` seconds; expiry is an ``ImageReadError`` naming the tool."""
    # stderr to an anonymous file: a pipe would fill up with warnings and stall the tool
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,  # its own process group: the deadline kills all of it
        )
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        result: T | None = None
        error: Exception | None = None
        try:
            assert proc.stdout is not None
            try:
                result = consume(proc.stdout)
            except Exception as e:  # judged below, once we know whether the tool was killed
                error = e
            proc.stdout.close()
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # the consumer was interrupted (Ctrl-C): leave no child
                kill()
                proc.wait()
        if expired.is_set():
            raise ImageReadError(
                f"{what}: {Path(argv[0]).name} did not finish within {timeout:g} s; killed",
                hint="a crafted or damaged image can keep a tool busy for ever; a larger "
                "--tool-timeout helps only if the image is genuinely that large",
            )
        errors.seek(0)
        stderr = errors.read(64 << 10).decode("utf-8", "replace").strip()
    return ToolRun(result, error, rc, stderr)
