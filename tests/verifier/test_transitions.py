"""The trial transitions as tables: (journal, boot state) -> effects in order, or a typed error.

Each step's predicted boot state is also checked against a real file boot backend after its
effects are applied, so what ``verifier.transitions`` predicts is what the bootloader reports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.verifier.conftest import NOW
from tests.verifier.repo_sim import image_ref
from verifier import transitions as t
from verifier.artifact import ImageVersion
from verifier.bootctl.base import BootState
from verifier.bootctl.file import FileBootControl
from verifier.effects import RealDisk
from verifier.errors import NothingToDoError, OtakitError, SlotError
from verifier.state import Failure, Journal, Pending, SlotRecord

V1 = SlotRecord(ImageVersion.parse("1.0"), image_ref(b"one"))
V2 = SlotRecord(ImageVersion.parse("2.0"), image_ref(b"two"))
FAIL2 = Failure(V2.version, V2.image.sha256, "b", "earlier", "2026-01-01T00:00:00+00:00")

COMMITTED_A = BootState("a", "a", None, 0)
ARMED_B = BootState("a", "a", "b", 3)  # trial set, not yet booted
RUNNING_B = BootState("b", "a", "b", 2)  # booted into the trial
BACK_ON_A = BootState("a", "a", "b", 0)  # tries ran out

J = Journal(slots=(V1, None))
J_PENDING = Journal(slots=(V1, V2), pending=Pending("b", V2, armed=True))
J_BOTH = Journal(slots=(V1, V2))

Call = Callable[[Journal, BootState], t.Step]
Case = tuple[str, Journal, BootState, Call, list[type[t.Effect]] | type[OtakitError], str]

CASES: list[Case] = [
    ("mark-good commits the running trial", J_PENDING, RUNNING_B, t.mark_good,
     [t.BootMarkGood, t.SaveJournal], "slot b committed (version 2.0)"),
    ("mark-good on a committed slot: nothing to do", J, COMMITTED_A, t.mark_good,
     NothingToDoError, "already committed"),
    ("mark-bad the pending slot records a failure", J_PENDING, ARMED_B,
     lambda j, st: t.mark_bad(j, st, "b", NOW),
     [t.BootMarkBad, t.SaveJournal], "slot b marked bad; next boot: slot a"),
    ("mark-bad the idle slot touches only the boot state", J_BOTH, COMMITTED_A,
     lambda j, st: t.mark_bad(j, st, "b", NOW), [t.BootMarkBad], "slot b marked bad"),
    ("mark-bad the running committed slot is refused", J, COMMITTED_A,
     lambda j, st: t.mark_bad(j, st, "a", NOW), SlotError, "no known-good slot"),
    ("rollback while running a trial abandons it", J_PENDING, RUNNING_B,
     lambda j, st: t.rollback(j, st, 3, NOW),
     [t.BootMarkBad, t.SaveJournal], "slot b marked bad; next boot: slot a"),
    ("rollback with a trial armed cancels it", J_PENDING, ARMED_B,
     lambda j, st: t.rollback(j, st, 3, NOW), [t.BootMarkBad, t.SaveJournal], "slot b marked bad"),
    ("rollback to a known-good other slot: journal, boot pointer, journal", J_BOTH, COMMITTED_A,
     lambda j, st: t.rollback(j, st, 3, NOW),
     [t.SaveJournal, t.BootSetTrial, t.SaveJournal], "next boot tries slot b (version 2.0)"),
    ("rollback to unknown content is refused", J, COMMITTED_A,
     lambda j, st: t.rollback(j, st, 3, NOW), SlotError, "unknown content"),
    ("rollback to a failed image is refused", J_BOTH.with_failure(FAIL2), COMMITTED_A,
     lambda j, st: t.rollback(j, st, 3, NOW), SlotError, "version 2.0 failed"),
    ("clear-failed forgets failures", J.with_failure(FAIL2), COMMITTED_A, t.clear_failures,
     [t.SaveJournal], "forgot failed images (2.0)"),
    ("clear-failed with none: nothing to do", J, COMMITTED_A, t.clear_failures,
     NothingToDoError, "no failed images"),
    ("reconcile: nothing pending, nothing to do", J, COMMITTED_A,
     lambda j, st: t.reconcile(j, st, NOW), [], ""),
    ("reconcile: tries ran out -> cancel the trial, record the failure", J_PENDING, BACK_ON_A,
     lambda j, st: t.reconcile(j, st, NOW),
     [t.BootMarkBad, t.SaveJournal], "trial failed: trial boot of version 2.0 on slot b"),
    ("reconcile: committed elsewhere -> clear pending", J_PENDING, BootState("b", "b", None, 0),
     lambda j, st: t.reconcile(j, st, NOW), [t.SaveJournal], "trial of slot b committed"),
    ("update arm: journal the written slot, boot pointer, then armed", J, COMMITTED_A,
     lambda j, st: t.arm(j, st, "b", V2, 3),
     [t.SaveJournal, t.BootSetTrial, t.SaveJournal], "next boot tries slot b (version 2.0, 3"),
    ("update forgets the target: unbootable first, then the journal", J_BOTH, COMMITTED_A,
     lambda j, st: t.forget_target(j, st, "b"), [t.BootMarkBad, t.SaveJournal], "unbootable"),
    ("update forgets a pending target and its trial", J_PENDING, ARMED_B,
     lambda j, st: t.forget_target(j, st, "b"), [t.BootMarkBad, t.SaveJournal], "unbootable"),
    ("update forgets an unknown target: only the boot state", J, COMMITTED_A,
     lambda j, st: t.forget_target(j, st, "b"), [t.BootMarkBad], "slot b is unbootable"),
    ("reconcile: boot pointer moved but not noted -> armed",
     Journal(slots=(V1, V2), pending=Pending("b", V2, armed=False)), ARMED_B,
     lambda j, st: t.reconcile(j, st, NOW), [t.SaveJournal], ""),
]  # fmt: skip


@pytest.mark.parametrize("name,journal,st,call,expect,says", CASES, ids=[c[0] for c in CASES])
def test_transition_table(
    name: str,
    journal: Journal,
    st: BootState,
    call: Call,
    expect: list[type[t.Effect]] | type[OtakitError],
    says: str,
    tmp_path: Path,
) -> None:
    if isinstance(expect, type):
        with pytest.raises(expect) as exc:
            call(journal, st)
        assert says in exc.value.message
        return
    s = call(journal, st)
    assert [type(e) for e in s.effects] == expect, name
    assert says in s.message
    saves = [e.journal for e in s.effects if isinstance(e, t.SaveJournal)]
    assert (saves[-1] if saves else journal) == s.journal, "the step's journal is the last saved"
    # what the step predicts for the boot state is what a real backend reports afterwards
    bc = FileBootControl(tmp_path / "boot.json", RealDisk())
    bc._write(st)
    for e in s.effects:
        if isinstance(e, t.BootMarkGood):
            bc.mark_good(e.slot)
        elif isinstance(e, t.BootMarkBad):
            bc.mark_bad(e.slot)
        elif isinstance(e, t.BootSetTrial):
            bc.set_trial(e.slot, e.tries)
    assert bc.read() == s.boot, name


def test_rollback_journals_unarmed_before_moving_the_boot_pointer() -> None:
    s = t.rollback(J_BOTH, COMMITTED_A, 3, NOW)
    first, trial, last = s.effects
    assert isinstance(first, t.SaveJournal) and isinstance(last, t.SaveJournal)
    assert first.journal.pending == Pending("b", V2, armed=False)
    assert trial == t.BootSetTrial("b", 3)
    assert last.journal.pending == Pending("b", V2, armed=True)


def test_refused_transitions_are_pure() -> None:
    """An error changes nothing: the caller's values are untouched (they are frozen)."""
    before = (J, COMMITTED_A)
    with pytest.raises(SlotError):
        t.mark_bad(J, COMMITTED_A, "a", NOW)
    assert before == (J, COMMITTED_A)
