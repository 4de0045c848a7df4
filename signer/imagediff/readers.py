"""Which reader an image needs: a directory is a directory; a file is what its first bytes
say (``verifier.imagetype.detect``, the one detector both sides use)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from repo.errors import ImageReadError
from signer.imagediff.dirtree import read_dir
from signer.imagediff.entry import Listing
from signer.imagediff.ext4 import read_ext4
from signer.imagediff.squashfs import read_squashfs
from signer.imagediff.tarstream import read_tar
from verifier.imagetype import HEAD_LENGTH, detect

Reader = Callable[[str, frozenset[str]], Listing]

#: Formats read file by file; every other image is compared block by block.
FILE_READERS: Final[dict[str, Reader]] = {
    "dir": read_dir,
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

    def read(self, keep: frozenset[str]) -> Listing:
        return FILE_READERS[self.type](self.path, keep)


def identify(path: str) -> Source:
    try:
        if Path(path).is_dir():
            return Source(path, "dir")
        with Path(path).open("rb") as f:
            head = f.read(HEAD_LENGTH)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read the image: {e.strerror or e}") from e
    return Source(path, detect(head) or "raw")
