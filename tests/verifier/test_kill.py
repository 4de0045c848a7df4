"""SIGKILL ``otakit-device update`` at random moments, then restart it: it always converges
(invariant I6), against real files, a real repository made by the publisher, and a real HTTP
server on 127.0.0.1.

Run i is killed a seeded random few milliseconds after the update logs the end of its i-th
stage (run 0: during start-up or the TUF refresh), so the kills spread over refresh, download,
decode, verification and arming rather than over Python's imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from repo.keys import load_key_config
from repo.repository import init
from repo.serve import serve_in_thread
from signer.release import release
from tests.helpers_bootctl import REPO_ROOT
from tests.verifier.conftest import evolve, make_image

RUNS = 8
SEED = 20261129
IMAGE_SIZE = 8 << 20
NOW = datetime.now(UTC)


@dataclass
class Rig:
    url: str
    root: Path
    pristine: Path
    work: Path
    v1: bytes
    v2: bytes

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "verifier.cli", "--state", str(self.work / "state"), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cli(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
        )

    def reset(self) -> None:
        shutil.rmtree(self.work)
        shutil.copytree(self.pristine, self.work)

    def status(self) -> dict[str, object]:
        out = self.run("--json", "status")
        assert out.returncode == 0, out.stderr
        data: dict[str, object] = json.loads(out.stdout)
        return data


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("kill")
    keys = load_key_config(REPO_ROOT / "keys-example" / "keys.json")
    repo = tmp / "repo"
    init(repo, keys, NOW)
    v1 = make_image(1, IMAGE_SIZE)
    v2 = evolve(v1, 2, changed=64)
    (tmp / "v2.img").write_bytes(v2)
    release(repo, keys, "edge-gw", "2.0", tmp / "v2.img", ["rpi4"], NOW, image_type="raw")
    url, stop = serve_in_thread(repo)
    work = tmp / "work"
    work.mkdir()
    (work / "slot-a.img").write_bytes(v1)
    (work / "slot-b.img").write_bytes(b"")
    r = Rig(url, repo / "metadata" / "1.root.json", tmp / "pristine", work, v1, v2)
    out = r.run(
        "init",
        "--repo-url",
        url,
        "--root",
        str(r.root),
        "--product",
        "edge-gw",
        "--hardware",
        "rpi4",
        "--slot-a",
        str(work / "slot-a.img"),
        "--slot-b",
        str(work / "slot-b.img"),
        "--installed-version",
        "1.0",
    )
    assert out.returncode == 0, out.stderr
    shutil.copytree(work, r.pristine)
    try:
        yield r
    finally:
        stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _where_it_stopped(r: Rig) -> str:
    staging = r.work / "state" / "staging"
    files = sorted(p.suffix or "file" for p in staging.glob("*")) if staging.is_dir() else []
    journal = json.loads((r.work / "state" / "journal.json").read_text())
    boot = json.loads((r.work / "state" / "boot.json").read_text())
    pending = journal.get("pending")
    return (
        f"staging={files} pending={None if pending is None else pending.get('armed')} "
        f"trial={boot['trial']} slot_b={(r.work / 'slot-b.img').stat().st_size}"
    )


def _assert_converged(r: Rig, where: str) -> None:
    st = r.status()
    assert (st["booted"], st["primary"], st["trial"], st["tries_left"]) == ("a", "a", "b", 3), (
        f"{where}: {st}"
    )
    assert (r.work / "slot-a.img").read_bytes() == r.v1, f"{where}: the running slot changed"
    b = (r.work / "slot-b.img").read_bytes()[: len(r.v2)]
    assert _sha(b) == _sha(r.v2), f"{where}: slot b is not the signed image"
    again = r.run("update")
    assert again.returncode == 0 and "nothing to do" in again.stdout, f"{where}: {again}"


def test_killed_update_always_converges(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    rig.reset()
    t0 = time.monotonic()
    rig.status()  # start-up and imports only: no kill before this point is interesting
    startup = time.monotonic() - t0
    t0 = time.monotonic()
    clean = rig.run("update")
    duration = time.monotonic() - t0
    assert clean.returncode == 0, clean.stderr
    _assert_converged(rig, "clean run")

    rng = random.Random(SEED)
    report = []
    for i in range(RUNS):
        rig.reset()
        proc = subprocess.Popen(
            rig.cli("update"),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        # Run i is killed a few milliseconds after the update's i-th stage log line (run 0:
        # during start-up or the TUF refresh), so every stage boundary is hit once.
        seen = []
        while len(seen) < i and (line := proc.stderr.readline()):
            seen.append(line.split(":")[0].strip())
        time.sleep(rng.uniform(0, 0.03) if i else startup * rng.uniform(0.8, 1.1))
        os.kill(proc.pid, signal.SIGKILL)
        code = proc.wait(timeout=30)
        proc.stderr.close()
        left = _where_it_stopped(rig)
        where = f"run {i}: killed after {seen[-1:] or ['start']} (exit {code})"
        rerun = rig.run("update")
        assert rerun.returncode == 0, f"{where}: rerun failed: {rerun.stderr}"
        _assert_converged(rig, where)
        report.append(f"{where}: {left}")
    with capsys.disabled():
        print(f"\n[kill test] start-up {startup:.2f}s, clean run {duration:.2f}s")
        for line in report:
            print("  " + line)
