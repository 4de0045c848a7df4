"""Shared fixtures of the CLI suites: real images, a real repository, a served copy."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from repo.serve import serve_in_thread
from tests.cli.helpers_cli import DEMO_KEYS, ext4_image, make_tree, run


@dataclass(frozen=True)
class World:
    dir: Path
    v1: Path
    v2: Path
    repo_v1: Path  # 1.0 released
    repo_v2: Path  # 1.0 and 2.0 released (with a delta)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    d = tmp_path_factory.mktemp("sigint")
    t1 = make_tree(d / "t1", seed=1)
    shutil.copytree(t1, d / "t2")
    make_tree(d / "t2", seed=2, files=20)
    v1 = ext4_image(d / "v1.img", t1)
    v2 = ext4_image(d / "v2.img", d / "t2")
    repo = d / "repo-v1"
    assert run("otakit", "repo", "init", str(repo), "--keys", str(DEMO_KEYS)).returncode == 0
    r = release(repo, v1, "1.0")
    assert r.returncode == 0, r.stderr
    repo2 = d / "repo-v2"
    shutil.copytree(repo, repo2)
    r = release(repo2, v2, "2.0")
    assert r.returncode == 0, r.stderr
    return World(d, v1, v2, repo, repo2)


def release_args(repo: Path, image: Path, version: str) -> list[str]:
    return [
        "release", str(repo), str(image), "--keys", str(DEMO_KEYS), "--product", "edge-gw",
        "--version", version, "--hardware", "board", "--level", "3", "--deltas", "1",
    ]  # fmt: skip


def release(repo: Path, image: Path, version: str) -> subprocess.CompletedProcess[str]:
    return run("otakit", *release_args(repo, image, version))


@pytest.fixture(scope="session")
def served(world: World) -> Iterator[str]:
    url, stop = serve_in_thread(world.repo_v2)
    yield url
    stop()
