"""Slow retrieval: a server that drips bytes cannot hold an update (or the device) forever.

The arithmetic (``TransferMeter``) is table-tested on given times, without sleeping; the
real thing runs ``otakit-device update`` as a subprocess against a threaded HTTP server that
sends one byte every 0.5 s — on ``timestamp.json``, on a target, and in the status line
itself — and checks the exit code, the message, the time it took, and that nothing the device
trusts or boots changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.verifier.conftest import evolve, make_image
from tests.verifier.repo_sim import RepoSim
from verifier.tuf.transfer import TransferLimitError, TransferLimits, TransferMeter

ROOT = Path(__file__).resolve().parents[2]
#: wall-clock bound of one CLI run here: the deadlines are a few seconds, the issue's hang was
#: endless; the rest is interpreter start-up on a loaded test machine
SLACK = 30

# --- the arithmetic, on given times --------------------------------------------------------

SLOW = TransferLimits(min_throughput=1024, throughput_window=10, download_deadline=3600)


@dataclass(frozen=True)
class Case:
    name: str
    limits: TransferLimits
    #: (seconds since the request, bytes received then)
    events: tuple[tuple[float, int], ...]
    #: None: every event accepted; else a text of the error at the last event
    error: str | None
    #: seconds the session (update cycle) had run when the request started
    session_age: float = 0.0


def _drip(every: float, until: float) -> tuple[tuple[float, int], ...]:
    n = int(until / every)
    return tuple((every * (i + 1), 1) for i in range(n))


CASES = [
    Case(
        "a drip of 1 byte every 5 s fails once the 10 s window is full",
        SLOW,
        _drip(5, 10),
        "timestamp.json: 2 bytes in 10.0 s, below the minimum 1024 B/s over 10 s "
        "(2 bytes in the last 10 s)",
    ),
    Case("the same drip is not judged before the window is full", SLOW, _drip(5, 9.9), None),
    Case(
        "the message of the issue: 37 bytes in 12.0 s",
        SLOW,
        ((1.0, 30), (9.0, 5), (12.0, 2)),
        "timestamp.json: 37 bytes in 12.0 s, below the minimum 1024 B/s over 10 s "
        "(7 bytes in the last 10 s)",
    ),
    Case(
        "a small file that arrives fast is never judged",
        SLOW,
        ((0.05, 900), (0.1, 300)),
        None,
    ),
    Case(
        "a steady slow link above the minimum passes (2 KiB/s for 100 s)",
        SLOW,
        tuple((float(t), 2048) for t in range(1, 101)),
        None,
    ),
    Case(
        "a fast start does not excuse a stall: the window slides",
        SLOW,
        ((1.0, 1_000_000), (12.5, 1)),
        "1000001 bytes in 12.5 s, below the minimum 1024 B/s over 10 s (1 bytes in the last",
    ),
    Case(
        "bytes at the window's edge count as before it",
        SLOW,
        ((2.0, 10240), (12.0, 1)),
        "(1 bytes in the last 10 s)",
    ),
    Case(
        "exactly the minimum over the window passes",
        SLOW,
        tuple((float(t), 1024) for t in range(1, 31)),
        None,
    ),
    Case(
        "no minimum: a drip is bounded only by the deadline",
        TransferLimits(min_throughput=0, throughput_window=10, download_deadline=30),
        _drip(5, 30),
        "timestamp.json: 6 bytes in 30.0 s, over the download deadline of 30 s",
    ),
    Case(
        "the per-file deadline holds however fast the file flows",
        TransferLimits(download_deadline=5),
        tuple((float(t), 10**6) for t in range(1, 6)),
        "5000000 bytes in 5.0 s, over the download deadline of 5 s",
    ),
    Case(
        "the cycle's deadline counts the files before this one",
        TransferLimits(cycle_deadline=100, download_deadline=50),
        ((10.0, 5000), (21.0, 5000)),
        "10000 bytes in 21.0 s, over the update-cycle deadline of 100 s",
        session_age=80.0,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_transfer_meter(case: Case) -> None:
    meter = TransferMeter("timestamp.json", case.limits, 1000.0, 1000.0 - case.session_age)
    *head, last = case.events
    for t, n in head:
        meter.add(n, 1000.0 + t)
    if case.error is None:
        meter.add(last[1], 1000.0 + last[0])
        return
    with pytest.raises(TransferLimitError) as raised:
        meter.add(last[1], 1000.0 + last[0])
    assert case.error in str(raised.value)


def test_time_left_is_the_nearer_deadline() -> None:
    limits = TransferLimits(download_deadline=50, cycle_deadline=100)
    assert TransferMeter("f", limits, 10.0, 0.0).time_left(10.0) == 50.0
    assert TransferMeter("f", limits, 70.0, 0.0).time_left(75.0) == 25.0
    assert TransferMeter("f", limits, 70.0, 0.0).time_left(200.0) == 0.0


def test_a_session_already_over_refuses_the_next_request() -> None:
    meter = TransferMeter("f", TransferLimits(cycle_deadline=10), 11.0, 0.0)
    with pytest.raises(TransferLimitError, match="over the update-cycle deadline of 10 s"):
        meter.check(11.0)


@pytest.mark.parametrize(
    "field_,value",
    [("read_timeout", 0), ("download_deadline", -1), ("min_throughput", -1),
     ("cycle_deadline", float("inf")), ("connect_timeout", float("nan"))],
)  # fmt: skip
def test_limits_refuse_nonsense(field_: str, value: float) -> None:
    with pytest.raises(ValueError, match=field_):
        TransferLimits(**{field_: value})


# --- the real thing: otakit-device against a dripping server -------------------------------


@dataclass
class Drip:
    """RepoSim's files over HTTP; paths in ``drip`` trickle (1 byte per ``every`` s), the
    body or (``head``) the status line too. Every request's path is recorded."""

    sim: RepoSim
    every: float = 0.5
    drip: set[str] = field(default_factory=set)
    head: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def drip_server() -> Iterator[Drip]:
    d = Drip(RepoSim())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            d.seen.append(path)
            data = d.sim.files.get(path)
            try:
                if any(path.endswith(s) for s in d.head):
                    for b in b"HTTP/1.1 200 OK\r\n":
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(d.every)
                    return
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                if any(path.endswith(s) for s in d.drip):
                    for b in data or b"":
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(d.every)
                else:
                    self.wfile.write(data or b"")
            except OSError:
                pass  # the client gave up: what the test wants

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    d.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield d
    httpd.shutdown()
    httpd.server_close()


def device(state: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(state), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class Dev:
    tmp: Path
    d: Drip

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def snapshot(self) -> dict[str, Any]:
        boot = json.loads((self.state / "boot.json").read_text())
        meta = {
            str(p.relative_to(self.state)): p.read_bytes()
            for p in sorted((self.state / "metadata").rglob("*"))
            if p.is_file()
        }
        return {
            "slot a": hashlib.sha256((self.tmp / "a.img").read_bytes()).hexdigest(),
            "boot": boot,
            "metadata": meta,
        }


@pytest.fixture
def dev(tmp_path: Path, drip_server: Drip) -> Dev:
    sim = drip_server.sim
    v1 = make_image(1)
    (tmp_path / "a.img").write_bytes(v1)
    (tmp_path / "b.img").write_bytes(b"")
    (tmp_path / "root.json").write_bytes(sim.root_bytes)
    sim.add_full(v1, "1.0")
    sim.publish()
    r = device(
        tmp_path / "state", "init", "--repo-url", drip_server.url,
        "--root", str(tmp_path / "root.json"), "--product", "edge-gw", "--hardware", "rpi4",
        "--slot-a", str(tmp_path / "a.img"), "--slot-b", str(tmp_path / "b.img"),
        "--installed-version", "1.0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = device(tmp_path / "state", "update")
    assert (r.returncode, "nothing to do" in r.stdout) == (0, True), r.stderr
    return Dev(tmp_path, drip_server)


def _timed(state: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    r = device(state, *args)
    return r, time.monotonic() - start


def test_a_drip_on_timestamp_json_is_stopped_by_the_download_deadline(dev: Dev) -> None:
    dev.d.sim.publish()  # a new timestamp, so the device must read it whole
    dev.d.drip.add("timestamp.json")
    before = dev.snapshot()
    r, took = _timed(dev.state, "update", "--download-deadline", "2.5", "--min-throughput", "0")
    assert r.returncode == 4, r.stderr
    assert "timestamp.json: " in r.stderr and "over the download deadline of 2.5 s" in r.stderr
    assert "otakit-device: transport error: refresh:" in r.stderr
    assert re.search(r"bytes in 2\.[5-9] s, over", r.stderr), r.stderr  # fired on time
    assert 2.4 < took < SLACK, took
    assert dev.snapshot() == before


def test_a_drip_on_timestamp_json_is_stopped_by_the_minimum_throughput(dev: Dev) -> None:
    dev.d.sim.publish()
    dev.d.drip.add("timestamp.json")
    before = dev.snapshot()
    r, took = _timed(dev.state, "update", "--min-throughput", "100", "--throughput-window", "2")
    assert r.returncode == 4, r.stderr
    assert "below the minimum 100 B/s over 2 s" in r.stderr, r.stderr
    assert took < SLACK, took
    assert dev.snapshot() == before


def test_a_status_line_that_drips_is_stopped_too(dev: Dev) -> None:
    """The deadline holds before any header arrived: a per-read timeout never would."""
    dev.d.head.add("timestamp.json")
    before = dev.snapshot()
    r, took = _timed(dev.state, "update", "--download-deadline", "2", "--read-timeout", "5")
    assert r.returncode == 4, r.stderr
    assert "timestamp.json: 0 bytes in 2.0 s, over the download deadline of 2 s" in r.stderr
    assert took < SLACK, took
    assert dev.snapshot() == before


def test_a_drip_on_a_target_is_stopped_and_nothing_is_armed(dev: Dev) -> None:
    sim = dev.d.sim
    sim.add_full(evolve(make_image(1), 2), "2.0")
    sim.publish()
    dev.d.drip.add("full.img.zst")
    before = dev.snapshot()
    r, took = _timed(dev.state, "update", "--download-deadline", "3", "--min-throughput", "0")
    assert r.returncode == 4, r.stderr
    assert "full.img.zst: " in r.stderr and "over the download deadline of 3 s" in r.stderr
    assert "otakit-device: transport error: download:" in r.stderr
    assert re.search(r"bytes in 3\.[0-4] s, over", r.stderr), r.stderr
    assert 2.9 < took < SLACK, took
    after = dev.snapshot()
    assert (after["slot a"], after["boot"]) == (before["slot a"], before["boot"])
    # the refresh before the download verified and kept the new metadata: nothing else
    assert after["metadata"] != before["metadata"]
    st = json.loads(device(dev.state, "status", "--json").stdout)
    assert st["pending"] is None and st["trial"] is None
    assert st["retry"]["failures"] == 1 and st["retry"]["kind"] == "transport"
    # the next cycle waits for its backoff ...
    r = device(dev.state, "update")
    assert r.returncode == 0 and "nothing to do: next attempt after" in r.stdout, r.stdout
    # ... unless asked; the partial download is resumed, not restarted
    dev.d.drip.clear()
    r = device(dev.state, "update", "--now")
    assert r.returncode == 0, r.stderr
    assert "version 2.0 written to slot b" in r.stdout
    assert json.loads(device(dev.state, "status", "--json").stdout)["retry"] is None


def test_the_cycle_deadline_bounds_refresh_and_download_together(dev: Dev) -> None:
    sim = dev.d.sim
    sim.add_full(evolve(make_image(1), 2), "2.0")
    sim.publish()
    dev.d.drip.update({"timestamp.json", "full.img.zst"})
    r, took = _timed(
        dev.state, "update", "--cycle-deadline", "3", "--download-deadline", "60",
        "--min-throughput", "0",
    )  # fmt: skip
    assert r.returncode == 4, r.stderr
    assert "over the update-cycle deadline of 3 s" in r.stderr, r.stderr
    assert took < SLACK, took


def test_status_answers_while_an_update_is_stalled(dev: Dev) -> None:
    dev.d.sim.publish()
    dev.d.drip.add("timestamp.json")
    asked = len(dev.d.seen)
    stalled = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "--state", str(dev.state), "update",
         "--download-deadline", "20", "--min-throughput", "0"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while "metadata/timestamp.json" not in dev.d.seen[asked:] and time.monotonic() < deadline:
            time.sleep(0.1)
        r, took = _timed(dev.state, "status", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["in_progress"] == f"pid {stalled.pid}, update"
        assert took < SLACK, took
        r = device(dev.state, "status")
        assert f"in progress: pid {stalled.pid}, update holds the state lock" in r.stdout
        # a command that changes state is refused as busy after a short wait, not queued
        r, took = _timed(dev.state, "mark-bad", "b")
        assert r.returncode == 5, r.stderr
        assert f"another otakit-device is working on {dev.state}" in r.stderr
        assert f"held by pid {stalled.pid}, update" in r.stderr
        assert took < SLACK, took
        r = device(dev.state, "--json", "mark-good")
        assert json.loads(r.stdout)["error"]["kind"] == "device-busy"
    finally:
        stalled.kill()
        stalled.wait()
    st = json.loads(device(dev.state, "status", "--json").stdout)
    assert st["in_progress"] is None
