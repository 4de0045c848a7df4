"""``otakit delta create|apply`` (the typer sub-app) with --json."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from typer.testing import CliRunner

from signer.delta_cmd import delta_app
from tests.delta.helpers_delta import BS, rand, text_like


def test_create_then_apply_json(tmp_path: Path) -> None:
    r = random.Random(5)
    base = text_like(r, 40 * BS)
    new = base[: 10 * BS] + rand(r, 3 * BS) + base[10 * BS :] + bytes(5 * BS)
    (tmp_path / "b").write_bytes(base)
    (tmp_path / "n").write_bytes(new)
    runner = CliRunner()
    res = runner.invoke(
        delta_app,
        ["create", str(tmp_path / "b"), str(tmp_path / "n"), str(tmp_path / "d"), "--json"],
    )
    assert res.exit_code == 0, res.output
    created = json.loads(res.stdout)
    assert created["verified"] is True
    assert created["delta"]["length"] == (tmp_path / "d").stat().st_size
    assert created["result"]["sha256"] == hashlib.sha256(new).hexdigest()
    assert set(created["seconds"]) >= {"total", "emit", "verify"}

    res = runner.invoke(
        delta_app,
        ["apply", str(tmp_path / "b"), str(tmp_path / "d"), str(tmp_path / "out"), "--json"],
    )
    assert res.exit_code == 0, res.output
    applied = json.loads(res.stdout)
    assert (tmp_path / "out").read_bytes() == new
    assert applied["result"]["sha256"] == created["result"]["sha256"]
    assert applied["delta_header"] == created["delta_header"]


def test_apply_refuses_a_wrong_base(tmp_path: Path) -> None:
    r = random.Random(6)
    base = rand(r, 8 * BS)
    (tmp_path / "b").write_bytes(base)
    (tmp_path / "n").write_bytes(base[BS:] + rand(r, BS))
    runner = CliRunner()
    assert (
        runner.invoke(
            delta_app, ["create", str(tmp_path / "b"), str(tmp_path / "n"), str(tmp_path / "d")]
        ).exit_code
        == 0
    )
    (tmp_path / "b").write_bytes(rand(r, 8 * BS))
    res = runner.invoke(
        delta_app, ["apply", str(tmp_path / "b"), str(tmp_path / "d"), str(tmp_path / "out")]
    )
    assert res.exit_code != 0
    from repo.errors import SelfCheckError
    from verifier.errors import ImageHashMismatchError

    assert isinstance(res.exception, SelfCheckError)
    assert isinstance(res.exception.__cause__, ImageHashMismatchError)
    assert not (tmp_path / "out").exists() or (tmp_path / "out").read_bytes() != base


def _create(tmp_path: Path, *extra: str) -> dict[str, object]:
    res = CliRunner().invoke(
        delta_app,
        ["create", str(tmp_path / "b"), str(tmp_path / "n"), str(tmp_path / "d"), "--json", *extra],
    )
    assert res.exit_code == 0, res.output
    doc: dict[str, object] = json.loads(res.stdout)
    return doc


def test_create_format_1_and_max(tmp_path: Path) -> None:
    """``--format 1`` writes a version-1 container without DIFF ops; ``--max`` codes at
    level 12 with the DIFF trial and is never larger than the default."""
    from tests.delta.helpers_delta import relocated, table
    from verifier.delta.format import prefix_length_of

    r = random.Random(8)
    old_bin, new_bin = relocated(r, 64 * BS)
    (tmp_path / "b").write_bytes(text_like(r, 8 * BS) + old_bin)
    (tmp_path / "n").write_bytes((tmp_path / "b").read_bytes()[: 8 * BS] + new_bin)

    v1 = _create(tmp_path, "--format", "1")
    blob = (tmp_path / "d").read_bytes()
    header, ops = table(blob[: prefix_length_of(blob)])
    assert (v1["format"], header.version) == (1, 1)
    assert v1["ops"]["DIFF"] == 0  # type: ignore[index]
    assert all(o.kind.name != "DIFF" for o in ops)

    v2 = _create(tmp_path)
    assert (v2["format"], v2["level"]) == (1, 3)  # no DIFF op: readable by format-1 devices
    assert v2["ops"]["DIFF"] == 0  # type: ignore[index]  # the trial is --max's

    vmax = _create(tmp_path, "--max")
    assert (vmax["format"], vmax["level"]) == (2, 12)
    assert vmax["ops"]["DIFF"] > 0  # type: ignore[index]
    assert vmax["delta"]["length"] < v1["delta"]["length"]  # type: ignore[index]
    assert vmax["delta"]["length"] <= v2["delta"]["length"]  # type: ignore[index]
    assert vmax["verified"] is True


def test_create_refuses_an_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"x" * BS)
    (tmp_path / "n").write_bytes(b"y" * BS)
    res = CliRunner().invoke(
        delta_app,
        ["create", str(tmp_path / "b"), str(tmp_path / "n"), str(tmp_path / "d"), "--format", "3"],
    )
    assert res.exit_code == 2
    assert not (tmp_path / "d").exists()
