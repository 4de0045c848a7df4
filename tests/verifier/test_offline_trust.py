"""Issue 12: what a medium (``update --from``) may change in the device's trust.

Two rules beyond the online path's (tests/verifier/test_local_mirror.py):

* a stick whose metadata is genuine and newer but whose image is bad leaves the trusted
  metadata exactly as it was: the medium's metadata is committed only after the install
  verified;
* an export made before the device's last online refresh holds metadata older than the
  device's, refused as a rollback; its images are then checked against the device's own
  trusted metadata (unexpired at the reference time) and installed, nothing of the medium's
  metadata trusted.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest

from tests.verifier.conftest import NOW, World
from tests.verifier.test_local_mirror import publish_v2, target_file, write_mirror
from verifier.errors import (
    MetadataExpiredError,
    MetadataRollbackError,
    SecurityError,
    TargetVerificationError,
    TransportError,
)
from verifier.offline import update_from
from verifier.tuf.client import TufClient
from verifier.tuf.localfetch import file_url
from verifier.update import UpdateOptions

Mode = Literal["staged", "stream"]


def from_stick(w: World, usb: Path, mode: Mode = "staged", now: object = NOW) -> object:
    options = UpdateOptions(mountinfo=w.mountinfo, mode=mode)
    return update_from(w.device(), file_url(usb), now, options=options)  # type: ignore[arg-type]


def refresh_online(w: World) -> None:
    """The device refreshes from the repository without installing anything."""
    dev = w.device()
    with TufClient(
        dev.paths,
        dev.config.metadata_url,
        dev.config.targets_url,
        dev.disk,
        now=NOW,
        fetcher=w.sim,
    ) as tuf:
        tuf.refresh()


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_a_bad_image_under_newer_genuine_metadata_leaves_trust_unchanged(
    world: World, tmp_path: Path, mode: Mode
) -> None:
    publish_v2(world)  # genuine metadata, newer than what the device trusts
    usb = write_mirror(world, tmp_path / "usb")
    art = target_file(world, usb)
    data = bytearray(art.read_bytes())
    data[100] ^= 1
    art.write_bytes(bytes(data))
    before = world.snapshot()
    with pytest.raises(SecurityError, match=r"as signed|signed hash"):
        from_stick(world, usb, mode)
    assert world.snapshot() == before  # trusted metadata included, byte for byte


def test_a_good_stick_commits_its_metadata_once_installed(world: World, tmp_path: Path) -> None:
    publish_v2(world)
    before = world.snapshot()["metadata"]
    result = from_stick(world, write_mirror(world, tmp_path / "usb"))
    assert result.planned_from == "refresh"  # type: ignore[attr-defined]
    assert world.snapshot()["metadata"] != before


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_an_export_older_than_the_last_online_refresh_installs_against_trusted_metadata(
    world: World, tmp_path: Path, mode: Mode
) -> None:
    v2 = publish_v2(world)
    export = write_mirror(world, tmp_path / "export")  # made now, holds 2.0
    world.sim.publish(bump_targets=False)  # the repository re-signs timestamp and snapshot
    refresh_online(world)  # ... and the device saw that, but had no time to download 2.0
    before = world.snapshot()["metadata"]
    result = from_stick(world, export, mode)
    assert (str(result.version), result.planned_from) == ("2.0", "trusted")  # type: ignore[attr-defined]
    assert "older than this device's" in result.message()  # type: ignore[attr-defined]
    assert world.slot_b.read_bytes() == v2
    assert world.snapshot()["metadata"] == before


def test_an_older_export_is_refused_when_the_devices_own_metadata_expired(
    world: World, tmp_path: Path
) -> None:
    publish_v2(world)
    export = write_mirror(world, tmp_path / "export")
    world.sim.publish(bump_targets=False, timestamp_expires=NOW + timedelta(days=1))
    refresh_online(world)
    before = world.snapshot()
    with pytest.raises(MetadataExpiredError, match=r"this device's trusted timestamp .* expired"):
        from_stick(world, export, now=NOW + timedelta(days=2))
    assert world.snapshot() == before


def test_a_tampered_image_on_an_older_export_is_refused(world: World, tmp_path: Path) -> None:
    publish_v2(world)
    export = write_mirror(world, tmp_path / "export")
    world.sim.publish(bump_targets=False)
    refresh_online(world)
    art = target_file(world, export)
    data = bytearray(art.read_bytes())
    data[7] ^= 0x40
    art.write_bytes(bytes(data))
    before = world.snapshot()
    with pytest.raises(TargetVerificationError, match="as signed"):
        from_stick(world, export)
    assert world.snapshot() == before


def test_an_older_export_without_the_image_the_device_trusts_says_so(
    world: World, tmp_path: Path
) -> None:
    export = write_mirror(world, tmp_path / "export")  # before 2.0 was published
    publish_v2(world)
    refresh_online(world)
    before = world.snapshot()
    with pytest.raises(TransportError, match="not on the mirror") as e:
        from_stick(world, export)
    assert "older than this device's" in (e.value.hint or "")
    assert world.snapshot() == before


def test_an_older_stick_offering_nothing_newer_is_a_rollback_error(
    world: World, tmp_path: Path
) -> None:
    old = write_mirror(world, tmp_path / "old")  # before 2.0 was published
    publish_v2(world)
    from_stick(world, write_mirror(world, tmp_path / "new"))  # the device runs 2.0's install
    before = world.snapshot()
    with pytest.raises(MetadataRollbackError, match=r"older|must be >=") as e:
        from_stick(world, old)
    assert "selects nothing to install" in e.value.message
    assert world.snapshot() == before
