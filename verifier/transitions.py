"""The device's trial bookkeeping, decided once, as pure functions (invariant I4).

Each function takes the update journal, the boot state the bootloader reports, and the time,
and returns a ``Step``: the journal and boot state afterwards, the effects that get there *in
the order they must happen* (the crash sweep cuts power between any two), and a message for
the operator — or raises a typed error and changes nothing. ``verifier.device`` reads the
state, calls one of these and applies the effects through the journal file and the boot
control; it decides nothing itself. The boot states afterwards come from the same transitions
every backend is held to (``bootctl.base``), so what a step predicts is what the bootloader
will report.

The operator commands expect a journal already ``reconcile``d with the boot state: reconciling
is persisted first, on its own, so a command that is then refused still leaves the journal
agreeing with the bootloader.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from verifier.bootctl.base import BootState, Slot, committed, marked_bad, other, with_trial
from verifier.errors import NothingToDoError, SlotError
from verifier.state import Failure, Journal, Pending, SlotRecord, timestamp

# --- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveJournal:
    journal: Journal


@dataclass(frozen=True)
class BootMarkGood:
    slot: Slot


@dataclass(frozen=True)
class BootMarkBad:
    slot: Slot


@dataclass(frozen=True)
class BootSetTrial:
    slot: Slot
    tries: int


Effect = SaveJournal | BootMarkGood | BootMarkBad | BootSetTrial


@dataclass(frozen=True)
class Step:
    """Where a transition leads and how to get there."""

    journal: Journal
    boot: BootState
    effects: tuple[Effect, ...] = ()
    message: str = ""
    #: the message reports a failed trial (logged as a warning rather than as information)
    warning: bool = False


# --- reconcile: the journal after what the bootloader did --------------------------------------


def reconcile_journal(journal: Journal, st: BootState, now: datetime) -> Journal:
    """The journal after taking the boot state into account.

    A pending trial whose tries ran out (the bootloader is back on the primary slot) becomes
    a recorded failure of that image hash, so ``update`` does not install the same image
    again in a loop; a committed trial clears the pending entry.
    """
    p = journal.pending
    if p is None:
        return journal
    if not p.armed:
        if st.trial != p.slot and st.booted != p.slot:
            return journal  # the boot pointer never moved; update will finish the job
        p = replace(p, armed=True)
        journal = replace(journal, pending=p)
    if st.booted == p.slot and st.primary == p.slot:
        return replace(journal, pending=None).with_slot(p.slot, p.record)
    if st.trial == p.slot and (st.tries_left > 0 or st.booted == p.slot):
        return journal
    if st.booted == p.slot:
        why = f"slot {p.slot} was marked bad while running it"
    else:
        why = f"its tries ran out and the device booted slot {st.booted} again"
    failure = Failure(
        version=p.record.version,
        sha256=p.record.image.sha256,
        slot=p.slot,
        reason=f"trial boot of version {p.record.version} on slot {p.slot} was not "
        f"confirmed: {why}",
        at=timestamp(now),
    )
    return replace(journal, pending=None).with_failure(failure)


def reconcile(journal: Journal, st: BootState, now: datetime) -> Step:
    """Persist ``reconcile_journal``; a trial that failed but is still set is cancelled first."""
    new = reconcile_journal(journal, st, now)
    if new == journal:
        return Step(journal, st)
    effects: tuple[Effect, ...] = ()
    message, warning, boot = "", False, st
    if new.pending is None and journal.pending is not None:
        failed = new.last_failure
        if failed is not None and failed != journal.last_failure:
            message, warning = f"trial failed: {failed.reason}", True
            if st.trial == failed.slot:
                effects = (BootMarkBad(failed.slot),)
                boot = marked_bad(st, failed.slot)
        else:
            message = f"trial of slot {journal.pending.slot} committed"
    return Step(new, boot, (*effects, SaveJournal(new)), message, warning)


# --- operator commands (on a reconciled journal) ------------------------------------------------


def mark_good(journal: Journal, st: BootState) -> Step:
    """Commit the running trial slot (the health check passed)."""
    if not st.in_trial:
        raise NothingToDoError(f"slot {st.booted} is already committed; nothing to mark good")
    record = journal.pending.record if journal.pending else journal.slot(st.booted)
    new = replace(journal, pending=None)
    if record is not None:
        new = new.with_slot(st.booted, record)
    message = f"slot {st.booted} committed" + (f" (version {record.version})" if record else "")
    return Step(
        new,
        committed(st, st.booted),
        (BootMarkGood(st.booted), SaveJournal(new)),
        message,
    )


def mark_bad(
    journal: Journal,
    st: BootState,
    slot: Slot,
    now: datetime,
    *,
    reason: str = "marked bad by operator",
) -> Step:
    """Make ``slot`` unbootable; a trial pending on it is recorded as a failure, ``reason``."""
    if slot == st.booted and not st.in_trial:
        raise SlotError(
            f"slot {slot} is the running, committed slot; marking it bad would leave no "
            f"known-good slot to boot",
        )
    boot = marked_bad(st, slot)
    effects: tuple[Effect, ...] = (BootMarkBad(slot),)
    new = journal
    p = journal.pending
    if p is not None and p.slot == slot:
        new = replace(journal, pending=None).with_failure(
            Failure(
                p.record.version,
                p.record.image.sha256,
                slot,
                f"{reason} (version {p.record.version} on slot {slot})",
                timestamp(now),
            )
        )
        effects = (*effects, SaveJournal(new))
    return Step(new, boot, effects, f"slot {slot} marked bad; next boot: slot {boot.primary}")


def rollback(journal: Journal, st: BootState, tries: int, now: datetime) -> Step:
    """Go back: abandon a running or pending trial, or trial-boot the other slot."""
    if st.in_trial:
        return mark_bad(journal, st, st.booted, now, reason="rolled back by operator")
    if st.trial is not None:
        return mark_bad(journal, st, st.trial, now, reason="cancelled by operator")
    target = other(st.booted)
    rec = journal.slot(target)
    if rec is None or rec.image.sha256 in journal.failed_hashes:
        raise SlotError(
            f"rollback: slot {target} holds no known-good image "
            f"({'unknown content' if rec is None else f'version {rec.version} failed'})"
        )
    step = arm(journal, st, target, rec, tries)
    return replace(
        step,
        message=f"next boot tries slot {target} (version {rec.version}); "
        "run mark-good there to commit it",
    )


def arm(journal: Journal, st: BootState, target: Slot, record: SlotRecord, tries: int) -> Step:
    """Point the next boot at ``target`` for a trial of ``record`` (an update's last stage,
    and a rollback to the other slot).

    Journal first (written, not armed), then the boot pointer, then "armed": a power cut in
    between leaves a journal that ``reconcile`` completes from what the bootloader reports.
    """
    base = journal.with_slot(target, record)
    written = replace(base, pending=Pending(target, record, armed=False))
    armed = replace(base, pending=Pending(target, record, armed=True))
    return Step(
        armed,
        with_trial(st, target, tries),
        (SaveJournal(written), BootSetTrial(target, tries), SaveJournal(armed)),
        f"next boot tries slot {target} (version {record.version}, {tries} tries)",
    )


def forget_target(journal: Journal, st: BootState, target: Slot) -> Step:
    """I2, before an update writes ``target``: unbootable first, then the journal forgets
    what it held (and any trial pending on it), so no crash can leave it bootable half-written.
    """
    new = journal.with_slot(target, None)
    if journal.pending is not None and journal.pending.slot == target:
        new = replace(new, pending=None)
    effects: tuple[Effect, ...] = (BootMarkBad(target),)
    if new != journal:
        effects += (SaveJournal(new),)
    return Step(new, marked_bad(st, target), effects, f"slot {target} is unbootable until verified")


def clear_failures(journal: Journal, st: BootState) -> Step:
    """Forget failed images so the newest may be tried again."""
    if not journal.failures:
        raise NothingToDoError("no failed images are recorded")
    new = replace(journal, failures=())
    versions = ", ".join(str(f.version) for f in journal.failures)
    return Step(
        new,
        st,
        (SaveJournal(new),),
        f"forgot failed images ({versions}); the next update may install them again",
    )
