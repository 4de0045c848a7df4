"""The crash sweep (issue 4): a whole update on a disk that loses power after effect k, for
every k, and that fails effect k with every fault a disk can produce; after each, DESIGN.md's
invariants I1-I6 must hold and a rerun must converge.

One clean run counts the effects; then, for each crash point, the device's directory is reset
to the same starting state, the update runs on a ``SimDisk(crash_after=k)``, the power comes
back (every unsynced write dropped), the bootloader runs (``FileBootControl.boot()``), and the
checks below run. Artifact kinds are a parameter: adding one is one entry in ``KINDS``.

Checked after every cut and every fault:
* I1 — the running slot (a) still holds exactly v1;
* I2 — the boot pointer points at slot b (trial or booted) only if b holds exactly the signed
  v2 image;
* I3 — boot state, journal, configuration and trusted metadata parse;
* I4/I5 — nothing is left that blocks the next cycle: an update (or, if the device already
  booted the trial, a mark-good) brings it to v2; a second update has nothing to do;
* I6 — that convergence happens from every single crash point.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.simdisk import FAULT_KINDS, Fault, PowerCut, SimDisk, applies
from tests.verifier.conftest import NOW, World, evolve, make_image
from tests.verifier.repo_sim import BASE, RepoSim, image_ref
from verifier.artifact import ArtifactInfo, BaseRef, ImageVersion
from verifier.bootctl.base import BootState
from verifier.bootctl.file import FileBootControl
from verifier.device import init_device, mark_good
from verifier.effects import RealDisk
from verifier.errors import LocalError, NothingToDoError, OtakitError
from verifier.state import DeviceConfig, load_config, load_journal
from verifier.tuf_client import TrustedStore

IMAGE_SIZE = 64 * 1024

_HAVE_DELTA = (
    importlib.util.find_spec("signer.delta.encode") is not None
    and importlib.util.find_spec("verifier.delta.decode") is not None
)


def _publish_full(sim: RepoSim, v1: bytes, v2: bytes, tmp: Path) -> None:
    sim.add_full(v2, "2.0")


def _publish_delta(sim: RepoSim, v1: bytes, v2: bytes, tmp: Path) -> None:
    from signer.delta.encode import DeltaOptions, encode_delta

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
KINDS = [
    pytest.param(("full", _publish_full), id="full"),
    pytest.param(
        ("delta", _publish_delta),
        id="delta",
        marks=pytest.mark.skipif(not _HAVE_DELTA, reason="delta encoder/decoder not present"),
    ),
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

    def world(self, disk: SimDisk) -> World:
        return World(self.work, self.sim, self.v1, disk=disk)

    def reset(self) -> None:
        if self.work.exists():
            shutil.rmtree(self.work)
        shutil.copytree(self.pristine, self.work)


def _scenario(tmp: Path, kind: str, publish: Publisher) -> Scenario:
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


def _sha(data: bytes) -> str:
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
        assert _sha(got) == _sha(s.v2), (
            f"{where}: I2 the boot pointer moved to slot b ({st}) but b does not hold the "
            f"signed image"
        )
    if journal.pending is not None and journal.pending.armed:
        assert journal.pending.record.image == image_ref(s.v2), where
    return st


def converge(s: Scenario, w: World, where: str) -> None:
    """I4-I6: from whatever state the cut left, the device ends on v2 pending or committed."""
    st = FileBootControl(w.state / "boot.json", w.disk).read()
    if st.in_trial:  # the bootloader already went to the new slot: let the health check commit
        mark_good(w.device(), NOW)
    else:
        try:
            result = w.update()
            assert result.version == ImageVersion.parse("2.0") and result.slot == "b", where
        except NothingToDoError as e:
            raise AssertionError(f"{where}: rerun did nothing ({e.message}) but {st}") from e
        st = FileBootControl(w.state / "boot.json", w.disk).read()
        assert (st.trial, st.tries_left) == ("b", 3), f"{where}: after rerun {st}"
        with pytest.raises(NothingToDoError):  # idempotent: nothing to do the second time
            w.update()
        w.reboot()
        mark_good(w.device(), NOW)
    st = check_invariants(s, w, where + " (converged)")
    assert (st.booted, st.primary, st.trial) == ("b", "b", None), f"{where}: {st}"
    assert w.slot_b.read_bytes()[: len(s.v2)] == s.v2
    slot_b = load_journal(w.device().paths).slot("b")
    assert slot_b is not None and slot_b.version == ImageVersion.parse("2.0"), where


def _power_cycle(disk: SimDisk, w: World) -> None:
    disk.reboot()
    FileBootControl(w.state / "boot.json", disk).boot()  # the bootloader's part


@pytest.fixture(params=KINDS)
def scenario(request: pytest.FixtureRequest, tmp_path: Path) -> Scenario:
    kind, publish = request.param
    return _scenario(tmp_path, kind, publish)


def _clean_run(s: Scenario) -> list[tuple[int, str]]:
    s.reset()
    disk = SimDisk(s.work)
    w = s.world(disk)
    w.update()
    ops = [(e.index, e.op) for e in disk.effects]
    check_invariants(s, w, "clean run")
    return ops


def test_power_cut_after_every_effect(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    s = scenario
    ops = _clean_run(s)
    n = len(ops)
    assert n > 20, "the update should have many effects"
    assert {op for _, op in ops} >= {"open_write", "pwrite", "fsync", "rename", "fsync_dir"}
    outcomes: dict[str, int] = {}
    for k in range(n + 1):
        where = f"{s.kind}: power cut after effect {k}/{n}"
        s.reset()
        disk = SimDisk(s.work, crash_after=k)
        w = s.world(disk)
        try:
            w.update()
            assert k == n, f"{where}: the update finished before its last effect"
        except PowerCut:
            assert k < n
        _power_cycle(disk, w)
        st = check_invariants(s, w, where)
        label = "booted new (trial)" if st.in_trial else f"on a, trial={st.trial}"
        outcomes[label] = outcomes.get(label, 0) + 1
        converge(s, w, where)
    with capsys.disabled():
        print(f"\n[crash sweep {s.kind}] {n + 1} crash points over {n} effects: {outcomes}")


def test_fault_at_every_effect(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    s = scenario
    ops = _clean_run(s)
    runs = 0
    errors: dict[str, int] = {}
    for k, op in ops:
        for kind in FAULT_KINDS:
            if not applies(kind, op):  # type: ignore[arg-type]
                continue
            runs += 1
            where = f"{s.kind}: {kind} at effect {k} ({op})"
            s.reset()
            disk = SimDisk(s.work, fault=Fault(k, kind))
            w = s.world(disk)
            try:
                w.update()
                outcome = "completed"
            except OtakitError as e:
                assert isinstance(e, LocalError), (
                    f"{where}: expected a local (disk) error, found {type(e).__name__}: "
                    f"{e.diagnostic()}"
                )
                outcome = type(e).__name__
            assert disk.fault_fired, where
            errors[outcome] = errors.get(outcome, 0) + 1
            check_invariants(s, w, where + " (running)")
            _power_cycle(disk, w)
            check_invariants(s, w, where + " (after reboot)")
            converge(s, w, where)
    with capsys.disabled():
        print(f"\n[fault sweep {s.kind}] {runs} injected faults: {errors}")


def test_a_trial_that_never_confirms_rolls_back_and_is_not_retried(tmp_path: Path) -> None:
    """Health check never confirming (file backend): after the tries the device is back on the
    old slot, the journal says why, and the next update does not install the same image."""
    s = _scenario(tmp_path, "full", _publish_full)
    s.reset()
    w = s.world(SimDisk(s.work))
    w.update()
    booted = []
    for _ in range(4):
        w.reboot()
        booted.append(FileBootControl(w.state / "boot.json", w.disk).read().booted)
    assert booted == ["b", "b", "b", "a"]
    with pytest.raises(NothingToDoError, match="failed its trial"):
        w.update()
    journal = load_journal(w.device().paths)
    failure = journal.last_failure
    assert failure is not None and failure.sha256 == _sha(s.v2)
    assert "tries ran out" in failure.reason
    check_invariants(s, w, "after rollback")
    # a newer image is installed again
    v3 = evolve(s.v2, 3)
    s.sim.add_full(v3, "3.0")
    s.sim.publish()
    assert w.update().version == ImageVersion.parse("3.0")
