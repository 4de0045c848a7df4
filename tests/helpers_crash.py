"""Shared by the crash sweep and the trial tests: a device on v1 whose repository offers v2,
restartable from a pristine copy, and the invariant checks of DESIGN.md (I1-I3)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from signer.delta.encode import DeltaOptions, encode_delta
from tests.verifier.conftest import NOW, World, evolve, make_image
from tests.verifier.repo_sim import BASE, RepoSim, image_ref
from verifier.artifact import ArtifactInfo, BaseRef, ImageVersion
from verifier.bootctl.base import BootState
from verifier.bootctl.file import FileBootControl
from verifier.device import init_device, mark_good
from verifier.effects import Disk, RealDisk
from verifier.state import DeviceConfig, load_config, load_journal
from verifier.tuf.store import TrustedStore
from verifier.update import UpdateResult

IMAGE_SIZE = 64 * 1024


def publish_full(sim: RepoSim, v1: bytes, v2: bytes, tmp: Path) -> None:
    sim.add_full(v2, "2.0")


def publish_delta(sim: RepoSim, v1: bytes, v2: bytes, tmp: Path) -> None:
    (tmp / "v1.img").write_bytes(v1)
    (tmp / "v2.img").write_bytes(v2)
    res = encode_delta(
        tmp / "v1.img", tmp / "v2.img", tmp / "v1-v2.delta", options=DeltaOptions(workers=1)
    )
    info = ArtifactInfo(
        product="edge-gw",
        hardware=("rpi4",),
        version=ImageVersion.parse("2.0"),
        kind="delta",
        compression="otakit-delta",
        image=res.result,
        base=BaseRef(ImageVersion.parse("1.0"), res.base),
        delta_header=res.header,
    )
    sim.add_artifact(info, (tmp / "v1-v2.delta").read_bytes())
    sim.add_full(v2, "2.0")  # the fallback a device uses if the delta path fails


Publisher = Callable[[RepoSim, bytes, bytes, Path], None]
MODES = ["staged", "stream"]
KINDS = [
    pytest.param(("full", publish_full), id="full"),
    pytest.param(("delta", publish_delta), id="delta"),
]


@dataclass
class Scenario:
    """A device on v1 (slot a booted), a repository offering v2, and a pristine copy of the
    device's directory to restart every run from."""

    sim: RepoSim
    v1: bytes
    v2: bytes
    kind: str
    pristine: Path
    work: Path
    #: the update's write path: "staged" (download, then decode) or "stream" (decode while
    #: downloading); each has its own effects
    mode: str = "staged"

    def world(self, disk: Disk) -> World:
        return World(self.work, self.sim, self.v1, disk=disk)

    def update(self, w: World) -> UpdateResult:
        return w.update(mode=self.mode)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.mode}"

    def reset(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        shutil.copytree(self.pristine, self.work)


def make_scenario(tmp: Path, kind: str, publish: Publisher) -> Scenario:
    sim = RepoSim(now=NOW)
    v1 = make_image(1, IMAGE_SIZE)
    v2 = evolve(v1, 2)
    # built where every run happens (the configuration holds absolute slot paths), then kept
    work = tmp / "work"
    work.mkdir()
    w = World(work, sim, v1, disk=RealDisk())
    w.slot_a.write_bytes(v1)
    w.slot_b.write_bytes(b"")
    w.mountinfo.write_text("")
    config = DeviceConfig(BASE, "edge-gw", "rpi4", w.slot_a, w.slot_b)
    init_device(
        w.state, w.disk, config, root=sim.root_bytes, installed_version=ImageVersion.parse("1.0")
    )
    publish(sim, v1, v2, tmp)
    sim.publish()
    pristine = tmp / "pristine"
    shutil.copytree(work, pristine)
    return Scenario(sim, v1, v2, kind, pristine, work)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_invariants(s: Scenario, w: World, where: str) -> BootState:
    """I1-I3 on the directory as it is now."""
    assert w.slot_a.read_bytes() == s.v1, f"{where}: I1 the running slot a was written"
    config = load_config(w.device().paths)  # I3: parses
    journal = load_journal(w.device().paths)
    TrustedStore(w.state / "metadata", w.disk).current()
    st = FileBootControl(w.state / "boot.json", w.disk).read()
    assert config.slot_a == w.slot_a
    if st.booted == "b" or st.trial == "b" or st.primary == "b":
        got = w.slot_b.read_bytes()[: len(s.v2)]
        assert sha(got) == sha(s.v2), (
            f"{where}: I2 the boot pointer moved to slot b ({st}) but b does not hold the "
            f"signed image"
        )
    if journal.pending is not None and journal.pending.armed:
        assert journal.pending.record.image == image_ref(s.v2), where
    return st


def installed_v2(w: World, tmp: Path) -> bytes:
    """v1 and v2 published (v2 as a delta and a full image), v2 installed and committed."""
    v2 = evolve(w.v1, 2)
    w.sim.add_full(w.v1, "1.0")
    publish_delta(w.sim, w.v1, v2, tmp)
    w.sim.publish()
    w.update()
    w.reboot()
    mark_good(w.device(), NOW)
    return v2
