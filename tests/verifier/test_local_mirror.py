"""Issue 12: a mirror that is not HTTP (a directory on a USB stick) gets exactly the online
checks, and a medium pulled out mid-read is a clear error with nothing changed.

The repository is the simulator's (tests/verifier/repo_sim.py) written to a directory; the
device reaches it through ``verifier.mirror`` as ``update`` does for a ``file://`` URL.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Literal

import pytest
from tuf.api import exceptions as tuf_exc

from tests.verifier.conftest import NOW, World, evolve
from verifier import mirror
from verifier.errors import (
    MediumError,
    MetadataError,
    OtakitError,
    TargetVerificationError,
    UnsafeMirrorError,
    UsageError,
)
from verifier.tuf import localfetch
from verifier.tuf.localfetch import DirMedium, LocalFetcher, MediumReadError, file_url
from verifier.update import UpdateOptions, update


def write_mirror(w: World, where: Path) -> Path:
    for name, data in w.sim.files.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return where


def publish_v2(w: World) -> bytes:
    v2 = evolve(w.v1, 2)
    w.sim.add_full(v2, "2.0")
    w.sim.publish()
    return v2


def from_mirror(w: World, usb: Path, fetcher: Any = None) -> Any:
    options = UpdateOptions(mountinfo=w.mountinfo, ignore_backoff=True, repo_url=file_url(usb))
    return update(w.device(), NOW, options=options, fetcher=fetcher)


def assert_nothing_lost(w: World, before: dict[str, Any]) -> None:
    """The running slot and the boot state are as they were. Trusted metadata may have
    advanced to what verified (as online: a good refresh is kept even when the target is
    bad), never to anything else; the rollback tests compare it whole."""
    after = w.snapshot()
    for key in ("booted", "booted_slot", "boot"):
        assert after[key] == before[key], key


def target_file(w: World, usb: Path) -> Path:
    (path,) = [usb / k for k in w.sim.files if k.startswith("targets/")]
    return path


def test_update_from_a_mirror_directory_installs_as_online(world: World, tmp_path: Path) -> None:
    v2 = publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")
    result = from_mirror(world, usb)
    assert (str(result.version), result.slot, result.kind) == ("2.0", "b", "full")
    assert world.slot_b.read_bytes() == v2
    assert world.device().journal().last_cycle.bytes_downloaded > 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/media/usb/otakit", "file:///media/usb/otakit"),
        ("/media/usb/otakit/", "file:///media/usb/otakit"),
        ("file:///media/usb/otakit", "file:///media/usb/otakit"),
        ("/media/my stick", "file:///media/my%20stick"),
        ("https://updates.example/repo", "https://updates.example/repo"),
    ],
)
def test_repo_url_accepts_a_path_or_a_file_url(text: str, expected: str) -> None:
    assert mirror.repo_url(text) == expected


@pytest.mark.parametrize(
    "text", ["media/usb", "file://host/x", "file:relative", "ftp://x/y", "file:///x?q=1"]
)
def test_repo_url_refuses_what_is_not_a_repository_location(text: str) -> None:
    with pytest.raises(UsageError, match="expected a repository location"):
        mirror.repo_url(text)


def test_tampered_image_on_the_stick_is_refused_nothing_changed(
    world: World, tmp_path: Path
) -> None:
    publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")
    art = target_file(world, usb)
    data = bytearray(art.read_bytes())
    data[100] ^= 1
    art.write_bytes(bytes(data))
    before = world.snapshot()
    with pytest.raises(TargetVerificationError, match="as signed"):
        from_mirror(world, usb)
    assert_nothing_lost(world, before)


def test_older_metadata_on_the_stick_than_trusted_is_refused(world: World, tmp_path: Path) -> None:
    old = write_mirror(world, tmp_path / "old")  # before 2.0 was published
    publish_v2(world)
    from_mirror(world, write_mirror(world, tmp_path / "new"))
    for name in ("timestamp.json",):
        assert (old / "metadata" / name).exists()
    before = world.snapshot()
    with pytest.raises(MetadataError, match=r"older metadata|version"):
        from_mirror(world, old)
    assert world.snapshot()["metadata"] == before["metadata"]


def test_a_symlink_on_the_mirror_is_not_followed(world: World, tmp_path: Path) -> None:
    publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")
    art = target_file(world, usb)
    outside = tmp_path / "outside.bin"
    os.rename(art, outside)
    art.symlink_to(outside)  # same bytes, but reached through a link
    before = world.snapshot()
    with pytest.raises(UnsafeMirrorError, match="symbolic link"):
        from_mirror(world, usb)
    assert_nothing_lost(world, before)


def test_a_linked_directory_on_the_mirror_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "timestamp.json").write_text("{}")
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "metadata").symlink_to(tmp_path / "elsewhere")
    f = LocalFetcher(file_url(tmp_path / "usb"), DirMedium(tmp_path / "usb"))
    with pytest.raises(localfetch.UnsafeMirrorPathError, match="symbolic link"):
        f.fetch(file_url(tmp_path / "usb" / "metadata" / "timestamp.json"))


@pytest.mark.parametrize(
    "rel", ["metadata/../../etc/passwd", "metadata/./timestamp.json", "metadata//x", "a\\b"]
)
def test_a_url_cannot_leave_the_mirror(tmp_path: Path, rel: str) -> None:
    f = LocalFetcher(file_url(tmp_path), DirMedium(tmp_path))
    with pytest.raises(localfetch.UnsafeMirrorPathError, match="plain names"):
        f.fetch(file_url(tmp_path) + "/" + rel)


def test_a_url_outside_the_mirror_root_is_refused(tmp_path: Path) -> None:
    f = LocalFetcher(file_url(tmp_path / "usb"), DirMedium(tmp_path / "usb"))
    with pytest.raises(localfetch.UnsafeMirrorPathError, match="inside the mirror"):
        f.fetch(file_url(tmp_path / "usb-other" / "x"))


def test_a_fifo_on_the_mirror_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "timestamp.json")
    f = LocalFetcher(file_url(tmp_path), DirMedium(tmp_path))
    with pytest.raises(localfetch.UnsafeMirrorPathError, match="regular file"):
        f.fetch(file_url(tmp_path / "timestamp.json"))


def test_a_missing_file_answers_like_http_404(tmp_path: Path) -> None:
    """ngclient looks for root N+1 until a 404: a mirror must answer the same way."""
    f = LocalFetcher(file_url(tmp_path), DirMedium(tmp_path))
    with pytest.raises(tuf_exc.DownloadHTTPError) as e:
        f.fetch(file_url(tmp_path / "metadata" / "2.root.json"))
    assert e.value.status_code == 404


def test_resume_reads_from_the_offset(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(bytes(range(200)))
    f = LocalFetcher(file_url(tmp_path), DirMedium(tmp_path), chunk_size=64)
    start, chunks = f.fetch_from(file_url(tmp_path / "f"), 150)
    assert (start, b"".join(chunks)) == (150, bytes(range(150, 200)))
    start, chunks = f.fetch_from(file_url(tmp_path / "f"), 500)  # past the end: from 0
    assert (start, len(b"".join(chunks))) == (0, 200)


class PulledMedium(DirMedium):
    """The stick is pulled once ``after`` bytes of a target were read: its files vanish
    (the directory of the mount point stays, empty) or reads fail with EIO."""

    def __init__(self, root: Path, how: str) -> None:
        super().__init__(root)
        self.how = how

    def open(self, parts: tuple[str, ...]) -> localfetch.Region:
        region = super().open(parts)
        if parts[0] == "targets":
            if self.how == "shrink":
                os.truncate(self.root.joinpath(*parts), region.size // 2)
            elif self.how == "eio":
                os.close(region.fd)
                region.fd = _eio_fd()
        return region


def _eio_fd() -> int:
    """A descriptor whose pread fails (a directory: EISDIR stands in for EIO here)."""
    return os.open("/", os.O_RDONLY | os.O_DIRECTORY)


@pytest.mark.parametrize("how", ["shrink", "eio"])
@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_medium_pulled_mid_read_is_a_transport_error_nothing_changed(
    world: World, tmp_path: Path, how: str, mode: Literal["staged", "stream"]
) -> None:
    publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")
    before = world.snapshot()
    fetcher = LocalFetcher(file_url(usb), PulledMedium(usb, how), chunk_size=4096)
    options = UpdateOptions(
        mountinfo=world.mountinfo, ignore_backoff=True, repo_url=file_url(usb), mode=mode
    )
    with pytest.raises(MediumError) as e:
        update(world.device(), NOW, options=options, fetcher=fetcher)
    assert "medium" in e.value.message and e.value.exit_code == 4
    assert_nothing_lost(world, before)


def test_mirror_root_removed_between_files_says_the_medium_is_gone(
    world: World, tmp_path: Path
) -> None:
    publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")

    class Vanishing(DirMedium):
        def open(self, parts: tuple[str, ...]) -> localfetch.Region:
            if parts[0] == "targets":
                import shutil

                shutil.rmtree(self.root)
            return super().open(parts)

    before = world.snapshot()
    with pytest.raises(MediumError, match=r"mounted|removed"):
        from_mirror(world, usb, LocalFetcher(file_url(usb), Vanishing(usb)))
    assert_nothing_lost(world, before)


def test_eio_while_reading_maps_to_medium_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)

    def pread(fd: int, n: int, off: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pread", pread)
    f = LocalFetcher(file_url(tmp_path), DirMedium(tmp_path))
    with pytest.raises(MediumReadError, match="Input/output error"):
        b"".join(f.fetch(file_url(tmp_path / "f")))


def test_a_growing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    f = LocalFetcher(file_url(tmp_path), DirMedium(tmp_path), chunk_size=10)
    chunks = f.fetch(file_url(path))
    next(chunks)
    with path.open("ab") as out:
        out.write(b"more")
    with pytest.raises(MediumReadError, match="grew"):
        b"".join(chunks)


def test_errors_are_ours_with_exit_codes() -> None:
    assert issubclass(MediumError, OtakitError) and MediumError.exit_code == 4
    assert UnsafeMirrorError.exit_code == 3


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_update_from_a_tar_of_the_repository_layout(
    world: World, tmp_path: Path, mode: Literal["staged", "stream"]
) -> None:
    import tarfile

    from verifier.offline import update_from

    v2 = publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")
    tar = tmp_path / "stick.tar"
    with tarfile.open(tar, "w") as t:
        for name in sorted(world.sim.files):
            t.add(usb / name, arcname=name)
    options = UpdateOptions(mountinfo=world.mountinfo, mode=mode)
    result = update_from(world.device(), file_url(tar), NOW, options=options)
    assert (str(result.version), result.slot) == ("2.0", "b")
    assert world.slot_b.read_bytes() == v2


def test_a_pulled_stick_does_not_hold_back_the_next_online_cycle(
    world: World, tmp_path: Path
) -> None:
    """Regression: a failed ``update --from`` set the network backoff, so the device's next
    timer-driven online update waited for a stick's failure."""
    publish_v2(world)
    usb = write_mirror(world, tmp_path / "usb")
    fetcher = LocalFetcher(file_url(usb), PulledMedium(usb, "shrink"), chunk_size=4096)
    with pytest.raises(MediumError):
        from_mirror(world, usb, fetcher)
    journal = world.device().journal()
    assert journal.retry is None
    assert journal.last_cycle is not None and journal.last_cycle.outcome == "failed"
