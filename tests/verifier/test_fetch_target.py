"""``otakit-device fetch`` (``verifier.fetch_target``) against the simulated repository: any
target, verified, and FILE replaced only by verified bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.verifier.conftest import NOW, World
from verifier.errors import NoSuchTargetError, TargetVerificationError, UsageError
from verifier.fetch_target import fetch_target

BUNDLE = b"container bundle " * 1000


def publish_bundle(w: World) -> str:
    w.sim.add_target("apps/bundle.tar", BUNDLE, {"app": "web", "release": 3})
    w.sim.publish()
    return w.sim.target_key("apps/bundle.tar")


def test_fetch_writes_the_verified_file_and_returns_its_custom(
    world: World, tmp_path: Path
) -> None:
    publish_bundle(world)
    out = tmp_path / "got.tar"
    result = fetch_target(world.device(), "apps/bundle.tar", out, NOW, fetcher=world.sim)
    assert out.read_bytes() == BUNDLE
    assert result.to_dict()["custom"] == {"app": "web", "release": 3}
    assert result.to_dict()["length"] == len(BUNDLE)


@pytest.mark.parametrize(
    "mutate", [lambda b: b[:-1] + b"!", lambda b: b + b"x", lambda b: b[:-10]],
    ids=["altered", "longer", "shorter"],
)  # fmt: skip
def test_a_bad_download_leaves_the_old_file_and_no_temp(
    world: World, tmp_path: Path, mutate: object
) -> None:
    key = publish_bundle(world)
    world.sim.files[key] = mutate(world.sim.files[key])  # type: ignore[operator]
    out = tmp_path / "out" / "got.tar"
    out.parent.mkdir()
    out.write_bytes(b"the previous, good version")
    with pytest.raises(TargetVerificationError, match="signed"):
        fetch_target(world.device(), "apps/bundle.tar", out, NOW, fetcher=world.sim)
    assert out.read_bytes() == b"the previous, good version"
    assert [p.name for p in out.parent.iterdir()] == ["got.tar"]


def test_an_unsigned_name_is_a_usage_error(world: World, tmp_path: Path) -> None:
    publish_bundle(world)
    with pytest.raises(NoSuchTargetError, match="not signed"):
        fetch_target(world.device(), "apps/other.tar", tmp_path / "x", NOW, fetcher=world.sim)
    assert not (tmp_path / "x").exists()


def test_out_must_be_a_file_in_an_existing_directory(world: World, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="existing directory"):
        fetch_target(world.device(), "a", tmp_path / "no" / "x", NOW, fetcher=world.sim)
    with pytest.raises(UsageError, match="a directory"):
        fetch_target(world.device(), "a", tmp_path, NOW, fetcher=world.sim)


def test_a_file_target_is_not_an_image_candidate(world: World, tmp_path: Path) -> None:
    """The image plan ignores it: update has nothing to do."""
    from verifier.errors import NothingToDoError

    publish_bundle(world)
    with pytest.raises(NothingToDoError):
        world.update()
