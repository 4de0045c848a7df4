"""The export tar reader's own checks (``verifier.exporttar``): the index refuses what the
issue lists, and a stick changed or pulled after indexing is a medium error."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc

from verifier.errors import MediumError, UnsafeMirrorError
from verifier.exporttar import TarMedium
from verifier.tuf.localfetch import LocalFetcher, MediumReadError, file_url


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_members_are_read_in_place_with_resume(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "x.tar", {"metadata/a.json": b"0123456789", "b": b"bb"})
    f = LocalFetcher(file_url(tar), TarMedium.index(tar), chunk_size=3)
    assert b"".join(f.fetch(file_url(tar) + "/metadata/a.json")) == b"0123456789"
    start, chunks = f.fetch_from(file_url(tar) + "/metadata/a.json", 4)
    assert (start, b"".join(chunks)) == (4, b"456789")
    with pytest.raises(tuf_exc.DownloadHTTPError):
        f.fetch(file_url(tar) + "/metadata/2.root.json")


def test_a_tar_changed_after_indexing_is_a_medium_error(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "x.tar", {"a": b"x" * 5000})
    f = LocalFetcher(file_url(tar), TarMedium.index(tar))
    os.truncate(tar, 3000)
    with pytest.raises(MediumReadError, match="changed while it was read"):
        b"".join(f.fetch(file_url(tar) + "/a"))


def test_a_tar_shrinking_mid_read_is_a_medium_error(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "x.tar", {"a": b"x" * 50_000})
    f = LocalFetcher(file_url(tar), TarMedium.index(tar), chunk_size=1000)
    chunks = f.fetch(file_url(tar) + "/a")
    next(chunks)
    os.truncate(tar, 5000)
    with pytest.raises(MediumReadError, match="medium was removed"):
        b"".join(chunks)


def test_a_compressed_or_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(4000))
    with pytest.raises(UnsafeMirrorError, match="uncompressed tar"):
        TarMedium.index(tmp_path / "x.tar")


def test_a_missing_end_marker_is_truncation(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "x.tar", {"a": b"x" * 512})
    data = tar.read_bytes()
    tar.write_bytes(data[: 512 + 512])  # header and data, no end blocks
    with pytest.raises(MediumError, match="truncated"):
        TarMedium.index(tar)
