"""Device reports on the publisher's side: read one strictly, store it, count a release.

A report (``otakit-device report``, docs/FORMAT.md "Device report") is unsigned information
from a device. Whoever can reach the collector can send one, so nothing here is trust: a
forged report can at most make the operator (or ``rollout gate``) halt or recall a release,
which is a signed change the operator's keys make, never a device decision. What a reader
must still get right is its own safety: a report is bounded (``MAX_REPORT_BYTES``), parsed
with the device's strict JSON reader (a duplicate key is refused, not resolved), checked
field by field against the schema, and stored under a name derived from its device id by a
hash (P3: an untrusted name is never a path), one file per device, replaced atomically.

Counting a release (``count``), for a VERSION of a PRODUCT, among the newest report of
each device of that product:

* attempted: the device shows VERSION anywhere: running, in a slot, pending, as the last
  cycle's install or as its last failed image;
* on: it runs VERSION (``in_trial`` of them not committed yet);
* failed: its last failed image is VERSION (a trial of it was not confirmed: the health
  check failed or the boot tries ran out, and the device marked it bad);
* rolled_back: failed, and it now runs another version;
* failure_rate = failed / attempted (0 when nobody attempted it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from repo.errors import InvalidReportError, LocalError
from verifier import strictjson
from verifier.artifact import ImageVersion
from verifier.device_report import DEVICE_ID_RE, REPORT_SCHEMA
from verifier.effects import Disk, RealDisk, write_atomic
from verifier.errors import ArtifactSchemaError
from verifier.state import OUTCOMES as CYCLE_OUTCOMES

#: A report is a few hundred bytes; anything near this is not one.
MAX_REPORT_BYTES = 64 * 1024
#: Every free-text field (messages, reasons, kinds) is at most this long.
MAX_TEXT = 2000
#: A reports directory with more files than this is refused rather than read for minutes.
MAX_REPORTS = 1_000_000

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_FILE_RE = re.compile(r"^[0-9a-f]{32}\.json\Z")


@dataclass(frozen=True)
class Report:
    """One device's report, checked: the fields a count needs, and the document itself."""

    device_id: str
    product: str
    running: str | None
    committed: bool
    slots: tuple[str | None, str | None]
    pending: str | None
    installed_last: str | None
    last_failure: str | None
    data: dict[str, Any]

    def shows(self, version: ImageVersion) -> bool:
        return any(
            v is not None and ImageVersion.parse(v) == version
            for v in (self.running, *self.slots, self.pending, self.installed_last,
                      self.last_failure)
        )  # fmt: skip

    def runs(self, version: ImageVersion) -> bool:
        return self.running is not None and ImageVersion.parse(self.running) == version

    def failed(self, version: ImageVersion) -> bool:
        return self.last_failure is not None and ImageVersion.parse(self.last_failure) == version


# --- parsing ------------------------------------------------------------------------------


def _fail(where: str, expected: str, found: Any) -> InvalidReportError:
    return InvalidReportError(f"report {where}: expected {expected}, found {found!r}"[:400])


def _obj(
    v: Any, where: str, keys: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, "an object", v)
    missing, extra = sorted(keys - set(v)), sorted(set(v) - keys - optional)
    if missing or extra:
        found = [f"{missing} missing"] if missing else []
        found += [f"{extra} unexpected"] if extra else []
        raise InvalidReportError(
            f"report {where or 'document'}: expected the fields {sorted(keys)}, found "
            + ", ".join(found)
        )
    return v


def _text(v: Any, where: str, *, null: bool = False) -> Any:
    if v is None and null:
        return None
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise _fail(where, f"a string of at most {MAX_TEXT} characters", v)
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, "true or false", v)
    return v


def _count(v: Any, where: str, low: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise _fail(where, f"an integer >= {low}", v)
    return v


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not _NAME_RE.match(v):
        raise _fail(where, "1-64 characters of [a-z0-9._-]", v)
    return v


def _version(v: Any, where: str) -> str | None:
    if v is None:
        return None
    try:
        ImageVersion.parse(v)
    except ArtifactSchemaError:
        raise _fail(where, "an image version such as 2.4.1, or null", v) from None
    return str(v)


def _time(v: Any, where: str) -> str:
    text = _text(v, where)
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise _fail(where, "an ISO 8601 time", v) from None
    return str(text)


def _slot(v: Any, where: str) -> str:
    if v not in ("a", "b"):
        raise _fail(where, "'a' or 'b'", v)
    return str(v)


_TOP = {
    "otakit_report", "device_id", "at", "product", "hardware", "image_type", "running",
    "slots", "pending", "last_cycle", "last_failure", "retry", "update_in_progress",
}  # fmt: skip


def parse_report(body: bytes) -> Report:
    """``body`` as a report, or ``InvalidReportError`` naming the first thing wrong."""
    if len(body) > MAX_REPORT_BYTES:
        raise InvalidReportError(
            f"report: expected at most {MAX_REPORT_BYTES} bytes, found {len(body)}"
        )
    d = strictjson.loads(body, name="report", error=InvalidReportError)
    if not isinstance(d, dict):
        raise _fail("document", "a JSON object", type(d).__name__)
    schema = d.get("otakit_report")
    if schema != REPORT_SCHEMA or isinstance(schema, bool):
        raise _fail("otakit_report", f"schema {REPORT_SCHEMA}", schema)
    _obj(d, "", _TOP)
    device_id = d["device_id"]
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise _fail(
            "device_id",
            "1-128 characters of [A-Za-z0-9._:-] (otakit-device report --device-id ID)",
            device_id,
        )
    _time(d["at"], "at")
    product = _name(d["product"], "product")
    _name(d["hardware"], "hardware")
    _text(d["image_type"], "image_type", null=True)
    run = _obj(d["running"], "running", {"slot", "version", "committed"})
    _slot(run["slot"], "running.slot")
    slots = _obj(d["slots"], "slots", {"a", "b"})
    pending = None
    if d["pending"] is not None:
        p = _obj(d["pending"], "pending", {"version", "slot", "armed"})
        pending = _version(p["version"], "pending.version")
        _slot(p["slot"], "pending.slot")
        _bool(p["armed"], "pending.armed")
    installed = None
    if d["last_cycle"] is not None:
        c = _obj(
            d["last_cycle"],
            "last_cycle",
            {"at", "outcome", "bytes_downloaded", "version", "detail", "message"},
            optional={"waves_overridden"},
        )
        _time(c["at"], "last_cycle.at")
        if c["outcome"] not in CYCLE_OUTCOMES:
            raise _fail("last_cycle.outcome", f"one of {list(CYCLE_OUTCOMES)}", c["outcome"])
        if "waves_overridden" in c:
            _bool(c["waves_overridden"], "last_cycle.waves_overridden")
        _count(c["bytes_downloaded"], "last_cycle.bytes_downloaded", 0)
        v = _version(c["version"], "last_cycle.version")
        installed = v if c["outcome"] in ("installed", "recalled-install") else None
        _text(c["detail"], "last_cycle.detail")
        _text(c["message"], "last_cycle.message")
    failure = None
    if d["last_failure"] is not None:
        f = _obj(d["last_failure"], "last_failure", {"version", "reason", "at"})
        failure = _version(f["version"], "last_failure.version")
        _text(f["reason"], "last_failure.reason")
        _time(f["at"], "last_failure.at")
    if d["retry"] is not None:
        r = _obj(d["retry"], "retry", {"failures", "not_before", "kind"})
        _count(r["failures"], "retry.failures", 1)
        _time(r["not_before"], "retry.not_before")
        _text(r["kind"], "retry.kind")
    _bool(d["update_in_progress"], "update_in_progress")
    return Report(
        device_id=device_id,
        product=product,
        running=_version(run["version"], "running.version"),
        committed=_bool(run["committed"], "running.committed"),
        slots=(_version(slots["a"], "slots.a"), _version(slots["b"], "slots.b")),
        pending=pending,
        installed_last=installed,
        last_failure=failure,
        data=d,
    )


# --- storage ------------------------------------------------------------------------------


def report_file(directory: Path, device_id: str) -> Path:
    """Where a device's report is kept: a hash of its id, never the id itself (P3)."""
    digest = hashlib.sha256(b"otakit-report-v1\x00" + device_id.encode()).hexdigest()
    return directory / f"{digest[:32]}.json"


def store_report(directory: Path, body: bytes, disk: Disk | None = None) -> Report:
    """Check ``body`` and replace its device's report with it atomically (newest wins)."""
    report = parse_report(body)
    write_atomic(disk or RealDisk(), report_file(directory, report.device_id), body)
    return report


@dataclass(frozen=True)
class LoadedReports:
    reports: tuple[Report, ...]
    #: files that are not a valid report (put there by hand, or damaged): skipped, and said
    problems: tuple[str, ...]


def load_reports(directory: Path) -> LoadedReports:
    """Every stored report of ``directory``; a bad file is skipped with its reason."""
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError as e:
        raise LocalError(
            f"reports directory {directory}: cannot list it: {e.strerror or e}",
            hint="give the directory otakit fleet collect --dir writes to",
        ) from e
    if len(names) > MAX_REPORTS:
        raise LocalError(f"{directory}: expected at most {MAX_REPORTS} reports, found {len(names)}")
    reports: list[Report] = []
    problems: list[str] = []
    for name in names:
        if not _FILE_RE.match(name):
            continue  # temp files of a write in progress, anything not ours
        path = directory / name
        try:
            with path.open("rb") as f:
                body = f.read(MAX_REPORT_BYTES + 1)
            r = parse_report(body)
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror or e}")
            continue
        except InvalidReportError as e:
            problems.append(f"{path}: {e.message}")
            continue
        if report_file(directory, r.device_id).name != name:
            problems.append(f"{path}: holds the report of {r.device_id!r}, stored elsewhere")
            continue
        reports.append(r)
    return LoadedReports(tuple(reports), tuple(problems))


# --- counting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseCounts:
    """How one release is doing across the reporting devices (definitions: module doc)."""

    version: str
    reports: int
    attempted: int
    on: int
    in_trial: int
    failed: int
    rolled_back: int
    unreadable: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "reports": self.reports,
            "attempted": self.attempted,
            "on": self.on,
            "in_trial": self.in_trial,
            "failed": self.failed,
            "rolled_back": self.rolled_back,
            "failure_rate": round(self.failure_rate, 6),
            "unreadable": self.unreadable,
        }

    def text(self) -> str:
        return (
            f"reports: {self.reports} device(s); {self.attempted} attempted {self.version}, "
            f"{self.on} on it ({self.in_trial} in trial), {self.failed} failed on it, "
            f"{self.rolled_back} rolled back; failure rate {self.failure_rate:.1%}"
            + (f"; {self.unreadable} unreadable file(s) skipped" if self.unreadable else "")
        )


def count(
    reports: Sequence[Report], product: str, version: ImageVersion, unreadable: int = 0
) -> ReleaseCounts:
    mine = [r for r in reports if r.product == product]
    tried = [r for r in mine if r.shows(version)]
    on = [r for r in tried if r.runs(version)]
    failed = [r for r in tried if r.failed(version)]
    return ReleaseCounts(
        version=str(version),
        reports=len(mine),
        attempted=len(tried),
        on=len(on),
        in_trial=sum(1 for r in on if not r.committed),
        failed=len(failed),
        rolled_back=sum(1 for r in failed if not r.runs(version)),
        unreadable=unreadable,
    )


def count_dir(
    directory: Path, product: str, version: ImageVersion, warn: Callable[[str], None]
) -> ReleaseCounts:
    """``count`` over the reports stored in ``directory``; each skipped file is warned."""
    loaded = load_reports(directory)
    for p in loaded.problems:
        warn(f"skipped {p}")
    return count(loaded.reports, product, version, len(loaded.problems))
