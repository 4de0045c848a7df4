"""The crash sweep (issue 4): a whole update on a disk that loses power after effect k, for
every k, and that fails effect k with every fault a disk can produce; after each, DESIGN.md's
invariants I1-I6 must hold and a rerun must converge.

One clean run counts the effects; then, for each crash point, the device's directory is reset
to the same starting state, the update runs on a ``SimDisk(crash_after=k)``, the power comes
back (every unsynced write dropped), the bootloader runs (``FileBootControl.boot()``), and the
checks below run. Artifact kinds are a parameter: adding one is one entry in
``tests.helpers_crash.KINDS``.

Checked after every cut and every fault:
* I1 - the running slot (a) still holds exactly v1;
* I2 - the boot pointer points at slot b (trial or booted) only if b holds exactly the signed
  v2 image;
* I3 - boot state, journal, configuration and trusted metadata parse;
* I4/I5 - nothing is left that blocks the next cycle: an update (or, if the device already
  booted the trial, a mark-good) brings it to v2; a second update has nothing to do;
* I6 - that convergence happens from every single crash point.

The same cut-after-every-effect treatment is given to committing a trial (mark-good) and to
recording a trial whose tries ran out: neither may turn into the opposite outcome.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers_crash import (
    KINDS,
    MODES,
    Scenario,
    check_invariants,
    make_scenario,
    publish_full,
    sha,
)
from tests.simdisk import FAULT_KINDS, Fault, PowerCut, SimDisk, applies
from tests.verifier.conftest import NOW, World, evolve
from verifier.artifact import ImageVersion
from verifier.bootctl.file import FileBootControl
from verifier.device import mark_good
from verifier.errors import LocalError, NothingToDoError, OtakitError
from verifier.report import status
from verifier.state import load_journal


def converge(s: Scenario, w: World, where: str) -> None:
    """I4-I6: from whatever state the cut left, the device ends on v2 pending or committed."""
    st = FileBootControl(w.state / "boot.json", w.disk).read()
    if st.in_trial:  # the bootloader already went to the new slot: let the health check commit
        mark_good(w.device(), NOW)
    else:
        try:
            result = s.update(w)
            assert result.version == ImageVersion.parse("2.0") and result.slot == "b", where
        except NothingToDoError as e:
            raise AssertionError(f"{where}: rerun did nothing ({e.message}) but {st}") from e
        st = FileBootControl(w.state / "boot.json", w.disk).read()
        assert (st.trial, st.tries_left) == ("b", 3), f"{where}: after rerun {st}"
        with pytest.raises(NothingToDoError):  # idempotent: nothing to do the second time
            s.update(w)
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


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=KINDS)
def scenario(request: pytest.FixtureRequest, tmp_path: Path, mode: str) -> Scenario:
    kind, publish = request.param
    s = make_scenario(tmp_path, kind, publish)
    s.mode = mode
    return s


def _clean_run(s: Scenario) -> list[tuple[int, str]]:
    s.reset()
    disk = SimDisk(s.work)
    w = s.world(disk)
    result = s.update(w)
    assert (result.kind, result.fell_back) == (s.kind, False), "the sweep must take its own path"
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
        where = f"{s.name}: power cut after effect {k}/{n}"
        s.reset()
        disk = SimDisk(s.work, crash_after=k)
        w = s.world(disk)
        try:
            s.update(w)
            assert k == n, f"{where}: the update finished before its last effect"
        except PowerCut:
            assert k < n
        _power_cycle(disk, w)
        st = check_invariants(s, w, where)
        label = "booted new (trial)" if st.in_trial else f"on a, trial={st.trial}"
        outcomes[label] = outcomes.get(label, 0) + 1
        converge(s, w, where)
    with capsys.disabled():
        print(f"\n[crash sweep {s.name}] {n + 1} crash points over {n} effects: {outcomes}")


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
            where = f"{s.name}: {kind} at effect {k} ({op})"
            s.reset()
            disk = SimDisk(s.work, fault=Fault(k, kind))
            w = s.world(disk)
            try:
                s.update(w)
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
        print(f"\n[fault sweep {s.name}] {runs} injected faults: {errors}")


def test_a_trial_that_never_confirms_rolls_back_and_is_not_retried(tmp_path: Path) -> None:
    """Health check never confirming (file backend): after the tries the device is back on the
    old slot, the journal says why, and the next update does not install the same image."""
    s = make_scenario(tmp_path, "full", publish_full)
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
    assert failure is not None and failure.sha256 == sha(s.v2)
    assert "tries ran out" in failure.reason
    check_invariants(s, w, "after rollback")
    # a newer image is installed again
    v3 = evolve(s.v2, 3)
    s.sim.add_full(v3, "3.0")
    s.sim.publish()
    assert w.update().version == ImageVersion.parse("3.0")


def test_power_cut_during_mark_good(tmp_path: Path) -> None:
    """A cut while committing never turns a healthy trial into a recorded failure: after the
    reboot the device is either committed on v2 or still on its trial, and mark-good again
    commits."""
    s = make_scenario(tmp_path, "full", publish_full)
    s.reset()
    w = s.world(SimDisk(s.work))
    s.update(w)
    w.reboot()  # running the trial on b
    snapshot = tmp_path / "in-trial"
    shutil.copytree(s.work, snapshot)
    clean = SimDisk(s.work)
    mark_good(s.world(clean).device(), NOW)
    n = clean.count
    assert n >= 10
    for k in range(n + 1):
        where = f"mark-good cut after effect {k}/{n}"
        shutil.rmtree(s.work)
        shutil.copytree(snapshot, s.work)
        disk = SimDisk(s.work, crash_after=k)
        try:
            mark_good(s.world(disk).device(), NOW)
        except PowerCut:
            assert k < n
        _power_cycle(disk, s.world(disk))
        w = s.world(SimDisk(s.work))
        st = check_invariants(s, w, where)
        assert st.booted == "b", f"{where}: {st}"
        if st.in_trial:
            mark_good(w.device(), NOW)
        journal = status(w.device(), NOW).journal  # every command reconciles the journal first
        assert journal.failures == (), f"{where}: a healthy trial was recorded as failed"
        st = FileBootControl(w.state / "boot.json", w.disk).read()
        assert (st.primary, st.trial) == ("b", None), f"{where}: {st}"
        assert journal.pending is None and journal.slot("b") is not None, where


def test_power_cut_while_recording_a_failed_trial(tmp_path: Path) -> None:
    """The tries ran out; the next command records the failure. A cut anywhere in that leaves
    a device that still refuses to reinstall the failed image (no loop, I4)."""
    s = make_scenario(tmp_path, "full", publish_full)
    s.reset()
    w = s.world(SimDisk(s.work))
    s.update(w)
    w.reboot(4)  # three trial boots, then back on a
    snapshot = tmp_path / "rolled-back"
    shutil.copytree(s.work, snapshot)
    clean = SimDisk(s.work)
    with pytest.raises(NothingToDoError):
        s.update(s.world(clean))
    n = clean.count
    for k in range(n + 1):
        where = f"failure recording cut after effect {k}/{n}"
        shutil.rmtree(s.work)
        shutil.copytree(snapshot, s.work)
        disk = SimDisk(s.work, crash_after=k)
        try:
            s.update(s.world(disk))
            raise AssertionError(f"{where}: the failed image was installed again")
        except (PowerCut, NothingToDoError):
            pass
        _power_cycle(disk, s.world(disk))
        w = s.world(SimDisk(s.work))
        st = check_invariants(s, w, where)
        assert (st.booted, st.trial) == ("a", None), f"{where}: {st}"
        with pytest.raises(NothingToDoError, match="failed its trial"):
            s.update(w)
        failure = load_journal(w.device().paths).last_failure
        assert failure is not None and "tries ran out" in failure.reason, where
