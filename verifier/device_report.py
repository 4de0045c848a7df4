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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from verifier import transitions
from verifier.bootctl.base import SLOTS
from verifier.device import Device, update_in_progress
from verifier.state import timestamp

REPORT_SCHEMA = 1


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


def device_report(dev: Device, now: datetime) -> DeviceReport:
    step = transitions.reconcile(dev.journal(), dev.boot.read(), now)
    journal, st = step.journal, step.boot
    running = journal.slot(st.booted)
    failure = journal.last_failure
    retry = journal.retry
    cfg = dev.config
    data: dict[str, Any] = {
        "otakit_report": REPORT_SCHEMA,
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
