"""Fixtures shared by the end-to-end tests: each module publishes its own ``published``
repository (a module-scoped fixture), and ``served`` serves a private copy of it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repo.nginx import nginx_serving


@pytest.fixture
def served(
    published: Path, tmp_path: Path, require_tool: Callable[[str], str]
) -> Iterator[tuple[str, Path]]:
    """A private copy of the module's published repository, served by a fresh nginx."""
    repo = tmp_path / "repo"
    shutil.copytree(published / "repo", repo)
    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        yield url, repo
