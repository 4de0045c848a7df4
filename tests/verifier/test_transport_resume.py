"""A staged download survives a reboot: a ``.part`` left by a previous boot is resumed with a
Range request, and whatever is in staging is verified whole (length and every signed hash)
before it is used — a corrupted file is downloaded again, never decoded."""

from __future__ import annotations

import hashlib

from tests.verifier.conftest import World, evolve


def _publish_v2(world: World) -> tuple[str, bytes, str]:
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    world.sim.publish()
    key = world.sim.target_key("edge-gw/2.0/full.img.zst")
    data = world.sim.files[key]
    return key, data, hashlib.sha256(data).hexdigest()


def test_a_part_file_from_a_previous_boot_is_resumed(world: World) -> None:
    key, data, name = _publish_v2(world)
    half = len(data) // 2
    (world.state / "staging" / f"{name}.part").write_bytes(data[:half])  # power cut, reboot
    assert str(world.update().version) == "2.0"
    assert world.sim.target_requests() == [(key, half)]


def test_a_part_file_with_corrupted_bytes_is_verified_whole_and_restarted(world: World) -> None:
    key, data, name = _publish_v2(world)
    half = len(data) // 2
    bad = bytes([data[0] ^ 0xFF]) + data[1:half]
    (world.state / "staging" / f"{name}.part").write_bytes(bad)
    assert str(world.update().version) == "2.0"
    assert world.sim.target_requests() == [(key, half), (key, 0)]
    assert world.slot_b.read_bytes()[: len(evolve(world.v1, 2))] == evolve(world.v1, 2)


def test_a_corrupted_complete_staged_file_is_downloaded_again_not_used(world: World) -> None:
    key, data, name = _publish_v2(world)
    bad = data[:-1] + bytes([data[-1] ^ 1])  # right length, wrong hash
    (world.state / "staging" / name).write_bytes(bad)
    assert str(world.update().version) == "2.0"
    assert world.sim.target_requests() == [(key, 0)]
    assert world.slot_b.read_bytes()[: len(evolve(world.v1, 2))] == evolve(world.v1, 2)
