"""Device configuration and the update journal: what this device is and what its slots hold.

Both are frozen values parsed strictly from JSON in the state directory and written only with
``write_atomic`` through a ``Disk`` (invariant I3): after a power cut a file holds its old or
its new content, never a mix. The journal is the device's memory between runs — which image
each slot holds as signed, which trial is pending, and which images failed their trial so the
same image is not installed again in a loop (I4).

State directory layout::

    STATE/config.json      DeviceConfig
    STATE/journal.json     Journal
    STATE/root.json        the pinned bootstrap root (trust anchor), written once by init
    STATE/metadata/        trusted TUF metadata (see verifier.tuf.store)
    STATE/staging/         partial and complete downloads
    STATE/boot.json        boot state of the ``file`` backend (by default)
    STATE/rollout-seed     32 secret random bytes: this device's place in staged rollouts
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from verifier import strictjson
from verifier.artifact import ImageRef, ImageVersion
from verifier.bootctl.base import SLOTS, Slot, check_tries, parse_slot
from verifier.bootctl.options import check_options
from verifier.effects import Disk, write_atomic
from verifier.errors import (
    ArtifactSchemaError,
    BootControlError,
    ConfigError,
    OtakitError,
    RolloutSeedError,
    UsageError,
)
from verifier.imagetype import IMAGE_TYPES, ImageType, is_image_type
from verifier.preflight import require_absolute
from verifier.rollout import SEED_BYTES

CONFIG_SCHEMA = 1
JOURNAL_SCHEMA = 1
#: Failed images remembered; the oldest are forgotten first (bounded state file).
MAX_FAILED = 64

_T = TypeVar("_T")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_OPT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}\Z")


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def journal(self) -> Path:
        return self.root / "journal.json"

    @property
    def pinned_root(self) -> Path:
        return self.root / "root.json"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def rollout_seed(self) -> Path:
        return self.root / "rollout-seed"


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceConfig:
    repo_url: str
    product: str
    hardware: str
    slot_a: Path
    slot_b: Path
    boot_backend: str = "file"
    boot_options: tuple[tuple[str, str], ...] = ()
    tries: int = 3
    #: What the slots hold; when set, targets signed as another type are refused.
    #: Absent from configs written before it existed (they load as None: no check).
    image_type: ImageType | None = None
    #: what slot_a and slot_b resolved to (every symlink followed) at init; None in a
    #: configuration written before they were recorded (see ``preflight.check_slot_paths``)
    slot_targets: tuple[Path, Path] | None = None

    def __post_init__(self) -> None:
        if self.image_type is not None and not is_image_type(self.image_type):
            raise ConfigError(
                f"image_type: expected one of {', '.join(IMAGE_TYPES)}, found {self.image_type!r}"
            )
        if not re.match(r"^(https?://[^\s]+|file:///[^\s]*)\Z", self.repo_url):
            raise ConfigError(
                f"repo_url: expected an http(s) or file:/// URL, found {self.repo_url!r}"
            )
        for what, value in (("product", self.product), ("hardware", self.hardware)):
            if not _NAME_RE.match(value):
                raise ConfigError(f"{what}: expected 1-64 chars of [a-z0-9._-], found {value!r}")
        slot_hint = "pass the slot as an absolute path (e.g. /dev/disk/by-partlabel/...)"
        for what, path in (("slot a", self.slot_a), ("slot b", self.slot_b)):
            require_absolute(path, what, UsageError, slot_hint)
        for what, path in zip(("slot a", "slot b"), self.slot_targets or (), strict=False):
            require_absolute(path, f"resolved {what}", UsageError, slot_hint)
        if self.slot_a == self.slot_b:
            raise ConfigError(f"slots a and b must differ, both are {self.slot_a}")
        if not _NAME_RE.match(self.boot_backend):
            raise ConfigError(f"boot_backend: invalid name {self.boot_backend!r}")
        for k, _ in self.boot_options:
            if not _OPT_RE.match(k):
                raise ConfigError(f"boot option name: expected [a-z][a-z0-9_-]*, found {k!r}")
        check_options(self.options, self.boot_backend, UsageError)
        try:
            check_tries(self.tries)
        except BootControlError as e:
            raise ConfigError(e.message) from e

    def slot_path(self, slot: Slot) -> Path:
        return self.slot_a if slot == "a" else self.slot_b

    @property
    def options(self) -> dict[str, str]:
        return dict(self.boot_options)

    @property
    def metadata_url(self) -> str:
        return self.repo_url.rstrip("/") + "/metadata/"

    @property
    def targets_url(self) -> str:
        return self.repo_url.rstrip("/") + "/targets/"

    def to_dict(self) -> dict[str, Any]:
        return (
            {
                "schema": CONFIG_SCHEMA,
                "repo_url": self.repo_url,
                "product": self.product,
                "hardware": self.hardware,
                "slots": {"a": str(self.slot_a), "b": str(self.slot_b)},
                "boot": {"backend": self.boot_backend, "options": self.options},
                "tries": self.tries,
            }
            | ({"image_type": self.image_type} if self.image_type is not None else {})
            | (
                {}
                if self.slot_targets is None
                else {
                    "slot_targets": {
                        s: str(p) for s, p in zip(SLOTS, self.slot_targets, strict=True)
                    }
                }
            )
        )

    @classmethod
    def from_dict(cls, data: Any) -> DeviceConfig:
        d = _obj(
            data,
            "config",
            {
                "schema",
                "repo_url",
                "product",
                "hardware",
                "slots",
                "boot",
                "tries",
                "image_type",
                "slot_targets",
            },
        )
        if d.get("schema") != CONFIG_SCHEMA:
            raise ConfigError(f"config schema: expected {CONFIG_SCHEMA}, found {d.get('schema')!r}")
        slots = _obj(d.get("slots"), "config.slots", {"a", "b"})
        targets = d.get("slot_targets")
        if targets is not None:
            targets = _obj(targets, "config.slot_targets", {"a", "b"})
        boot = _obj(d.get("boot"), "config.boot", {"backend", "options"})
        opts = _obj(boot.get("options", {}), "config.boot.options", None)
        for k, v in opts.items():
            if not isinstance(v, str):
                raise ConfigError(f"config.boot.options.{k}: expected a string, found {v!r}")
        backend = _str(boot.get("backend"), "config.boot.backend")
        check_options(opts, backend, ConfigError)
        tries = d.get("tries", 3)
        if not isinstance(tries, int) or isinstance(tries, bool):
            raise ConfigError(f"config.tries: expected an integer, found {tries!r}")
        return cls(
            repo_url=_str(d.get("repo_url"), "config.repo_url"),
            product=_str(d.get("product"), "config.product"),
            hardware=_str(d.get("hardware"), "config.hardware"),
            slot_a=_abs_path(slots.get("a"), "config.slots.a"),
            slot_b=_abs_path(slots.get("b"), "config.slots.b"),
            boot_backend=backend,
            boot_options=tuple(sorted(opts.items())),
            tries=tries,
            image_type=cast("ImageType | None", d.get("image_type")),  # checked on construction
            slot_targets=None
            if targets is None
            else (
                _abs_path(targets.get("a"), "config.slot_targets.a"),
                _abs_path(targets.get("b"), "config.slot_targets.b"),
            ),
        )


# --- journal ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotRecord:
    """What a slot holds, as signed: the version and the uncompressed image's length/sha256."""

    version: ImageVersion
    image: ImageRef

    def to_dict(self) -> dict[str, Any]:
        return {"version": str(self.version), **self.image.to_dict()}

    @classmethod
    def from_dict(cls, data: Any, what: str) -> SlotRecord:
        d = _obj(data, what, {"version", "length", "sha256"})
        return cls(
            _schema(lambda: ImageVersion.parse(d.get("version"))),
            _schema(lambda: ImageRef.from_dict({k: d.get(k) for k in ("length", "sha256")}, what)),
        )


@dataclass(frozen=True)
class Pending:
    """A verified image written to ``slot``. ``armed`` once the boot pointer was moved to it."""

    slot: Slot
    record: SlotRecord
    armed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, **self.record.to_dict(), "armed": self.armed}

    @classmethod
    def from_dict(cls, data: Any) -> Pending:
        d = _obj(data, "journal.pending", {"slot", "version", "length", "sha256", "armed"})
        armed = d.get("armed")
        if not isinstance(armed, bool):
            raise ConfigError(f"journal.pending.armed: expected true/false, found {armed!r}")
        rec = SlotRecord.from_dict(
            {k: d.get(k) for k in ("version", "length", "sha256")}, "journal.pending"
        )
        return cls(_slot(d.get("slot"), "journal.pending.slot"), rec, armed)


@dataclass(frozen=True)
class Failure:
    """An image that failed (trial not confirmed, marked bad): not installed again."""

    version: ImageVersion
    sha256: str
    slot: Slot
    reason: str
    at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "sha256": self.sha256,
            "slot": self.slot,
            "reason": self.reason,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Failure:
        d = _obj(data, "journal.failure", {"version", "sha256", "slot", "reason", "at"})
        sha = _str(d.get("sha256"), "journal.failure.sha256")
        if not re.match(r"^[0-9a-f]{64}\Z", sha):
            raise ConfigError(f"journal.failure.sha256: expected 64 hex digits, found {sha!r}")
        return cls(
            _schema(lambda: ImageVersion.parse(d.get("version"))),
            sha,
            _slot(d.get("slot"), "journal.failure.slot"),
            _str(d.get("reason"), "journal.failure.reason"),
            _str(d.get("at"), "journal.failure.at"),
        )


@dataclass(frozen=True)
class Retry:
    """Consecutive failed update cycles and the earliest next attempt (backoff across cycles,
    see ``verifier.backoff``). Absent while the last cycle succeeded."""

    failures: int
    not_before: datetime
    #: the last failure's error kind and message, for ``status`` and the gate's message
    kind: str
    reason: str

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ConfigError(f"journal.retry.failures: expected >= 1, found {self.failures}")
        if self.not_before.tzinfo is None:
            raise ConfigError("journal.retry.not_before: expected a time with a UTC offset")

    def to_dict(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "not_before": timestamp(self.not_before),
            "kind": self.kind,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Retry:
        d = _obj(data, "journal.retry", {"failures", "not_before", "kind", "reason"})
        n = d.get("failures")
        if not isinstance(n, int) or isinstance(n, bool):
            raise ConfigError(f"journal.retry.failures: expected an integer, found {n!r}")
        text = _str(d.get("not_before"), "journal.retry.not_before")
        try:
            when = datetime.fromisoformat(text)
        except ValueError as e:
            raise ConfigError(
                f"journal.retry.not_before: expected an ISO 8601 time, found {text!r}"
            ) from e
        return cls(
            n,
            when,
            _str(d.get("kind"), "journal.retry.kind"),
            _str(d.get("reason"), "journal.retry.reason"),
        )


#: how a recorded cycle ended (``LastCycle.outcome``)
OUTCOMES = ("installed", "failed", "recalled-switch", "recalled-install")


@dataclass(frozen=True)
class LastCycle:
    """How the last update cycle that did something ended, for ``otakit-device report``:
    an operator's fleet view needs it, the device's own decisions never read it. A cycle
    with nothing to do is not recorded (no flash write per timer tick)."""

    at: str
    #: one of ``OUTCOMES``: "installed" (a slot written and armed), "failed", and for a
    #: recalled running version "recalled-switch" (the other slot's verified previous image
    #: armed, nothing downloaded) or "recalled-install" (an older good version written)
    outcome: str
    #: bytes the device received over the network in that cycle (metadata and artifacts)
    bytes_downloaded: int
    version: str | None = None
    #: "full", "delta" or "resumed" when installed; "switch" for a recalled-switch; the
    #: error kind when failed
    detail: str = ""
    #: the error when failed; "recalled: REASON" after a recall
    message: str = ""
    #: ``update --now`` skipped the waves of a signed rollout in this cycle
    waves_overridden: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "outcome": self.outcome,
            "bytes_downloaded": self.bytes_downloaded,
            "version": self.version,
            "detail": self.detail,
            "message": self.message,
            "waves_overridden": self.waves_overridden,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LastCycle:
        d = _obj(
            data,
            "journal.last_cycle",
            {
                "at",
                "outcome",
                "bytes_downloaded",
                "version",
                "detail",
                "message",
                "waves_overridden",
            },
        )
        outcome = d.get("outcome")
        if outcome not in OUTCOMES:
            raise ConfigError(
                f"journal.last_cycle.outcome: expected one of {', '.join(OUTCOMES)}, "
                f"found {outcome!r}"
            )
        overridden = d.get("waves_overridden", False)
        if not isinstance(overridden, bool):
            raise ConfigError(
                f"journal.last_cycle.waves_overridden: expected true or false, found {overridden!r}"
            )
        n = d.get("bytes_downloaded")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(
                f"journal.last_cycle.bytes_downloaded: expected a count >= 0, found {n!r}"
            )
        version = d.get("version")
        texts = {k: d.get(k, "") for k in ("detail", "message")}
        for k, v in texts.items():
            if not isinstance(v, str):
                raise ConfigError(f"journal.last_cycle.{k}: expected a string, found {v!r}")
        return cls(
            _str(d.get("at"), "journal.last_cycle.at"),
            outcome,
            n,
            None if version is None else _str(version, "journal.last_cycle.version"),
            texts["detail"],
            texts["message"],
            overridden,
        )


@dataclass(frozen=True)
class Journal:
    slots: tuple[SlotRecord | None, SlotRecord | None]
    pending: Pending | None = None
    failures: tuple[Failure, ...] = field(default_factory=tuple)
    #: backoff state after failed cycles; None after a success (and in older journals)
    retry: Retry | None = None
    #: the last cycle that installed or failed (None in older journals)
    last_cycle: LastCycle | None = None

    def slot(self, slot: Slot) -> SlotRecord | None:
        return self.slots[0] if slot == "a" else self.slots[1]

    def with_slot(self, slot: Slot, rec: SlotRecord | None) -> Journal:
        slots = (rec, self.slots[1]) if slot == "a" else (self.slots[0], rec)
        return replace(self, slots=slots)

    @property
    def failed_hashes(self) -> frozenset[str]:
        return frozenset(f.sha256 for f in self.failures)

    @property
    def last_failure(self) -> Failure | None:
        return self.failures[-1] if self.failures else None

    def with_failure(self, failure: Failure) -> Journal:
        kept = tuple(f for f in self.failures if f.sha256 != failure.sha256)
        return replace(self, failures=(*kept, failure)[-MAX_FAILED:])

    def to_dict(self) -> dict[str, Any]:
        return (
            {
                "schema": JOURNAL_SCHEMA,
                "slots": {
                    s: (None if r is None else r.to_dict())
                    for s, r in zip(SLOTS, self.slots, strict=True)
                },
                "pending": None if self.pending is None else self.pending.to_dict(),
                "failures": [f.to_dict() for f in self.failures],
            }
            | ({} if self.retry is None else {"retry": self.retry.to_dict()})
            | ({} if self.last_cycle is None else {"last_cycle": self.last_cycle.to_dict()})
        )

    @classmethod
    def from_dict(cls, data: Any) -> Journal:
        d = _obj(data, "journal", {"schema", "slots", "pending", "failures", "retry", "last_cycle"})
        if d.get("schema") != JOURNAL_SCHEMA:
            raise ConfigError(
                f"journal schema: expected {JOURNAL_SCHEMA}, found {d.get('schema')!r}"
            )
        slots = _obj(d.get("slots"), "journal.slots", {"a", "b"})
        recs = tuple(
            None if slots.get(s) is None else SlotRecord.from_dict(slots[s], f"journal.slots.{s}")
            for s in SLOTS
        )
        failures = d.get("failures", [])
        if not isinstance(failures, list) or len(failures) > MAX_FAILED:
            raise ConfigError(f"journal.failures: expected a list of at most {MAX_FAILED}")
        pending = d.get("pending")
        retry = d.get("retry")
        last = d.get("last_cycle")
        return cls(
            slots=(recs[0], recs[1]),
            pending=None if pending is None else Pending.from_dict(pending),
            failures=tuple(Failure.from_dict(f) for f in failures),
            retry=None if retry is None else Retry.from_dict(retry),
            last_cycle=None if last is None else LastCycle.from_dict(last),
        )


# --- persistence -----------------------------------------------------------------------------


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def _load(path: Path, what: str) -> Any:
    """Strict JSON (``verifier.strictjson``): a duplicated key is refused, not last-wins."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(
            f"{what} {path} does not exist",
            hint="run 'otakit-device --state DIR init ...' first",
        ) from e
    except OSError as e:
        raise ConfigError(f"{what} {path} is unreadable: {e.strerror or e}") from e
    return strictjson.loads(data, name=f"{what} {path}", error=ConfigError)


def load_config(paths: StatePaths) -> DeviceConfig:
    return DeviceConfig.from_dict(_load(paths.config, "device configuration"))


def save_config(disk: Disk, paths: StatePaths, config: DeviceConfig) -> None:
    write_atomic(disk, paths.config, _dump(config.to_dict()))


def load_journal(paths: StatePaths) -> Journal:
    return Journal.from_dict(_load(paths.journal, "update journal"))


def save_journal(disk: Disk, paths: StatePaths, journal: Journal) -> None:
    write_atomic(disk, paths.journal, _dump(journal.to_dict()))


def load_seed(paths: StatePaths) -> bytes | None:
    """The rollout seed, or None when this state directory has none yet (made before seeds
    existed). A damaged one is an error, never replaced: a new seed would silently move the
    device to another place in every rollout, ahead of the waves it was behind."""
    path = paths.rollout_seed
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RolloutSeedError(f"rollout seed {path} is unreadable: {e.strerror or e}") from e
    if len(data) != SEED_BYTES:
        raise RolloutSeedError(
            f"rollout seed {path}: expected {SEED_BYTES} bytes, found {len(data)}",
            hint="restore the file from a backup of this device; only if there is none, "
            "remove it and the next update makes a new one (the device's place in rollouts "
            "changes)",
        )
    return data


def ensure_seed(disk: Disk, paths: StatePaths, token: Callable[[int], bytes]) -> bytes:
    """The rollout seed, made now (``token``: the randomness, passed in) if there is none.

    Called by ``init`` and, for a state directory from before seeds existed, by the first
    update, under the device lock. Written once with ``write_atomic`` (a private 0600 file in
    the 0700 state directory); never logged, never in a report.
    """
    seed = load_seed(paths)
    if seed is not None:
        return seed
    seed = token(SEED_BYTES)
    if len(seed) != SEED_BYTES:
        raise RolloutSeedError(
            f"rollout seed source: expected {SEED_BYTES} bytes, found {len(seed)}"
        )
    write_atomic(disk, paths.rollout_seed, seed)
    return seed


def timestamp(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


# --- strict parsing helpers -----------------------------------------------------------------


def _obj(data: Any, what: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected an object, found {type(data).__name__}")
    if allowed is not None:
        extra = set(data) - allowed
        if extra:
            raise ConfigError(f"{what}: unexpected keys {sorted(extra)}")
    return data


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: expected a non-empty string, found {value!r}")
    return value


def _abs_path(value: Any, what: str) -> Path:
    """A stored slot path; a relative one is refused (see ``preflight.require_absolute``)."""
    return require_absolute(
        _str(value, what),
        what,
        ConfigError,
        "initialize a new state directory with absolute slot paths",
    )


def _slot(value: Any, what: str) -> Slot:
    try:
        return parse_slot(value, what)
    except OtakitError as e:
        raise ConfigError(e.message) from e


def _schema(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except ArtifactSchemaError as e:
        raise ConfigError(f"state file: {e.message}") from e
