"""``otakit fleet collect`` over real HTTP on loopback, and ``otakit-device report --post``.

A report is unsigned information: the collector must still protect itself. Every bad body
(too big, not strict JSON, a key twice, another schema, a field missing or extra) gets a 400
with a JSON body saying what was expected, and nothing is stored."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from repo.fleet_reports import MAX_REPORT_BYTES, load_reports, report_file
from repo.keys import KeyConfig
from signer.fleet.collect import collect_in_thread
from tests.cli.helpers_cli import command, env, run
from tests.repo.test_rollout_repo import publish
from verifier.device_report import DeviceReport, post_report
from verifier.errors import ReportPostError


def report(device: str = "gw-0001", **change: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "otakit_report": 1, "device_id": device, "at": "2026-12-02T05:00:00+00:00",
        "product": "edge-gw", "hardware": "rpi4", "image_type": "ext4",
        "running": {"slot": "b", "version": "2.0", "committed": False},
        "slots": {"a": "1.0", "b": "2.0"},
        "pending": None,
        "last_cycle": {"at": "2026-12-02T04:59:00+00:00", "outcome": "installed",
                       "bytes_downloaded": 12345, "version": "2.0", "detail": "delta",
                       "message": ""},
        "last_failure": None, "retry": None, "update_in_progress": False,
    }  # fmt: skip
    doc.update(change)
    return doc


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    d = tmp_path / "reports"
    url, stop = collect_in_thread(d)
    try:
        yield url, d
    finally:
        stop()


def post(url: str, body: bytes, path: str = "/report", **headers: str) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", path)
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def stored(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_a_good_report_is_stored_one_file_per_device(collector: tuple[str, Path]) -> None:
    url, d = collector
    body = json.dumps(report()).encode()
    assert post(url, body) == (200, {"otakit_collect": 1, "stored": "gw-0001"})
    path = report_file(d, "gw-0001")
    assert stored(d) == [path.name] and path.read_bytes() == body
    # the same device again: its newer report replaces the older one
    newer = json.dumps(report(at="2026-12-02T06:00:00+00:00")).encode()
    assert post(url, newer)[0] == 200
    assert stored(d) == [path.name] and path.read_bytes() == newer
    # the name on disk is a hash of the id, never the id (an untrusted name is not a path)
    assert post(url, json.dumps(report("..")).encode())[0] == 400
    assert post(url, json.dumps(report("a" * 129)).encode())[0] == 400
    loaded = load_reports(d)
    assert [r.device_id for r in loaded.reports] == ["gw-0001"] and loaded.problems == ()


def _dup_key() -> bytes:
    text = json.dumps(report())
    return text.replace('"product": "edge-gw"', '"product": "edge-gw", "product": "other"').encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "expected strict JSON"),
        (_dup_key(), "duplicate key 'product'"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "a JSON object"),
        (json.dumps(report(otakit_report=2)).encode(), "schema 1"),
        (json.dumps(report(device_id=None)).encode(), "--device-id"),
        (json.dumps({**report(), "extra": 1}).encode(), "'extra'] unexpected"),
        (json.dumps({k: v for k, v in report().items() if k != "slots"}).encode(), "missing"),
        (json.dumps(report(running={"slot": "c", "version": "2", "committed": True})).encode(),
         "running.slot"),
        (json.dumps(report(slots={"a": "1.0-rc1", "b": None})).encode(), "slots.a"),
        (json.dumps(report(update_in_progress="no")).encode(), "true or false"),
        (json.dumps(report(at="yesterday")).encode(), "ISO 8601"),
    ],
    ids=["malformed", "duplicate-key", "binary", "not-object", "schema", "no-device-id",
         "extra-field", "missing-field", "bad-slot", "bad-version", "bad-bool", "bad-time"],
)  # fmt: skip
def test_a_bad_report_is_refused_with_400_and_nothing_is_stored(
    collector: tuple[str, Path], body: bytes, says: str
) -> None:
    url, d = collector
    status, doc = post(url, body)
    assert status == 400 and says in doc["error"], doc
    assert stored(d) == []


def test_an_oversized_body_is_refused_before_it_is_read(collector: tuple[str, Path]) -> None:
    url, d = collector
    # only the announced size is looked at: the server answers without reading the body
    status, doc = post(url, b"", **{"Content-Length": str(MAX_REPORT_BYTES + 1)})
    assert status == 400 and f"at most {MAX_REPORT_BYTES} bytes" in doc["error"]
    big = json.dumps(report(image_type="x" * MAX_REPORT_BYTES)).encode()
    assert post(url, big)[0] == 400
    status, doc = post(url, b"{}", **{"Content-Length": "-1"})
    assert status == 400 and "Content-Length" in doc["error"]
    assert stored(d) == []


def test_other_paths_and_methods_are_refused(collector: tuple[str, Path]) -> None:
    url, d = collector
    assert post(url, json.dumps(report()).encode(), path="/reports/../x")[0] == 404
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/report")
    assert conn.getresponse().status == 405
    conn.close()
    assert stored(d) == []


def test_post_report_sends_it_and_transport_failures_are_exit_4(
    collector: tuple[str, Path],
) -> None:
    url, d = collector
    answer = post_report(DeviceReport(report("gw-7")), url + "/report")
    assert '"stored": "gw-7"' in answer and len(stored(d)) == 1
    with pytest.raises(ReportPostError, match="answered HTTP 400") as e:
        post_report(DeviceReport(report(otakit_report=9)), url + "/report")
    assert e.value.exit_code == 4
    with pytest.raises(ReportPostError, match="connection refused") as e:
        post_report(DeviceReport(report()), "http://127.0.0.1:9/report")
    assert e.value.exit_code == 4


@pytest.fixture
def collect_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``otakit fleet collect`` as an operator runs it: its own process, any free port."""
    d = tmp_path / "collected"
    log = tmp_path / "collect.stderr"
    with log.open("w") as err:
        proc = subprocess.Popen(
            command("otakit", "--json", "fleet", "collect", "--dir", str(d), "--port", "0"),
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env(), text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        yield url.removesuffix("/report"), d
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"collect ignored Ctrl-C for 60 s: {log.read_text()}") from None
    assert code in (0, 130), log.read_text()


def test_a_real_device_reports_and_rollout_status_counts_it(
    collect_process: tuple[str, Path], repo: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    """``otakit-device report --post`` against ``otakit fleet collect``, then the operator's
    ``otakit rollout status --reports`` over a real release with waves."""
    url, d = collect_process
    publish(repo, keys, "1.0")
    publish(repo, keys, "2.0", ("1.0",), "5%@0,100%@1d")
    slot_a, slot_b = tmp_path / "a.img", tmp_path / "b.img"
    slot_a.write_bytes(os.urandom(4096))
    slot_b.write_bytes(bytes(4096))
    state = tmp_path / "device"
    r = run(
        "otakit-device", "--state", str(state), "init", "--repo-url", "http://127.0.0.1:9/",
        "--root", str(repo / "metadata" / "1.root.json"), "--product", "edge-gw",
        "--slot-a", str(slot_a), "--slot-b", str(slot_b), "--installed-version", "1.0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # without --device-id the id is derived from the device's rollout seed (stable, one-way)
    r = run("otakit-device", "--state", str(state), "--json", "report", "--post", url + "/report")
    assert r.returncode == 0, r.stderr
    derived = json.loads(r.stdout)["device_id"]
    assert derived.startswith("seed-") and len(stored(d)) == 1
    r = run(
        "otakit-device", "--state", str(state), "--json", "report",
        "--post", url + "/report", "--device-id", "gw-42",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["device_id"] == "gw-42" and len(stored(d)) == 2
    r = run("otakit-device", "--state", str(state), "report", "--post",
            "http://127.0.0.1:9/report", "--device-id", "gw-42")  # fmt: skip
    assert r.returncode == 4 and "connection refused" in r.stderr and r.stdout == ""
    r = run(
        "otakit", "--json", "rollout", "status", str(repo), "edge-gw", "2.0", "--reports", str(d)
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["allowed_bp"] == 500 and doc["rollout"]["waves"][1]["fleet_bp"] == 10000
    assert doc["reports"]["reports"] == 2 and doc["reports"]["attempted"] == 0


def test_escape_sequences_from_the_other_side_never_reach_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hostile collector's answer (shown on the device) and a hostile request line (in the
    collector's log) are printed with their control characters escaped."""
    from http.server import BaseHTTPRequestHandler

    from repo.serve import in_thread, listen, log_request

    evil = "\x1b]0;pwned\x07\x1b[2J"

    class Hostile(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = evil.encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    url, stop = in_thread(listen("127.0.0.1", 0, Hostile), "hostile-collector")
    try:
        with pytest.raises(ReportPostError) as e:
            post_report(DeviceReport(report()), url + "/report")
    finally:
        stop()
    assert "\x1b" not in e.value.message and "\\x1b]0;pwned\\x07" in e.value.message
    log_request("127.0.0.1", f'"POST /{evil} HTTP/1.1" 404 -')
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[2J" in err


@pytest.mark.parametrize("outcome", ["recalled-switch", "recalled-install"])
def test_a_report_of_a_recalled_device_is_accepted_and_counted(
    tmp_path: Path, outcome: str
) -> None:
    """Regression (the merge of the device and publisher sides): the collector refused every
    report whose last cycle acted on a recall, and any from a device that records
    ``waves_overridden``, so a gate could not see the devices a recall had moved."""
    from repo.fleet_reports import count, store_report
    from verifier.artifact import ImageVersion
    from verifier.state import LastCycle

    cycle = LastCycle(
        "2026-12-02T05:00:00Z", outcome, 0, "1.0", "switch", "recalled: boot loop", True
    )
    doc = report(last_cycle=cycle.to_dict())
    stored_report = store_report(tmp_path, json.dumps(doc).encode())
    assert stored_report.data["last_cycle"]["outcome"] == outcome
    counts = count([stored_report], doc["product"], ImageVersion.parse("1.0"))
    assert counts.reports == 1
