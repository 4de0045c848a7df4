"""``otakit-device update``: the stages of DESIGN.md, each a named function with one log line.

    refresh → resolve → preflight → download (staged) → verify → check base (delta)
    → mark target slot bad → decode into the inactive slot → fsync → re-read and hash
    → journal + trial boot (arm)

Invariants this module keeps (DESIGN.md): I1 the booted slot is only ever read; I2 the target
slot is marked bad before its first byte is written and the boot pointer moves only after the
slot re-read hashes to the signed image hash; I3 every state write goes through the ``Disk``
(``write_atomic``); I6 a rerun after a kill converges — a partial download resumes, a half
written slot is rewritten, a written-but-not-armed slot is re-verified and armed, an armed one
is recognised as pending and left alone.

Failed cycles back off across runs (``verifier.backoff``): a transport failure, or an artifact
that does not verify or decode, records the count of consecutive failures and the earliest next
attempt in the journal; an artifact that was verified whole yet does not decode is also recorded
as a failed image (never installed again) and removed from staging. A cycle that gets through
(installed, or nothing to do) resets the count.

Staged rollouts and recalls are decided by the plan (``verifier.plan``) from the signed
policy, this device's rollout seed (made here under the device lock if an older state
directory has none) and ``now``. A recall whose previous image is still in the other slot is
a ``SwitchBack``: the slot is re-hashed against the signed image and armed like a freshly
written one (the next boot tries it, ``mark-good`` commits it, an unconfirmed trial falls
back to the recalled image and records the previous one as failed); if the slot does not
hash as signed, the plan is made again without it and the newest good version is installed.

Time (``now``), randomness (``rand``, ``token``) and the ``Disk`` are parameters; there is no
global state.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from tuf.api import exceptions as tuf_exc

from verifier import backoff, transitions
from verifier.artifact import BaseRef, ImageRef, ImageVersion, Withdrawal
from verifier.bootctl.base import BootState, Slot, check_tries, other
from verifier.decode_full import decode_full
from verifier.device import Device, apply_step, hash_slot, reconcile, warn_demo_keys
from verifier.download import VerifyingReader, download_staged, staging_name
from verifier.effects import WriteHandle
from verifier.errors import (
    BaseImageMismatchError,
    ConfigError,
    ImageHashMismatchError,
    MetadataRollbackError,
    NothingToDoError,
    OtakitError,
    PreflightError,
    SecurityError,
    SlotError,
    SlotReadBackError,
    TransportError,
)
from verifier.mirror import fetcher_for
from verifier.plan import (
    Candidate,
    DeviceFacts,
    Installed,
    NothingToDo,
    Policy,
    SwitchBack,
    UpdatePlan,
    pulled_pending,
    resolve,
)
from verifier.preflight import (
    MOUNTINFO,
    check_not_mounted_rw,
    free_space,
    slot_capacity,
)
from verifier.rollout import RolloutDecision
from verifier.state import (
    DeviceConfig,
    Failure,
    Journal,
    LastCycle,
    Retry,
    SlotRecord,
    ensure_seed,
    timestamp,
)
from verifier.trusted_memo import trusted_answer
from verifier.tuf.client import TufClient, TufLimits
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import OtaFetcher

log = logging.getLogger("otakit.update")

#: (stage, bytes done, bytes total) — rendered by the CLI as a progress bar or JSON lines.
Progress = Callable[[str, int, int], None]
Mode = Literal["staged", "stream"]


@dataclass(frozen=True)
class UpdateOptions:
    mode: Mode = "staged"
    tries: int | None = None
    version: ImageVersion | None = None
    allow_delta: bool = True
    mountinfo: Path = MOUNTINFO
    limits: TufLimits = field(default_factory=TufLimits)
    #: run even before the journal's earliest next attempt (``update --now``)
    ignore_backoff: bool = False
    #: skip the waves of a signed rollout (``update --now``; never a halt or a recall)
    override_waves: bool = False
    backoff: backoff.Backoff = field(default_factory=backoff.Backoff)
    #: the repository for this run instead of the configured one: a local mirror or an
    #: export (``update --from``), as ``verifier.mirror.repo_url`` normalises it
    repo_url: str | None = None
    #: the repository is a medium brought to the device (``update --from``): its metadata is
    #: committed only once the install verified (a bad stick changes no trust), and a medium
    #: older than what the device trusts is installed against the device's own unexpired
    #: metadata (an export made before the device's last online refresh)
    from_medium: bool = False


@dataclass(frozen=True)
class UpdateResult:
    version: ImageVersion
    slot: Slot
    artifact: str
    kind: str
    fell_back: bool
    tries: int
    #: the recall of the running version this cycle went away from ("recalled: REASON")
    recall: str | None = None
    #: ``--now`` was given: the waves of a signed rollout were skipped
    waves_overridden: bool = False
    #: the rollout decision for the version installed (None for a recall switch-back)
    rollout: RolloutDecision | None = None
    #: what the plan came from: ``refresh`` (the repository's or medium's metadata, now
    #: trusted) or ``trusted`` (the medium's was older: the device's own metadata)
    planned_from: str = "refresh"

    @property
    def outcome(self) -> str:
        """``LastCycle.outcome`` of this cycle."""
        if self.kind == "switch":
            return "recalled-switch"
        return "installed" if self.recall is None else "recalled-install"

    def to_dict(self) -> dict[str, Any]:
        """The ``update --json`` result (docs/CLI.md)."""
        return {
            "event": "done",
            "version": str(self.version),
            "slot": self.slot,
            "artifact": self.artifact,
            "kind": self.kind,
            "fell_back": self.fell_back,
            "tries": self.tries,
            "outcome": self.outcome,
            "recalled": self.recall,
            "waves_overridden": self.waves_overridden,
            "rollout": None if self.rollout is None else self.rollout.to_dict(),
            "planned_from": self.planned_from,
        }

    def message(self) -> str:
        recalled = "" if self.recall is None else f"recalled: {self.recall}; "
        trusted = (
            "the medium's metadata is older than this device's, so the image was checked "
            "against the device's own trusted metadata; "
            if self.planned_from == "trusted"
            else ""
        )
        return recalled + trusted + self._what()

    def _what(self) -> str:
        if self.kind == "switch":
            return (
                f"slot {self.slot} still holds version {self.version} as signed "
                f"(re-hashed, nothing downloaded); the next boot tries it ({self.tries} tries), "
                "then run mark-good"
            )
        via = f"{self.kind} artifact {self.artifact}"
        if self.kind == "resumed":
            via = "the copy an interrupted run had already written"
        if self.fell_back:
            via += " (delta failed, used the full artifact)"
        return (
            f"version {self.version} written to slot {self.slot} via {via} and "
            f"verified; the next boot tries it ({self.tries} tries), then run mark-good"
        )


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Name the stage in any error raised inside it (one place, uniform)."""
    try:
        yield
    except NothingToDoError:
        raise
    except OtakitError as e:
        if not e.message.startswith(f"{name}: "):
            e.message = f"{name}: {e.message}"
            e.args = (e.message,)
        raise


@dataclass
class _Cycle:
    """What a running cycle has reached, for the backoff bookkeeping once it ends."""

    installing: bool = False
    #: an artifact verified whole that failed to decode, and the error it raised
    undecodable: tuple[Candidate, Slot, OtakitError] | None = None


def update(
    dev: Device,
    now: datetime,
    *,
    options: UpdateOptions = UpdateOptions(),
    fetcher: OtaFetcher | None = None,
    progress: Progress | None = None,
    rand: Callable[[], float] = random.random,
    token: Callable[[int], bytes] = secrets.token_bytes,
) -> UpdateResult:
    """Install the newest suitable image into the inactive slot and arm a trial boot.

    Raises ``NothingToDoError`` when there is nothing to install (exit code 0), also while
    an earlier failure's backoff runs (unless ``options.ignore_backoff``). ``token`` makes
    the rollout seed of a state directory from before seeds existed.
    """
    if options.override_waves:
        log.warning(
            "update --now: the waves of signed rollouts are overridden for this cycle "
            "(a halt, a withdrawal and a recall still apply)"
        )
    if not options.ignore_backoff:
        wait = backoff.gate(dev.journal().retry, now, options.backoff)
        if wait is not None:
            log.info("backoff: %s", wait)
            raise NothingToDoError(wait)
    # Ours, not TufClient's default, so the cycle's received bytes can be reported.
    fetcher = fetcher or fetcher_for(_config(dev, options).repo_url, options.limits.transfer)
    cycle = _Cycle()
    try:
        result = _update(dev, now, options, fetcher, progress, cycle, token)
    except NothingToDoError:
        _save_retry(dev, None, None)
        _remember_trusted(dev)
        raise
    except (TransportError, SecurityError) as e:
        # Recorded where the backoff is (a local refusal, e.g. a retargeted slot link,
        # writes nothing at all, and says why on the spot).
        if isinstance(e, TransportError) or cycle.installing:
            last = LastCycle(
                timestamp(now),
                "failed",
                fetcher.bytes_received,
                None,
                e.kind(),
                e.message,
                options.override_waves,
            )
            # A stick or mirror given for this run (``--from``) says nothing about the
            # network: its failure must not hold back the next online cycle.
            policy = options.backoff if options.repo_url is None else None
            _record_failed_cycle(dev, cycle, e, now, rand(), policy, last)
        raise
    done = LastCycle(
        timestamp(now),
        result.outcome,
        fetcher.bytes_received,
        str(result.version),
        result.kind,
        "" if result.recall is None else f"recalled: {result.recall}",
        result.waves_overridden,
    )
    _save_retry(dev, None, None, done)
    _remember_trusted(dev)
    return result


def _remember_trusted(dev: Device) -> None:
    """Every refresh replaces the trusted timestamp, so the next ``status`` would check the
    stored metadata with python-tuf again; this cycle has it loaded already, so it leaves
    the answer for ``status`` (``verifier/trusted_memo.py``)."""
    trusted_answer(dev.paths, dev.disk, dev.config.product)


def _record_failed_cycle(
    dev: Device,
    cycle: _Cycle,
    e: OtakitError,
    now: datetime,
    rand: float,
    policy: backoff.Backoff | None,
    last: LastCycle,
) -> None:
    journal = dev.journal()
    failure = None
    if cycle.undecodable is not None and cycle.undecodable[2] is e:
        c, slot, _ = cycle.undecodable
        failure = Failure(
            c.info.version,
            c.info.image.sha256,
            slot,
            f"artifact {c.path} matches its signed hashes but does not decode: {e.message}",
            timestamp(now),
        )
    retry = journal.retry
    if policy is not None:  # None: the backoff state stays as it was
        retry = backoff.after_failure(journal.retry, e, now, rand, policy)
        log.warning(
            "backoff: %d consecutive failed cycle(s); next attempt after %s",
            retry.failures,
            timestamp(retry.not_before),
        )
    _save_retry(dev, retry, failure, last)


def _save_retry(
    dev: Device, retry: Retry | None, failure: Failure | None, last: LastCycle | None = None
) -> None:
    """Persist the backoff state (and a failed image, and how the cycle ended); a write
    error here must not hide the cycle's own error, so it is logged, not raised."""
    try:
        journal = dev.journal()
        new = replace(journal, retry=retry)
        if last is not None:
            new = replace(new, last_cycle=last)
        if failure is not None:
            new = new.with_failure(failure)
        if new != journal:
            dev.save(new)
    except OtakitError as err:
        log.warning("cannot record the backoff state in the journal: %s", err.message)


def _config(dev: Device, options: UpdateOptions) -> DeviceConfig:
    """The device's configuration with this run's repository (``options.repo_url``)."""
    if options.repo_url is None:
        return dev.config
    return replace(dev.config, repo_url=options.repo_url)


def _update(
    dev: Device,
    now: datetime,
    options: UpdateOptions,
    fetcher: OtaFetcher | None,
    progress: Progress | None,
    cycle: _Cycle,
    token: Callable[[int], bytes],
) -> UpdateResult:
    tries = check_tries(options.tries if options.tries is not None else dev.config.tries)
    with stage("preflight"):
        dev.slot_paths()  # before anything is written: both slots still name what they did
    warn_demo_keys(dev)
    journal, st = reconcile(dev, now)
    if st.in_trial:
        raise SlotError(
            f"the running slot {st.booted} is an uncommitted trial; refusing to overwrite the "
            f"last known-good slot {st.primary}",
            hint="run 'otakit-device mark-good' (healthy) or 'otakit-device rollback' first",
        )
    booted = st.booted
    target = other(booted)
    installed = journal.slot(booted)
    if installed is None:
        raise ConfigError(f"the journal does not know which image the booted slot {booted} holds")
    with stage("rollout-seed"):
        seed = ensure_seed(dev.disk, dev.paths, token)
    p = journal.pending
    prev = journal.slot(target)
    facts = DeviceFacts(
        product=dev.config.product,
        hardware=dev.config.hardware,
        installed=Installed(installed.version, installed.image),
        failed=journal.failed_hashes,
        pending=None if p is None or not p.armed else Installed(p.record.version, p.record.image),
        image_type=dev.config.image_type,
        seed=seed,
        now=now,
        other=None if prev is None else Installed(prev.version, prev.image),
    )
    overridden = options.override_waves
    config = _config(dev, options)
    with TufClient(
        dev.paths,
        config.metadata_url,
        config.targets_url,
        dev.disk,
        now=now,
        fetcher=fetcher,
        limits=options.limits,
        defer_commit=options.from_medium,
    ) as tuf:
        older: MetadataRollbackError | None = None
        if options.from_medium:
            candidates, older = stage_refresh_medium(tuf, facts.product)
        else:
            candidates = stage_refresh(tuf, facts.product)
        planned_from = "refresh" if older is None else "trusted"
        cancelled = ""
        if (pulled := pulled_pending(candidates, facts)) is not None:
            journal, st, cancelled = stage_cancel_pulled(dev, journal, st, pulled, now)
            facts = replace(facts, pending=None, failed=journal.failed_hashes)
        policy = Policy(options.version, options.allow_delta, options.override_waves)
        try:
            plan = stage_resolve(candidates, facts, policy)
        except NothingToDoError as e:
            if older is None:
                if cancelled:
                    raise NothingToDoError(f"{cancelled}; {e.message}") from e
                raise
            # The medium's older metadata is the news, and an error: nothing on it is newer.
            raise MetadataRollbackError(
                f"{older.message}; and this device's own trusted metadata selects nothing to "
                f"install from it ({e.message})",
                hint=older.hint,
            ) from e
        if isinstance(plan, SwitchBack):
            assert prev is not None
            try:
                stage_verify_slot(dev, target, plan.image, progress)
            except (ImageHashMismatchError, SlotReadBackError) as e:
                log.warning("recall: %s; installing the newest good version instead", e.message)
                plan = stage_resolve(candidates, replace(facts, other=None), policy)
                assert not isinstance(plan, SwitchBack)
            else:
                tuf.commit()
                stage_arm(dev, journal, st, target, prev, tries)
                return UpdateResult(
                    plan.version, target, "", "switch", False, tries, plan.recall.reason,
                    overridden, planned_from=planned_from,
                )  # fmt: skip
        recall = None if plan.recall is None else plan.recall.reason
        record = SlotRecord(plan.version, plan.image)
        if p is not None and not p.armed and p.slot == target and p.record == record:
            log.info("resume: slot %s already holds version %s; re-verifying", target, plan.version)
            try:
                stage_verify_slot(dev, target, plan.image, progress)
            except (ImageHashMismatchError, SlotReadBackError) as e:
                log.warning("resume: %s; writing the slot again", e.message)
            else:
                tuf.commit()
                stage_arm(dev, journal, st, target, record, tries)
                return UpdateResult(
                    plan.version, target, "", "resumed", False, tries, recall, overridden,
                    plan.rollout, planned_from,
                )  # fmt: skip
        stage_preflight(dev, plan, target, booted, options)
        fell_back = False
        used = plan.artifact
        cycle.installing = True
        try:
            try:
                journal = _install(
                    dev, tuf, journal, st, plan.artifact, target, options, progress, cycle
                )
            except (SecurityError, TransportError) as e:
                # Local errors (ENOSPC, EIO on the slot) would hit the full artifact too.
                if plan.fallback is None:
                    raise
                log.warning(
                    "delta path failed (%s); falling back to %s", e.message, plan.fallback.path
                )
                used, fell_back = plan.fallback, True
                journal = _install(
                    dev, tuf, journal, st, plan.fallback, target, options, progress, cycle
                )
        except TransportError as e:
            if planned_from == "trusted":
                e.hint = (
                    "the medium's metadata is older than this device's, whose metadata selects "
                    f"version {plan.version}: bring an export of version {plan.version} or newer"
                )
            raise
        stage_verify_slot(dev, target, plan.image, progress)
        tuf.commit()
        stage_arm(dev, journal, st, target, record, tries)
    _clean_staging(dev)
    return UpdateResult(
        plan.version, target, used.path, used.info.kind, fell_back, tries, recall, overridden,
        plan.rollout, planned_from,
    )  # fmt: skip


def _install(
    dev: Device,
    tuf: TufClient,
    journal: Journal,
    st: BootState,
    c: Candidate,
    target: Slot,
    options: UpdateOptions,
    progress: Progress | None,
    cycle: _Cycle,
) -> Journal:
    booted = st.booted
    url = tuf.target_url(c)
    if options.mode == "staged":
        path = stage_download(dev, tuf.fetcher, url, c, progress)
        if c.info.base is not None:
            stage_check_base(dev, booted, c.info.base)
        journal = stage_mark_bad(dev, journal, st, target)
        try:
            with path.open("rb") as src:
                stage_decode(dev, src, c, booted, target, progress)
        except SecurityError as e:
            # Verified whole against its signed hashes, yet it does not decode: the signed
            # artifact itself is bad. Kept, it would be decoded again on every cycle.
            dev.disk.unlink(path)
            cycle.undecodable = (c, target, e)
            raise
        return journal
    if c.info.base is not None:
        stage_check_base(dev, booted, c.info.base)
    journal = stage_mark_bad(dev, journal, st, target)
    with stage("download"):
        try:
            _, chunks = tuf.fetcher.fetch_from(url, 0)
        except (tuf_exc.DownloadError, OSError) as e:
            raise map_tuf_error(e, f"download of {c.path}") from e
    reader = VerifyingReader(chunks, c, _report(progress, "download", c.length))
    stage_decode(dev, cast(BinaryIO, reader), c, booted, target, progress)
    with stage("verify"):
        reader.finish()
    log.info("verify: %s matches its signed length and hashes (streamed)", c.path)
    return journal


# --- the stages ------------------------------------------------------------------------------


def stage_refresh(tuf: TufClient, product: str | None = None) -> list[Candidate]:
    with stage("refresh"):
        candidates = tuf.refresh(product)
    log.info("refresh: trusted metadata up to date, %d otakit targets", len(candidates))
    return candidates


def stage_refresh_medium(
    tuf: TufClient, product: str | None
) -> tuple[list[Candidate], MetadataRollbackError | None]:
    """``stage_refresh`` from a medium: an export made before this device's last refresh
    holds older metadata, refused as a rollback, yet its images may be exactly what the
    device's own metadata signs. Then the plan comes from that trusted metadata (checked
    unexpired, as a refresh would) and only the images are read from the medium, each
    verified against it: nothing the medium says is trusted. Returns the rollback too: if
    the device's metadata selects nothing, it is the error to report."""
    try:
        return stage_refresh(tuf, product), None
    except MetadataRollbackError as e:
        with stage("refresh"):
            candidates = tuf.trusted_candidates(product)
        log.warning(
            "refresh: %s; planning from this device's own trusted metadata, reading only "
            "the images from the medium",
            e.message,
        )
        return candidates, e


def stage_resolve(
    candidates: list[Candidate], facts: DeviceFacts, policy: Policy
) -> UpdatePlan | SwitchBack:
    with stage("resolve"):
        plan = resolve(candidates, facts, policy)
    if isinstance(plan, NothingToDo):
        log.info("resolve: nothing to do: %s", plan.reason)
        raise NothingToDoError(plan.reason)
    if isinstance(plan, SwitchBack):
        log.warning(
            "resolve: version %s is recalled (%s); the other slot holds version %s: "
            "switching back to it",
            plan.leaving,
            plan.recall.reason,
            plan.version,
        )
        return plan
    if plan.recall is not None:
        log.warning(
            "resolve: version %s is recalled (%s); going to version %s",
            facts.installed.version,
            plan.recall.reason,
            plan.version,
        )
    fallback = f", fallback {plan.fallback.path}" if plan.fallback else ""
    log.info("resolve: version %s via %s%s", plan.version, plan.artifact.path, fallback)
    return plan


def stage_preflight(
    dev: Device, plan: UpdatePlan, target: Slot, booted: Slot, options: UpdateOptions
) -> None:
    with stage("preflight"):
        tpath = dev.slot_path(target)
        capacity, _ = slot_capacity(tpath)
        if capacity < plan.image.length:
            raise PreflightError(
                f"slot {target} ({tpath}) holds at most {capacity} bytes; the signed image "
                f"needs {plan.image.length}"
            )
        check_not_mounted_rw(tpath, options.mountinfo)
        if options.mode == "staged":
            need = max(c.length for c in (plan.artifact, plan.fallback) if c is not None)
            part = dev.paths.staging / f"{staging_name(plan.artifact)}.part"
            have = part.stat().st_size if part.exists() else 0
            free = free_space(dev.paths.staging)
            if free + have < need:
                raise PreflightError(
                    f"staging {dev.paths.staging} has {free} bytes free; the download needs "
                    f"{need - have} more",
                    hint="free space, or use 'update --mode stream' (no staging copy)",
                )
    log.info("preflight: slot %s (%s) can take %d bytes", target, tpath, plan.image.length)


def stage_download(
    dev: Device, fetcher: OtaFetcher, url: str, c: Candidate, progress: Progress | None
) -> Path:
    with stage("download"):
        dev.disk.mkdir(dev.paths.staging)
        path = download_staged(
            fetcher,
            url,
            c,
            dev.paths.staging,
            dev.disk,
            progress=_report(progress, "download", c.length),
        )
    log.info(
        "download+verify: %s (%d bytes) matches its signed length and hashes", c.path, c.length
    )
    return path


def stage_check_base(dev: Device, booted: Slot, base: BaseRef) -> None:
    with stage("check-base"):
        found = hash_slot(dev.slot_path(booted), base.image.length)
        if found.sha256 != base.image.sha256:
            raise BaseImageMismatchError(
                f"booted slot {booted} is not the delta's base image {base.version}: expected "
                f"sha256 {base.image.sha256}, found {found.sha256}"
            )
    log.info("check-base: booted slot %s is base version %s", booted, base.version)


def stage_cancel_pulled(
    dev: Device,
    journal: Journal,
    st: BootState,
    pulled: tuple[ImageVersion, Withdrawal],
    now: datetime,
) -> tuple[Journal, BootState, str]:
    """Disarm a trial whose release was withdrawn or recalled before it was booted; the
    image is recorded as failed, so no later cycle arms it again."""
    version, w = pulled
    assert journal.pending is not None
    slot = journal.pending.slot
    taken = "recalled" if w.recall else "withdrawn"
    step = apply_step(
        dev,
        transitions.mark_bad(
            journal, st, slot, now, reason=f"cancelled before its trial boot: {taken}: {w.reason}"
        ),
    )
    message = (
        f"cancelled the trial of version {version} armed on slot {slot}: the publisher "
        f"{taken} it ({w.reason}); the next boot stays on slot {step.boot.primary}"
    )
    log.warning("%s", message)
    return step.journal, step.boot, message


def stage_mark_bad(dev: Device, journal: Journal, st: BootState, target: Slot) -> Journal:
    """I2: the target slot is unbootable, and the journal forgets its content, before writing."""
    with stage("mark-bad"):
        step = apply_step(dev, transitions.forget_target(journal, st, target))
    log.info("mark-bad: %s", step.message)
    return step.journal


def stage_decode(
    dev: Device,
    src: BinaryIO,
    c: Candidate,
    booted: Slot,
    target: Slot,
    progress: Progress | None,
) -> None:
    tpath = dev.slot_path(target)
    report = _report(progress, "decode", c.info.image.length)
    with stage("decode"):
        out = dev.disk.open_write(tpath, new=False)
        try:
            if c.info.kind == "full":
                decode_full(src, out, c.info.image, progress=report)
            else:
                _apply_delta(dev, src, c, booted, out, report)
            out.fsync()
        finally:
            out.close()
    log.info("decode: %s written to slot %s and synced", c.path, target)


def _apply_delta(
    dev: Device,
    src: BinaryIO,
    c: Candidate,
    booted: Slot,
    out: WriteHandle,
    report: Callable[[int], None] | None,
) -> None:
    from verifier.delta.decode import apply_delta  # only devices taking a delta load it

    info = c.info
    assert info.base is not None and info.delta_header is not None
    with dev.slot_path(booted).open("rb") as base:
        apply_delta(
            src,
            base,
            out,
            base_ref=info.base.image,
            result_ref=info.image,
            header_ref=info.delta_header,
            progress=report,
            # stage_check_base already hashed the booted slot before anything was written;
            # hashing the whole base again would double the slowest read of the update. A
            # base changing underneath still cannot pass: every op's output and the final
            # image are hashed against signed values.
            check_base=False,
        )


def stage_verify_slot(
    dev: Device, target: Slot, image: ImageRef, progress: Progress | None
) -> None:
    with stage("verify-slot"):
        found = hash_slot(dev.slot_path(target), image.length)
        if found.sha256 != image.sha256:
            raise SlotReadBackError(
                f"slot {target} reads back wrong: expected sha256 {image.sha256} as signed, "
                f"found {found.sha256}",
                hint="the medium may be failing; the boot pointer was not moved",
            )
    if progress is not None:
        progress("verify-slot", image.length, image.length)
    log.info("verify-slot: slot %s reads back as the signed image", target)


def stage_arm(
    dev: Device, journal: Journal, st: BootState, target: Slot, record: SlotRecord, tries: int
) -> None:
    """Journal the written slot, move the boot pointer, then note that it moved."""
    with stage("arm"):
        step = apply_step(dev, transitions.arm(journal, st, target, record, tries))
    log.info("arm: %s", step.message)


def _report(progress: Progress | None, name: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda done: progress(name, done, total)


def _clean_staging(dev: Device) -> None:
    staging = dev.paths.staging
    if not staging.is_dir():
        return
    for p in staging.iterdir():
        if p.is_file():
            dev.disk.unlink(p)
