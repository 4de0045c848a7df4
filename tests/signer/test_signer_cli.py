"""The ``otakit`` command line: exit codes, stdout data vs stderr diagnostics, --json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers_repo import publisher_cli as run

KEYS_EXAMPLE = Path(__file__).resolve().parents[2] / "keys-example"


def test_init_release_json_and_version_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = str(KEYS_EXAMPLE / "keys.json")  # the committed demo keys must keep working
    repo = str(tmp_path / "repo")
    img = tmp_path / "img"
    img.write_bytes(os.urandom(100_000) + bytes(400_000))

    code, out, _ = run(capsys, "repo", "init", repo, "--keys", keys)
    assert code == 0 and out.strip().endswith("1.root.json")

    code, out, err = run(
        capsys, "release", repo, str(img), "--keys", keys, "--product", "edge-gw",
        "--image-type", "raw", "--version", "1.2", "--hardware", "rpi4", "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["version"] == "1.2" and doc["metadata"]["timestamp"] == 2
    (art,) = doc["artifacts"]
    assert art["image"]["length"] == 500_000
    assert Path(art["file"]).stat().st_size == art["length"]

    code, out, _ = run(capsys, "repo", "list", repo, "--product", "edge-gw")
    row = f"edge-gw\t1.2\tfull\t{art['length']}\tedge-gw/1.2/full.img.zst"
    assert code == 0 and out == row + "\tlive\n"
    code, out, _ = run(capsys, "repo", "list", repo, "--json")
    assert code == 0 and json.loads(out)[0]["sha256"] == art["sha256"]

    code, out, err = run(
        capsys, "release", repo, str(img), "--keys", keys, "--product", "edge-gw",
        "--image-type", "raw", "--version", "1.1",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "expected a version newer than the newest published (1.2)" in err
    assert "--allow-downgrade" in err
    assert "Traceback" not in err

    # a withdrawn release says so in the listing (it was listed as if live before)
    code, _, err = run(
        capsys, "withdraw", repo, "edge-gw", "1.2", "--keys", keys, "--reason", "bad flash"
    )
    assert code == 0, err
    code, out, _ = run(capsys, "repo", "list", repo)
    assert code == 0 and out.startswith(row + "\twithdrawn 20") and out.endswith(": bad flash\n")


def test_errors_render_once_with_family_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "repo", "init", str(tmp_path / "r"), "--keys", "missing.json")
    assert code == 5 and err.startswith("otakit: local error: cannot read key configuration")
    code, _, err = run(capsys, "repo", "serve", str(tmp_path))
    assert code == 5 and "expected a repository" in err
    code, _, err = run(capsys, "-v", "repo", "serve", str(tmp_path))
    assert code == 5 and "Traceback" in err  # tracebacks only with -v


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, "release", "repo", "img", "--keys", "k.json", "--product", "p")
    assert code == 2


def test_generate_demo_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(KEYS_EXAMPLE, tmp_path / "k")
    before = (tmp_path / "k" / "keys.json").read_bytes()
    code, _, err = run(capsys, "keys", "generate-demo", str(tmp_path / "k"))
    assert code == 5 and "--force" in err
    assert (tmp_path / "k" / "keys.json").read_bytes() == before
    (tmp_path / "k" / "keys.json").write_text("{}")
    code, out, err = run(capsys, "keys", "generate-demo", str(tmp_path / "k"), "--force")
    assert code == 0 and "demos and tests only" in err
    assert out.strip().endswith("keys.json")
    # replaced, by the same derived demo keys (see keys-example/README.md)
    assert (tmp_path / "k" / "keys.json").read_bytes() == before
