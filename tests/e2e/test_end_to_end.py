"""The whole path, for real: publisher CLI → repository served by nginx → device CLI.

Every step runs the installed console scripts in subprocesses, against an nginx started by
the test, with file-backed slots. Attack cases at this level tamper with what nginx serves and
check that the device refuses with the security exit code and that nothing it relies on
changed: the running slot's bytes, the trusted metadata and the boot state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from signer.demo_image import DemoImageSpec, build_image

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = "edge-gw"
HW = "board-x"
SECURITY_EXIT = 3


def _cli(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    module = "signer.cli" if name == "otakit" else "verifier.cli"
    return [sys.executable, "-c", f"from {module} import main; main()"]


def run(name: str, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [*_cli(name), *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    if ok and proc.returncode != 0:
        raise AssertionError(f"{name} {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): sha(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with releases 1.0 and 2.0 (2.0 with a delta from 1.0), made by the CLI."""
    base = tmp_path_factory.mktemp("pub")
    run("otakit", "keys", "generate-demo", base / "keys")
    repo = base / "repo"
    run("otakit", "repo", "init", repo, "--keys", base / "keys" / "keys.json")
    for v in (1, 2):
        img = base / f"v{v}.img"
        img.write_bytes(build_image(DemoImageSpec(version=v, files=80, size=4 << 20)))
        out = run(
            "otakit", "release", repo, img, "--keys", base / "keys" / "keys.json",
            "--product", PRODUCT, "--version", f"{v}.0", "--hardware", HW, "--json",
        )  # fmt: skip
        kinds = sorted(a["kind"] for a in json.loads(out.stdout)["artifacts"])
        assert kinds == (["full"] if v == 1 else ["delta", "full"])
    return base


def make_device(tmp_path: Path, url: str, repo: Path, published: Path) -> Path:
    state = tmp_path / "device"
    slot_a, slot_b = tmp_path / "slot-a.img", tmp_path / "slot-b.img"
    shutil.copyfile(published / "v1.img", slot_a)
    slot_b.write_bytes(bytes(slot_a.stat().st_size))
    run(
        "otakit-device", "--state", state, "init", "--repo-url", url,
        "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT, "--hardware", HW,
        "--slot-a", slot_a, "--slot-b", slot_b, "--installed-version", "1.0",
    )  # fmt: skip
    return state


def status(state: Path) -> dict[str, object]:
    out = run("otakit-device", "--state", state, "status", "--json")
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("mode", ["staged", "stream"])
def test_update_over_nginx_applies_delta_then_commits(
    served: tuple[str, Path], published: Path, tmp_path: Path, mode: str
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    slot_a = tmp_path / "slot-a.img"
    before = sha(slot_a)

    out = run("otakit-device", "--state", state, "update", "--mode", mode, "--json")
    done = [json.loads(line) for line in out.stdout.splitlines() if '"done"' in line][-1]
    assert (done["version"], done["slot"], done["kind"]) == ("2.0", "b", "delta")
    assert sha(slot_a) == before, "the running slot was written"
    assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
    st = status(state)
    assert (st["booted"], st["trial"]) == ("a", "b")

    again = run("otakit-device", "--state", state, "update")
    assert again.returncode == 0 and sha(slot_a) == before  # idempotent: nothing to do

    run("otakit-device", "--state", state, "boot")
    run("otakit-device", "--state", state, "mark-good")
    st = status(state)
    assert (st["booted"], st["primary"], st["trial"]) == ("b", "b", None)
    drift = json.loads(run("otakit-device", "--state", state, "verify-installed", "--json").stdout)
    assert drift["ok"] is True and drift["version"] == "2.0"

    # the operator's report: what the cycle cost, counted by the fetcher on the wire
    report = json.loads(run("otakit-device", "--state", state, "report", "--json").stdout)
    assert report["running"] == {"slot": "b", "version": "2.0", "committed": True}
    last = report["last_cycle"]
    assert (last["outcome"], last["version"], last["detail"]) == ("installed", "2.0", "delta")
    delta = next((repo / "targets" / "edge-gw" / "2.0").glob("*.delta-from-1.0.otd"))
    full = next((repo / "targets" / "edge-gw" / "2.0").glob("*.full.img.zst"))
    # the delta plus a few KB of metadata, far less than the full image
    assert delta.stat().st_size < last["bytes_downloaded"] < full.stat().st_size


def flip_byte(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def test_tampered_delta_falls_back_to_the_full_image(
    served: tuple[str, Path], published: Path, tmp_path: Path
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    (delta,) = (repo / "targets" / PRODUCT / "2.0").glob("*.delta-from-1.0.otd")
    delta.write_bytes(flip_byte(delta.read_bytes()))
    before = sha(tmp_path / "slot-a.img")

    out = run("otakit-device", "--state", state, "update", "--json")
    done = json.loads([ln for ln in out.stdout.splitlines() if '"done"' in ln][-1])
    assert (done["kind"], done["fell_back"]) == ("full", True)
    assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
    assert sha(tmp_path / "slot-a.img") == before


@pytest.mark.parametrize(
    "mutate",
    [flip_byte, lambda b: b + b"\0"],
    ids=["bit-flip", "one-byte-longer-than-signed"],
)
def test_tampered_targets_on_the_server_are_refused_and_nothing_is_lost(
    served: tuple[str, Path], published: Path, tmp_path: Path, mutate: Callable[[bytes], bytes]
) -> None:
    url, repo = served
    state = make_device(tmp_path, url, repo, published)
    originals = {p: p.read_bytes() for p in (repo / "targets" / PRODUCT / "2.0").iterdir()}
    for path, data in originals.items():  # every 2.0 artifact: no fallback can save the day
        path.write_bytes(mutate(data))
    slot_a = tmp_path / "slot-a.img"
    before_slot = sha(slot_a)
    before_boot = status(state)

    proc = run("otakit-device", "--state", state, "update", ok=False)
    assert proc.returncode == SECURITY_EXIT, proc.stderr
    assert "signed" in proc.stderr, proc.stderr  # names the signed value it compared with
    after = status(state)
    for key in ("booted", "primary", "trial", "tries_left"):
        assert after[key] == before_boot[key], key
    assert sha(slot_a) == before_slot

    # nothing lost: with the genuine files back, the same device updates normally
    for path, data in originals.items():
        path.write_bytes(data)
    # --now: the failed cycle set a backoff; the operator retries at once
    run("otakit-device", "--state", state, "update", "--now")
    assert sha(tmp_path / "slot-b.img") == sha(published / "v2.img")
    assert sha(slot_a) == before_slot


def test_demo_command_runs_end_to_end(tmp_path: Path) -> None:
    proc = run("otakit", "demo", "--workdir", tmp_path / "demo")
    assert "[check] ok   device ends on 2.0" in proc.stdout
    assert "[check] FAIL" not in proc.stdout
    assert "rolled back automatically" in proc.stdout
