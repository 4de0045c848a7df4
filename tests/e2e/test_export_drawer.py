"""Issue 12, expiry in a drawer: an export made today installs after sitting for its window
and is refused after it, with a message that says the export expired. The device's clock is
passed in (``update_from``'s ``now``): the library below the CLI, the same path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.test_end_to_end import published, sha
from tests.e2e.test_export_e2e import device, kept, make_export
from verifier.device import Device
from verifier.effects import RealDisk
from verifier.errors import MetadataError
from verifier.offline import location, update_from
from verifier.update import UpdateOptions

__all__ = ["published"]


@pytest.mark.parametrize("out", ["stick", "stick.tar"])
def test_export_installs_at_the_end_of_its_window_and_not_after(
    published: Path, tmp_path: Path, out: str
) -> None:
    made = datetime.now(UTC)
    repo, stick = make_export(published, tmp_path, out, "--valid-for", "10d")
    options = UpdateOptions(mountinfo=tmp_path / "mountinfo")
    (tmp_path / "mountinfo").write_text("")

    late = tmp_path / "late"
    late.mkdir()
    state = device(late, published, repo)
    before = kept(state, late)
    with pytest.raises(MetadataError) as e:
        update_from(
            Device.open(state, RealDisk()), location(str(stick)),
            made + timedelta(days=10, hours=1),
            options=options,
        )  # fmt: skip
    assert "the export expired at" in e.value.message, e.value.message
    assert "otakit export" in (e.value.hint or "")
    after = kept(state, late)
    assert (after["slot_a"], after["boot"]) == (before["slot_a"], before["boot"])
    # nothing of the expired export became trusted (the pinned root may be stored as verified)
    assert all("/root/" in name for name in after["metadata"]), after["metadata"]  # type: ignore[attr-defined]

    state = device(tmp_path, published, repo)
    result = update_from(
        Device.open(state, RealDisk()), location(str(stick)), made + timedelta(days=9, hours=23),
        options=options,
    )  # fmt: skip
    assert str(result.version) == "2.0"
    assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
