"""Device state files (strict parsing, round trips) and the pure trial bookkeeping table."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.verifier.conftest import NOW
from tests.verifier.repo_sim import image_ref
from verifier.artifact import ImageVersion
from verifier.bootctl.base import BootState
from verifier.errors import ConfigError
from verifier.state import DeviceConfig, Failure, Journal, Pending, SlotRecord
from verifier.transitions import reconcile_journal

V1 = SlotRecord(ImageVersion.parse("1.0"), image_ref(b"one"))
V2 = SlotRecord(ImageVersion.parse("2.0"), image_ref(b"two"))


def _journal(pending: Pending | None) -> Journal:
    return Journal(slots=(V1, V2), pending=pending)


def test_config_round_trip() -> None:
    c = DeviceConfig(
        "http://r/",
        "edge-gw",
        "rpi4",
        Path("/dev/a"),
        Path("/dev/b"),
        "grub",
        (("envfile", "/boot/grubenv"),),
        5,
    )
    assert DeviceConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_journal_round_trip() -> None:
    j = Journal(
        slots=(V1, None),
        pending=Pending("b", V2, armed=True),
        failures=(Failure(V2.version, V2.image.sha256, "b", "why", "2026-11-29T12:00:00+00:00"),),
    )
    assert Journal.from_dict(json.loads(json.dumps(j.to_dict()))) == j


def _cfg(**over: Any) -> dict[str, Any]:
    d = DeviceConfig("http://r/", "edge-gw", "rpi4", Path("/a"), Path("/b")).to_dict()
    d.update(over)
    return d


@pytest.mark.parametrize(
    "data,says",
    [
        (_cfg(schema=2), "config schema"),
        (_cfg(extra=1), "unexpected keys"),
        (_cfg(repo_url="ftp://mirror.test/otakit"), "http(s) or file:/// URL"),
        (_cfg(repo_url="file://host/otakit"), "http(s) or file:/// URL"),  # a remote file URL
        (_cfg(product="Edge GW"), "product"),
        (_cfg(slots={"a": "/x", "b": "/x"}), "must differ"),
        (_cfg(tries=0), "1..16"),
        (_cfg(tries=True), "integer"),
        (_cfg(boot={"backend": "file", "options": {"path": 3}}), "expected a string"),
        ([], "expected an object"),
    ],
)
def test_config_parsing_is_strict(data: Any, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        DeviceConfig.from_dict(data)
    assert says in exc.value.message


@pytest.mark.parametrize(
    "mutate,says",
    [
        (lambda d: d.update(schema=9), "journal schema"),
        (
            lambda d: d["slots"].update(a={"version": "1.0", "length": 0, "sha256": "0" * 64}),
            "length",
        ),
        (
            lambda d: d["slots"].update(a={"version": "v1", "length": 1, "sha256": "0" * 64}),
            "version",
        ),
        (
            lambda d: d.update(
                pending={
                    "slot": "c",
                    "version": "1.0",
                    "length": 1,
                    "sha256": "0" * 64,
                    "armed": True,
                }
            ),
            "slot",
        ),
        (lambda d: d.update(failures="x"), "failures"),
    ],
)
def test_journal_parsing_is_strict(mutate: Any, says: str) -> None:
    d = _journal(None).to_dict()
    mutate(d)
    with pytest.raises(ConfigError) as exc:
        Journal.from_dict(d)
    assert says in exc.value.message


@dataclass(frozen=True)
class Row:
    name: str
    pending: Pending | None
    boot: BootState
    # "keep" | "armed" | "committed" | "failed"
    outcome: str


ARMED = Pending("b", V2, armed=True)
UNARMED = Pending("b", V2, armed=False)
ROWS = [
    Row("no pending", None, BootState("a", "a", None, 0), "keep"),
    Row("armed, not yet rebooted", ARMED, BootState("a", "a", "b", 3), "keep"),
    Row("running the trial", ARMED, BootState("b", "a", "b", 2), "keep"),
    Row("running the last try", ARMED, BootState("b", "a", "b", 0), "keep"),
    Row("committed", ARMED, BootState("b", "b", None, 0), "committed"),
    Row("tries exhausted, back on a", ARMED, BootState("a", "a", None, 0), "failed"),
    Row(
        "tries exhausted, trial flag left by bootloader",
        ARMED,
        BootState("a", "a", "b", 0),
        "failed",
    ),
    Row("marked bad while running it", ARMED, BootState("b", "a", None, 0), "failed"),
    Row("written, boot pointer never moved", UNARMED, BootState("a", "a", None, 0), "keep"),
    Row("written, set_trial done before the crash", UNARMED, BootState("a", "a", "b", 3), "armed"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_reconcile(row: Row) -> None:
    before = _journal(row.pending)
    after = reconcile_journal(before, row.boot, NOW)
    if row.outcome == "keep":
        assert after == before
    elif row.outcome == "armed":
        assert after == replace(before, pending=replace(UNARMED, armed=True))
    elif row.outcome == "committed":
        assert after.pending is None and after.slot("b") == V2 and not after.failures
    else:
        assert after.pending is None
        assert after.failed_hashes == {V2.image.sha256}
        assert after.last_failure is not None and "not confirmed" in after.last_failure.reason


def test_failure_memory_is_bounded_and_deduplicated() -> None:
    j = _journal(None)
    for i in range(100):
        ref = image_ref(str(i % 70).encode())
        j = j.with_failure(Failure(V2.version, ref.sha256, "b", f"r{i}", "t"))
    assert len(j.failures) == 64
    assert len(j.failed_hashes) == 64
