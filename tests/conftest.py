"""Shared fixtures.

System tools (nginx, grub-editenv, fw_setenv, softhsm2) are real components installed by
``.ci/run``. On a developer machine without them the tests that need them are skipped with the
install hint; under CI (env ``CI`` set) a missing tool is a failure, so CI can never go green
by silently skipping the integration tests.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator

import pytest

APT_HINT = (
    "bash .ci/system-deps (apt-get install nginx-light softhsm2 opensc grub-common "
    "libubootenv-tool zstd xdelta3 e2fsprogs squashfs-tools erofs-utils btrfs-progs dosfstools "
    "fdisk gdisk)"
)


def find_tool(name: str, extra_dirs: tuple[str, ...] = ("/usr/sbin", "/sbin")) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require(name: str) -> str:
    """The tool's path, or skip the test (fail it under CI)."""
    path = find_tool(name)
    if path is None:
        msg = f"system tool {name!r} not found (install with: {APT_HINT})"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must run every integration test")
        pytest.skip(msg)
    return path


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    """``require_tool("nginx")`` returns the tool's path, or skips (fails under CI)."""
    return require


@pytest.fixture(autouse=True)
def _sigint_disposition_restored() -> Iterator[None]:
    """A test that runs a CLI's ``main`` in-process leaves SIGINT ignored (``exit_with``
    ignores it for the interpreter's shutdown), and an ignored signal stays ignored in every
    process started later: a subprocess test sending Ctrl-C then waited in vain (the CI
    failure of ``test_a_real_device_reports_and_rollout_status_counts_it``). Each test starts
    with the disposition the worker had."""
    before = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not before:
        signal.signal(signal.SIGINT, before)
