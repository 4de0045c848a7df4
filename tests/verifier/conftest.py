"""Fixtures for device tests: a simulated repository and a device with two file slots."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.verifier.repo_sim import BASE, RepoSim
from verifier.artifact import ImageVersion
from verifier.bootctl.file import FileBootControl
from verifier.device import Device, init_device
from verifier.effects import Disk, RealDisk
from verifier.state import DeviceConfig
from verifier.update import UpdateOptions, UpdateResult, update

# python-tuf checks expiry against the real clock: test metadata must be signed near real time
NOW = datetime.now(UTC).replace(microsecond=0)


def make_image(seed: int, size: int = 192 * 1024) -> bytes:
    """A small image: random blocks (incompressible content) and zero runs, like a filesystem."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(size // 4096):
        blocks.append(rng.randbytes(4096) if rng.random() < 0.6 else bytes(4096))
    return b"".join(blocks)


def evolve(image: bytes, seed: int, changed: int = 6) -> bytes:
    """The next version: a few blocks rewritten, one appended (like a package update)."""
    rng = random.Random(seed)
    out = bytearray(image)
    for _ in range(changed):
        i = rng.randrange(len(image) // 4096) * 4096
        out[i : i + 4096] = rng.randbytes(4096)
    return bytes(out) + rng.randbytes(4096)


@dataclass
class World:
    tmp: Path
    sim: RepoSim
    v1: bytes
    disk: Disk = field(default_factory=RealDisk)
    hardware: str = "rpi4"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def slot_a(self) -> Path:
        return self.tmp / "slot-a.img"

    @property
    def slot_b(self) -> Path:
        return self.tmp / "slot-b.img"

    @property
    def mountinfo(self) -> Path:
        return self.tmp / "mountinfo"

    def device(self) -> Device:
        return Device.open(self.state, self.disk)

    def boot_control(self) -> FileBootControl:
        return FileBootControl(self.state / "boot.json", self.disk)

    def update(self, **kw: Any) -> UpdateResult:
        # every call runs at the same NOW: retries in these tests mean "the next cycle, later"
        kw.setdefault("ignore_backoff", True)
        options = UpdateOptions(mountinfo=self.mountinfo, **kw)
        return update(self.device(), NOW, options=options, fetcher=self.sim)

    def reboot(self, times: int = 1) -> None:
        for _ in range(times):
            self.boot_control().boot()

    def snapshot(self) -> dict[str, Any]:
        """What an attack must never change: booted slot, trusted metadata, boot pointer."""
        meta = {
            str(p.relative_to(self.state)): p.read_bytes()
            for p in sorted((self.state / "metadata").rglob("*"))
            if p.is_file()
        }
        booted = self.boot_control().read().booted
        slot = self.slot_a if booted == "a" else self.slot_b
        return {
            "booted": booted,
            "booted_slot": hashlib.sha256(slot.read_bytes()).hexdigest(),
            "metadata": meta,
            "boot": (self.state / "boot.json").read_bytes(),
        }


def make_world(tmp: Path, *, hardware: str = "rpi4", installed: str = "1.0") -> World:
    sim = RepoSim(now=NOW)
    v1 = make_image(1)
    w = World(tmp, sim, v1, hardware=hardware)
    w.slot_a.write_bytes(v1)
    w.slot_b.write_bytes(b"")
    w.mountinfo.write_text("")
    config = DeviceConfig(BASE, "edge-gw", hardware, w.slot_a, w.slot_b)
    init_device(
        w.state,
        w.disk,
        config,
        root=sim.root_bytes,
        installed_version=ImageVersion.parse(installed),
    )
    return w


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)
