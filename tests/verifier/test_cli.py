"""``otakit-device`` as a user runs it: a subprocess against a local HTTP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.verifier.conftest import evolve, make_image
from tests.verifier.repo_sim import RepoSim

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served() -> Iterator[tuple[RepoSim, str]]:
    sim = RepoSim()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = sim.files.get(self.path.lstrip("/"))
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield sim, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def run(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(state), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_update_boot_commit_and_errors(tmp_path: Path, served: tuple[RepoSim, str]) -> None:
    sim, url = served
    v1 = make_image(1)
    v2 = evolve(v1, 2)
    (tmp_path / "a.img").write_bytes(v1)
    (tmp_path / "b.img").write_bytes(b"")
    (tmp_path / "root.json").write_bytes(sim.root_bytes)
    sim.add_full(v1, "1.0")
    sim.publish()
    state = tmp_path / "state"

    r = run(
        state,
        "init",
        "--repo-url",
        url,
        "--root",
        str(tmp_path / "root.json"),
        "--product",
        "edge-gw",
        "--hardware",
        "rpi4",
        "--slot-a",
        str(tmp_path / "a.img"),
        "--slot-b",
        str(tmp_path / "b.img"),
        "--installed-version",
        "1.0",
    )
    assert r.returncode == 0, r.stderr
    assert "slot a: version 1.0" in r.stdout

    r = run(state, "update")
    assert (r.returncode, r.stdout.strip()) == (
        0,
        "nothing to do: version 1.0 is installed and no newer image is published",
    )

    sim.add_full(v2, "2.0")
    sim.publish()
    r = run(state, "update", "--json", "--tries", "2")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["version"] == "2.0"
    assert any(e["event"] == "progress" and e["stage"] == "decode" for e in events)
    assert "rate" in events[0] and "eta" in events[0]

    st = json.loads(run(state, "status", "--json").stdout)
    assert (st["trial"], st["tries_left"], st["slots"]["b"]["version"]) == ("b", 2, "2.0")

    assert run(state, "boot").returncode == 0
    r = run(state, "mark-good")
    assert r.returncode == 0 and "slot b committed" in r.stdout
    r = run(state, "verify-installed", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True

    # a security error: one diagnostic line family, exit code 3, no traceback
    sim.add_full(evolve(v2, 3), "3.0")
    sim.publish()
    key = sim.target_key("edge-gw/3.0/full.img.zst")
    sim.files[key] = sim.files[key][:-1] + b"\0"
    r = run(state, "update")
    assert r.returncode == 3
    assert "otakit-device: security error: download: target edge-gw/3.0" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(state, "-v", "update", "--now")  # --now: the failure above started a backoff
    assert r.returncode == 3 and "Traceback" in r.stderr

    # drift: exit code 3 with the expected and found hashes
    with (tmp_path / "b.img").open("r+b") as f:
        f.write(b"drift")
    r = run(state, "verify-installed")
    assert r.returncode == 3 and "has drifted from version 2.0" in r.stderr

    r = run(state, "mark-bad", "c")
    assert r.returncode == 2 and "'c' is not one of 'a', 'b'" in r.stderr
    r = run(tmp_path / "nowhere", "status")
    assert r.returncode == 5 and "run 'otakit-device --state DIR init" in r.stderr
