"""The device install on its own: a clean venv with only requirements/device.lock and the
otakit wheel runs the device's whole cycle against a repository the full install published,
and its CLI keeps the contract exactly as the full install's does (issue 13)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from repo.nginx import nginx_serving
from tests.cli.helpers_cli import command, env
from tests.cli.test_contract import ROWS, Paths, assert_no_traceback
from tests.conftest import require
from tests.e2e.test_end_to_end import HW, PRODUCT
from tests.e2e.test_end_to_end import run as full_install
from verifier import cli

D = "otakit-device"


def device(venv: Path, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``otakit-device`` of the device install: its own interpreter, nothing from this tree."""
    proc = subprocess.run(
        [str(venv / "bin" / D), *map(str, args)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"COLUMNS": "80"},
        cwd="/",
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- what is installed ----------------------------------------------------------------------


def test_the_device_install_holds_only_what_the_device_imports(device_venv: Path) -> None:
    py = device_venv / "bin" / "python"
    absent = ("typer", "rich", "pydantic", "pygments", "markdown_it", "click", "pip")
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = subprocess.run([py, "-c", probe, *absent], capture_output=True, text=True, cwd="/")
    assert found.stdout.strip() == "[]", found.stdout
    site = next((device_venv / "lib").glob("python3*/site-packages"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert size <= 50e6, f"device install is {size / 1e6:.1f} MB of site-packages"
    # the publisher's script is there (one distribution) and says why it cannot run
    proc = subprocess.run([device_venv / "bin" / "otakit", "--help"], capture_output=True,
                          text=True, cwd="/")  # fmt: skip
    assert proc.returncode == 5 and "device-only install" in proc.stderr, proc.stderr
    assert_no_traceback(proc.stderr)


def test_help_and_status_load_no_transport_or_crypto(device_venv: Path) -> None:
    """What makes the start fast: --help imports no python-tuf, cryptography, urllib3 or
    zstandard (they load when a command needs them)."""
    probe = (
        "import sys; from verifier import cli; cli.build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tuf', 'securesystemslib', 'cryptography', 'urllib3', 'zstandard', 'typer'}))"
    )
    proc = subprocess.run([device_venv / "bin" / "python", "-c", probe], capture_output=True,
                          text=True, cwd="/")  # fmt: skip
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# --- the device's end-to-end cycle, against nginx ---------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Releases 1.0 and 2.0 (2.0 with a delta), published by the full install's CLI."""
    from signer.demo_image import DemoImageSpec, build_image

    base = tmp_path_factory.mktemp("published")
    full_install("otakit", "keys", "generate-demo", base / "keys")
    repo = base / "repo"
    full_install("otakit", "repo", "init", repo, "--keys", base / "keys" / "keys.json")
    for v in (1, 2):
        img = base / f"v{v}.img"
        img.write_bytes(build_image(DemoImageSpec(version=v, files=80, size=4 << 20)))
        full_install("otakit", "release", repo, img, "--keys", base / "keys" / "keys.json",
                     "--product", PRODUCT, "--version", f"{v}.0", "--hardware", HW)  # fmt: skip
    return base


@pytest.fixture(scope="module")
def url(published: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nginx_serving(require("nginx"), published / "repo",
                       tmp_path_factory.mktemp("nginx")) as u:  # fmt: skip
        yield u


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_the_device_install_updates_boots_and_commits(
    device_venv: Path, published: Path, url: str, tmp_path: Path, mode: str
) -> None:
    state, a, b = tmp_path / "state", tmp_path / "a.img", tmp_path / "b.img"
    shutil.copyfile(published / "v1.img", a)
    b.write_bytes(bytes(a.stat().st_size))
    device(device_venv, "--state", state, "init", "--repo-url", url,
           "--root", published / "repo" / "metadata" / "1.root.json", "--product", PRODUCT,
           "--hardware", HW, "--slot-a", a, "--slot-b", b,
           "--installed-version", "1.0")  # fmt: skip
    before = sha(a)
    out = device(device_venv, "--state", state, "update", "--mode", mode, "--json")
    done = json.loads(out.stdout.splitlines()[-1])
    assert (done["event"], done["version"], done["kind"]) == ("done", "2.0", "delta")
    assert sha(a) == before and sha(b) == sha(published / "v2.img")
    device(device_venv, "--state", state, "boot")
    device(device_venv, "--state", state, "mark-good")
    st = json.loads(device(device_venv, "--state", state, "status", "--json").stdout)
    assert (st["booted"], st["primary"], st["trial"]) == ("b", "b", None)
    drift = json.loads(device(device_venv, "--state", state, "verify-installed", "--json").stdout)
    assert drift["ok"] is True
    again = device(device_venv, "--state", state, "update", "--json")
    assert json.loads(again.stdout)["event"] == "nothing-to-do"
    # that cycle left status its memo (verifier/trusted_memo.py): no python-tuf, no crypto
    proc = subprocess.run(
        [device_venv / "bin" / "python", "-X", "importtime", "-m", "verifier.cli",
         "--state", state, "status", "--json"],
        capture_output=True, text=True, cwd="/", check=True,
    )  # fmt: skip
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
    assert not loaded & {"tuf", "securesystemslib", "cryptography", "urllib3"}, sorted(loaded)
    assert json.loads(proc.stdout)["slots"]["b"]["published"]["artifact"]["version"] == "2.0"


# --- the same contract as the full install ------------------------------------------------


def _same(venv: Path, *argv: str) -> None:
    ours = device(venv, *argv, ok=False)
    full = subprocess.run(command(D, *argv), capture_output=True, text=True, env=env(),
                          timeout=300, check=False, stdin=subprocess.DEVNULL,
                          cwd="/")  # fmt: skip  # the same cwd: messages name absolute paths
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        full.returncode,
        full.stdout,
        full.stderr,
    )
    assert_no_traceback(ours.stdout + ours.stderr)


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_the_device_install_fails_like_the_full_install(
    device_venv: Path,
    paths: Paths,
    json_out: bool,
) -> None:
    """Every device row of the contract table (tests/cli/test_contract.py), run by both
    installs: same exit code, same stdout (the JSON error object), same diagnostic."""
    for row in ROWS:
        if row.prog == D and "--now" not in row.argv:  # --now: each run moves the backoff
            _same(device_venv, *(["--json"] if json_out else []), *paths.fill(row.argv))


def test_every_help_page_is_the_same_and_fits_80_columns(device_venv: Path) -> None:
    from verifier.cli_parse import walk

    for path, _ in walk(cli.build_parser()):
        _same(device_venv, *path.split(), "--help")
        page = device(device_venv, *path.split(), "--help").stdout
        assert max(map(len, page.splitlines())) <= 80 and "Exit codes:" in page, path


# --- constants the parser states without importing their modules -------------------------------


def test_help_states_the_real_defaults() -> None:
    from verifier.bootctl.factory import backend_names
    from verifier.tuf.transfer import TransferLimits

    limits = dataclasses.asdict(TransferLimits())
    assert {k: limits[k] for k in cli.LIMIT_DEFAULTS} == cli.LIMIT_DEFAULTS
    assert backend_names() == cli.BACKENDS
