"""The device-only install, built once per session from requirements/device.lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import served, world  # noqa: F401  (the CLI suites' repository)
from tests.cli.test_contract import paths  # noqa: F401  (the contract rows' paths)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def device_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding only the device install (tools/install-device.sh: the hash-locked
    dependencies, then the otakit wheel with --no-deps; no pip), made with this interpreter's
    pip and the machine's package index, as an image build would."""
    target = tmp_path_factory.mktemp("device-install") / "venv"
    proc = subprocess.run(
        [str(ROOT / "tools" / "install-device.sh"), str(target)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target
