"""squashfs through ``sqfs2tar`` (squashfs-tools-ng): the image becomes a tar stream on a
pipe, read by the tar reader; nothing touches the disk. ``-r .`` keeps the root inode's
metadata, ``-s`` makes a file that tar cannot hold an error rather than a silent skip."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from repo.errors import ImageFormatError, LocalError
from signer.imagediff.entry import Listing
from signer.imagediff.tarstream import read_tar_stream


def read_squashfs(path: str, keep: frozenset[str]) -> Listing:
    tool = shutil.which("sqfs2tar")
    if tool is None:
        raise LocalError(
            f"{path}: reading squashfs needs sqfs2tar, which is not installed",
            hint="install squashfs-tools-ng (apt-get install squashfs-tools-ng)",
        )
    # stderr to an anonymous file: a pipe would fill up with warnings and stall the tool
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [tool, "-r", ".", "-s", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        ) as proc,
    ):
        assert proc.stdout is not None
        error: ImageFormatError | None = None
        try:
            listing = read_tar_stream(proc.stdout, path, keep)
        except ImageFormatError as e:
            error = e
        proc.stdout.close()
        rc = proc.wait()
        errors.seek(0)
        stderr = errors.read(64 << 10).decode("utf-8", "replace").strip()
    if rc != 0 or error is not None:
        why = stderr.splitlines()[-1] if stderr else (error.message if error else f"exit {rc}")
        raise ImageFormatError(
            f"{path}: not a readable squashfs image: {why}",
            hint="the image is corrupt or truncated; check it with unsquashfs -s",
        )
    return listing
