"""``status`` and ``verify-installed`` show each slot's image as a reviewer sees it published
(the artifact fields of ``otakit inspect``), and a drifted slot names the command that explains
the drift (``otakit image diff SLOT IMAGE``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repo.inspect_report import artifact_json
from tests.helpers_crash import installed_v2
from tests.verifier.conftest import NOW, World, evolve
from tests.verifier.repo_sim import full_info
from verifier.artifact_view import artifact_fields, artifact_lines
from verifier.errors import ImageHashMismatchError, NothingToDoError
from verifier.report import status, verify_installed

ROOT = Path(__file__).resolve().parents[2]


def _device_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(state), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )


def test_inspect_and_the_device_render_an_artifact_with_one_function() -> None:
    info = full_info(b"x" * 4096, "2.0")
    assert artifact_json(info) == artifact_fields(info)
    assert sorted(artifact_fields(info)) == [  # the stable JSON field names
        "allow_downgrade",
        "base",
        "hardware",
        "image",
        "image_type",
        "kind",
        "product",
        "version",
        "withdrawn",
    ]


def test_status_shows_each_slot_as_published(world: World, tmp_path: Path) -> None:
    st = status(world.device(), NOW).to_dict()
    # before any refresh there is no trusted targets metadata: status still answers
    assert st["published_problem"] and "no trusted targets metadata" in st["published_problem"]
    assert st["slots"]["a"]["published"] is None

    v2 = installed_v2(world, tmp_path)
    st = status(world.device(), NOW).to_dict()
    assert st["published_problem"] is None
    a, b = st["slots"]["a"]["published"], st["slots"]["b"]["published"]
    assert a["target"] == "edge-gw/1.0/full.img.zst"
    assert a["artifact"] == artifact_fields(full_info(world.v1, "1.0"))
    # v2 was installed from the delta; the full image of the same bytes is what is shown
    assert b["target"] == "edge-gw/2.0/full.img.zst"
    assert b["artifact"]["image"] == st["slots"]["b"]["image"]
    assert b["artifact"]["image"]["length"] == len(v2)

    r = _device_cli(world.state, "status")
    assert r.returncode == 0, r.stderr
    assert "    published as edge-gw/2.0/full.img.zst:" in r.stdout
    assert f"      sha256 {b['artifact']['image']['sha256']}" in r.stdout
    assert "      edge-gw 2.0 (full, image type not recorded)" in r.stdout
    ours = [line for line in r.stdout.splitlines() if line.startswith("    ")]
    assert len(ours) == 8 and all(len(line) <= 80 for line in ours), r.stdout
    assert json.loads(_device_cli(world.state, "status", "--json").stdout)["slots"] == st["slots"]


def test_a_slot_whose_image_is_not_published_says_so(world: World) -> None:
    world.sim.add_full(evolve(world.v1, 5), "1.0")  # a different image under the same version
    world.sim.publish()
    with pytest.raises(NothingToDoError):  # refreshes the trusted metadata
        world.update()
    st = status(world.device(), NOW).to_dict()
    assert st["published_problem"] is None and st["slots"]["a"]["published"] is None
    r = _device_cli(world.state, "status")
    assert "sha256 (not published):" in r.stdout, r.stdout


def test_verify_installed_shows_the_published_image(world: World, tmp_path: Path) -> None:
    installed_v2(world, tmp_path)
    report = verify_installed(world.device())
    assert report.ok and report.explain is None
    d = report.to_dict()
    assert d["path"] == str(world.slot_b) and d["published"]["target"].endswith("full.img.zst")
    r = _device_cli(world.state, "verify-installed")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "slot b holds exactly version 2.0 as signed"
    assert lines[2:] == [f"    {x}" for x in artifact_lines(d["published"]["artifact"])]


def test_drift_names_the_image_diff_that_explains_it(world: World, tmp_path: Path) -> None:
    installed_v2(world, tmp_path)
    with world.slot_b.open("r+b") as f:
        f.write(b"drift")
    report = verify_installed(world.device())
    assert not report.ok
    assert report.explain == (
        "compare the slot with the published image ('zstd -d' of target "
        f"edge-gw/2.0/full.img.zst): otakit image diff {world.slot_b} IMAGE-2.0"
    )
    r = _device_cli(world.state, "verify-installed")
    assert r.returncode == 3 and "has drifted from version 2.0" in r.stderr
    assert f"otakit image diff {world.slot_b} IMAGE-2.0" in r.stderr
    r = _device_cli(world.state, "verify-installed", "--json")
    err = json.loads(r.stdout)["error"]
    assert err["kind"] == ImageHashMismatchError.kind() and "otakit image diff" in err["hint"]


def _withdraw(w: World, version: str, reason: str) -> None:
    """What ``otakit release withdraw`` signs: every target of ``version`` marked withdrawn."""
    import dataclasses

    from verifier.artifact import ArtifactInfo, Withdrawal

    for tf in w.sim.targets.signed.targets.values():
        info = ArtifactInfo.from_custom(tf.unrecognized_fields["custom"])
        if str(info.version) == version:
            marked = dataclasses.replace(info, withdrawn=Withdrawal(reason, "2026-12-01T10:00:00Z"))
            tf.unrecognized_fields["custom"] = marked.to_custom()
    w.sim.publish()


def test_a_device_running_a_withdrawn_image_is_told_so(world: World, tmp_path: Path) -> None:
    installed_v2(world, tmp_path)
    _withdraw(world, "2.0", "bricks rev-B boards")
    with pytest.raises(NothingToDoError):  # the refresh brings the signed withdrawal
        world.update()
    st = status(world.device(), NOW).to_dict()
    w = {"reason": "bricks rev-B boards", "time": "2026-12-01T10:00:00Z"}
    assert st["slots"]["b"]["withdrawn"] == w and st["slots"]["a"]["withdrawn"] is None
    assert st["slots"]["b"]["published"]["artifact"]["withdrawn"] == w
    assert any("withdrawn: bricks rev-B boards" in x for x in st["warnings"])
    r = _device_cli(world.state, "status")
    assert r.returncode == 0, r.stderr
    assert "[booted, primary, withdrawn]" in r.stdout
    assert "      withdrawn: bricks rev-B boards (at 2026-12-01T10:00:00Z)" in r.stdout
    assert "  warning: slot b runs edge-gw 2.0, which the publisher withdrew" in r.stdout
    doc = json.loads(_device_cli(world.state, "status", "--json").stdout)
    assert doc["slots"]["b"]["withdrawn"] == w

    r = _device_cli(world.state, "verify-installed")
    assert r.returncode == 0, r.stderr  # the slot is exactly as signed; it is only withdrawn
    assert "    withdrawn: bricks rev-B boards (at 2026-12-01T10:00:00Z)" in r.stdout
    doc = json.loads(_device_cli(world.state, "verify-installed", "--json").stdout)
    assert doc["published"]["artifact"]["withdrawn"] == w
    assert any("withdrawn: bricks rev-B boards" in str(x) for x in doc["warnings"])
