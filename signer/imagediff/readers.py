"""Which reader an image needs: a directory is a directory; a file is what its first bytes
say (``verifier.imagetype.detect``, the one detector both sides use)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from repo.errors import ImageReadError
from signer.imagediff.dirtree import read_dir
from signer.imagediff.entry import Listing
from signer.imagediff.erofs import read_erofs
from signer.imagediff.ext4 import read_ext4
from signer.imagediff.source import ReadOptions, open_image
from signer.imagediff.squashfs import read_squashfs
from signer.imagediff.tarstream import read_tar
from verifier.imagetype import HEAD_LENGTH, detect

Reader = Callable[[str, ReadOptions], Listing]

#: Formats read file by file; every other image is compared block by block.
FILE_READERS: Final[dict[str, Reader]] = {
    "dir": read_dir,
    "erofs": read_erofs,
    "ext4": read_ext4,
    "squashfs": read_squashfs,
    "tar": read_tar,
}


@dataclass(frozen=True)
class Source:
    path: str
    type: str  # "dir", an ImageType name, or "raw" when nothing was recognised

    @property
    def file_level(self) -> bool:
        return self.type in FILE_READERS

    def read(self, opts: ReadOptions) -> Listing:
        return FILE_READERS[self.type](self.path, opts)


def identify(path: str) -> Source:
    """A directory, or an image file or block device (a slot) typed by its first bytes."""
    try:
        if Path(path).is_dir():
            return Source(path, "dir")
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read the image: {e.strerror or e}") from e
    with open_image(path) as (fd, length):
        try:
            head = os.pread(fd, min(HEAD_LENGTH, length), 0)
        except OSError as e:
            raise ImageReadError(f"{path}: cannot read the image: {e.strerror or e}") from e
    return Source(path, detect(head) or "raw")
