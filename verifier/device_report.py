"""``otakit-device report``: a small, unsigned status document for an operator's fleet view.

A device sends (or a collector fetches) this after its cycles so an operator, or an
automatic gate, can see how a rollout goes: versions, how the last cycle ended and why, the
bytes it cost. It is *information*, never trust: nothing a device decides reads a report,
and a collector that believes a forged one can at most halt or recall a release by a signed
metadata change its operator makes. So it carries no secret (no key, no seed, no path of the
state directory) and is cheap: the journal and the boot state, no metadata is read.
A recall the device acted on is in ``last_cycle`` (``recalled-switch``, ``recalled-install``,
message ``recalled: REASON``), and so is a cycle run with ``update --now``
(``waves_overridden``), so a fleet view can count both.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import urllib3

from verifier import transitions
from verifier.bootctl.base import SLOTS
from verifier.device import Device, update_in_progress
from verifier.errors import ReportPostError, UsageError
from verifier.state import load_seed, timestamp
from verifier.terminal import printable

REPORT_SCHEMA = 1
#: What names a device to a collector (``--device-id``): the operator's own inventory name
#: (serial, host name). Bounded and path-free; a collector still never uses it as a path.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
#: ``report --post``: a collector that does not answer within this gives a transport error
POST_TIMEOUT = urllib3.Timeout(connect=5.0, read=10.0)


@dataclass(frozen=True)
class DeviceReport:
    data: dict[str, Any]

    def text(self) -> str:
        d = self.data
        run = d["running"]
        lines = [
            f"{d['product']} on {d['hardware']}: running {run['version']} in slot {run['slot']}"
            + ("" if run["committed"] else " (trial, not committed yet)"),
        ]
        last = d["last_cycle"]
        if last is None:
            lines.append("last cycle: none recorded")
        elif last["outcome"] == "installed":
            lines.append(
                f"last cycle: installed {last['version']} ({last['detail']}) at {last['at']}, "
                f"{last['bytes_downloaded']} bytes downloaded"
            )
        elif last["outcome"] == "recalled-switch":
            lines.append(
                f"last cycle: {last['message']}; switched back to {last['version']} (the "
                f"other slot) at {last['at']}, {last['bytes_downloaded']} bytes downloaded"
            )
        elif last["outcome"] == "recalled-install":
            lines.append(
                f"last cycle: {last['message']}; installed {last['version']} "
                f"({last['detail']}) at {last['at']}, {last['bytes_downloaded']} bytes downloaded"
            )
        else:
            lines.append(
                f"last cycle: failed at {last['at']} ({last['detail']}): {last['message']}; "
                f"{last['bytes_downloaded']} bytes downloaded"
            )
        if last is not None and last.get("waves_overridden"):
            lines.append("last cycle ran with update --now: rollout waves overridden")
        failure = d["last_failure"]
        if failure is not None:
            lines.append(
                f"last failed image: {failure['version']} at {failure['at']}: {failure['reason']}"
            )
        return "\n".join(lines)


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise UsageError(
            "--device-id: expected 1-128 characters of [A-Za-z0-9._:-] starting with a letter "
            f"or digit, found {device_id!r}"[:300]
        )
    return device_id


def default_device_id(dev: Device) -> str | None:
    """A stable id for a device whose operator named none: a domain-separated hash of its
    rollout seed. One-way, so a collector learns nothing of the seed (the device's places
    in the waves stay its secret); None for a state directory without a seed yet."""
    seed = load_seed(dev.paths)
    if seed is None:
        return None
    return "seed-" + hashlib.sha256(b"otakit-device-id-v1\x00" + seed).hexdigest()[:32]


def device_report(dev: Device, now: datetime, device_id: str | None = None) -> DeviceReport:
    """``device_id`` names the device to a collector (``otakit fleet collect`` keeps one
    report per id): the operator's name for it (``--device-id``, or ``OTAKIT_DEVICE_ID`` in
    the unit that runs it, e.g. a serial number), else ``default_device_id``."""
    if device_id is not None:
        check_device_id(device_id)
    else:
        device_id = default_device_id(dev)
    step = transitions.reconcile(dev.journal(), dev.boot.read(), now)
    journal, st = step.journal, step.boot
    running = journal.slot(st.booted)
    failure = journal.last_failure
    retry = journal.retry
    cfg = dev.config
    data: dict[str, Any] = {
        "otakit_report": REPORT_SCHEMA,
        "device_id": device_id,
        "at": timestamp(now),
        "product": cfg.product,
        "hardware": cfg.hardware,
        "image_type": cfg.image_type,
        "running": {
            "slot": st.booted,
            "version": None if running is None else str(running.version),
            "committed": not st.in_trial,
        },
        "slots": {s: (None if (r := journal.slot(s)) is None else str(r.version)) for s in SLOTS},
        "pending": None
        if journal.pending is None
        else {
            "version": str(journal.pending.record.version),
            "slot": journal.pending.slot,
            "armed": journal.pending.armed,
        },
        "last_cycle": None if journal.last_cycle is None else journal.last_cycle.to_dict(),
        "last_failure": None
        if failure is None
        else {"version": str(failure.version), "reason": failure.reason, "at": failure.at},
        "retry": None
        if retry is None
        else {
            "failures": retry.failures,
            "not_before": timestamp(retry.not_before),
            "kind": retry.kind,
        },
        "update_in_progress": update_in_progress(dev.paths.root) is not None,
    }
    return DeviceReport(data)


def post_report(report: DeviceReport, url: str) -> str:
    """Send ``report`` to a collector (``POST URL``, JSON); returns the collector's answer.

    Bounded (``POST_TIMEOUT``), never retried here: the next timer run sends a fresh one.
    Every failure, a refusal by the collector included, is a transport error (exit 4): the
    device itself is fine, and nothing it decides depends on the report arriving.
    """
    from verifier.tuf.fetcher import _connect_failure, _reason

    scheme = urllib3.util.parse_url(url).scheme
    if scheme not in ("http", "https"):
        raise UsageError(f"--post: expected an http:// or https:// URL, found {url!r}"[:300])
    body = json.dumps(report.data, sort_keys=True).encode()
    http = urllib3.PoolManager(timeout=POST_TIMEOUT, retries=False)
    try:
        resp = http.request("POST", url, body=body, headers={"Content-Type": "application/json"})
    except urllib3.exceptions.NewConnectionError as e:
        raise ReportPostError(f"report not sent: {_connect_failure(url, e)}") from e
    except urllib3.exceptions.HTTPError as e:
        raise ReportPostError(f"report not sent to {url}: {_reason(e)}") from e
    text = printable(resp.data[:1000].decode("utf-8", "replace").strip())
    if resp.status != 200:
        raise ReportPostError(
            f"report not stored: the collector at {url} answered HTTP {resp.status}: {text}",
            hint="the collector's answer names the field it refused",
        )
    return text
