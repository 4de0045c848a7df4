"""A device whose pinned root trusts the public demo keys says so at init, in status, and on
every command that verifies with that root; a device with its own keys says nothing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repo.keys import load_key_config
from repo.repository import init as repo_init
from tests.verifier.conftest import NOW, World, make_image
from tests.verifier.repo_sim import BASE, RepoSim
from verifier.artifact import ImageVersion
from verifier.device import init_device
from verifier.errors import OtakitError
from verifier.report import status, verify_installed
from verifier.state import DeviceConfig

ROOT = Path(__file__).resolve().parents[2]
WARNS = "uses PUBLIC demo keys from keys-example/"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    repo = tmp_path_factory.mktemp("demo") / "repo"
    repo_init(repo, load_key_config(ROOT / "keys-example" / "keys.json"), NOW)
    return (repo / "metadata" / "1.root.json").read_bytes()


def _world(tmp: Path, root: bytes | None) -> World:
    w = World(tmp, RepoSim(now=NOW), make_image(1))
    w.slot_a.write_bytes(w.v1)
    w.slot_b.write_bytes(b"")
    w.mountinfo.write_text("")
    init_device(
        w.state,
        w.disk,
        DeviceConfig(BASE, "edge-gw", "rpi4", w.slot_a, w.slot_b),
        root=root if root is not None else w.sim.root_bytes,
        installed_version=ImageVersion.parse("1.0"),
    )
    return w


def _warned(caplog: pytest.LogCaptureFixture) -> bool:
    return any(WARNS in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_demo_root_warns_at_init_in_status_and_on_each_verifying_command(
    tmp_path: Path, demo_root: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    w = _world(tmp_path, demo_root)
    assert _warned(caplog)
    st = status(w.device(), NOW).to_dict()
    assert st["demo_keys"] is True and WARNS in st["warnings"][0]
    for command in (lambda: w.update(), lambda: verify_installed(w.device())):
        caplog.clear()
        # the simulated repository is not signed by the demo keys, so both then fail: the
        # warning must come first, from the root the device verifies with
        with pytest.raises(OtakitError):
            command()
        assert _warned(caplog)


def test_own_root_is_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    w = _world(tmp_path, None)
    w.sim.add_full(w.v1, "1.0")
    w.sim.publish()
    with pytest.raises(OtakitError):  # nothing to do
        w.update()
    report = verify_installed(w.device())
    st = status(w.device(), NOW).to_dict()
    assert (st["demo_keys"], st["warnings"], report.warnings) == (False, [], ())
    assert not _warned(caplog)


def test_cli_init_with_demo_root_warns_on_stderr_and_in_status(
    tmp_path: Path, demo_root: bytes
) -> None:
    (tmp_path / "root.json").write_bytes(demo_root)
    (tmp_path / "a.img").write_bytes(make_image(1))
    (tmp_path / "b.img").write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    state = str(tmp_path / "state")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "verifier.cli", "--state", state, *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    r = run(
        "init", "--repo-url", BASE, "--root", str(tmp_path / "root.json"), "--product",
        "edge-gw", "--slot-a", str(tmp_path / "a.img"), "--slot-b", str(tmp_path / "b.img"),
        "--installed-version", "1.0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert WARNS in r.stderr
    assert f"  warning: the trusted root {state}/root.json {WARNS}" in r.stdout
    st = json.loads(run("--json", "status").stdout)
    assert st["demo_keys"] is True and WARNS in st["warnings"][0]
