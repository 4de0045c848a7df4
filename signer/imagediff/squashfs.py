"""squashfs through ``sqfs2tar`` (squashfs-tools-ng): the image becomes a tar stream on a
pipe, read by the tar reader; nothing touches the disk. ``-r .`` keeps the root inode's
metadata, ``-s`` makes a file that tar cannot hold an error rather than a silent skip. The
superblock records where the image ends (``bytes_used``), so a slot larger than the image
reads the same as the image alone."""

from __future__ import annotations

from typing import IO

from repo.errors import ImageFormatError
from signer.imagediff.entry import Listing
from signer.imagediff.source import ReadOptions, run_tool, tool
from signer.imagediff.tarstream import read_tar_stream


def read_squashfs(path: str, opts: ReadOptions) -> Listing:
    sqfs2tar = tool("sqfs2tar", "squashfs-tools-ng", path)

    def consume(stream: IO[bytes]) -> Listing:
        return read_tar_stream(stream, path, opts.keep)

    run = run_tool([sqfs2tar, "-r", ".", "-s", path], consume, path, opts.tool_timeout)
    if run.error is not None and not isinstance(run.error, ImageFormatError):
        raise run.error
    if run.returncode != 0 or run.error is not None or run.result is None:
        why = (
            run.stderr.splitlines()[-1]
            if run.stderr
            else (str(run.error) if run.error else f"exit {run.returncode}")
        )
        raise ImageFormatError(
            f"{path}: not a readable squashfs image: {why}",
            hint="the image is corrupt or truncated; check it with unsquashfs -s",
        )
    return run.result
