"""Running a bootloader tool (grub-editenv, fw_setenv, a user's handler) with hard limits.

Every backend that shells out goes through ``run_tool`` so that the rules are the same
everywhere: an argv list (never a shell), a timeout (P4: every wait has a limit), bounded
output, and a ``BootControlError`` that carries the tool's own stderr so an operator sees why
the boot environment could not be read or written.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from verifier.bootctl.options import DEFAULT_TIMEOUT
from verifier.errors import BootControlError

#: A boot environment is a few KiB; a tool printing more than this is misbehaving.
MAX_OUTPUT = 256 * 1024
_STDERR_SHOWN = 2000


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: bytes | None = None,
    what: str,
) -> str:
    """Run ``argv``, return its stdout as text; any failure is a ``BootControlError``."""
    args = list(argv)
    try:
        proc = subprocess.run(
            args,
            input=stdin if stdin is not None else b"",
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise BootControlError(
            f"{what}: program {args[0]!r} not found",
            hint="install it or configure its path (see docs/OPERATIONS.md, 'Boot backends')",
        ) from e
    except subprocess.TimeoutExpired as e:
        raise BootControlError(
            f"{what}: {args[0]} did not finish within {timeout:g} s (command: {args})"
        ) from e
    except OSError as e:
        raise BootControlError(f"{what}: cannot run {args[0]}: {e}") from e
    stderr = proc.stderr.decode("utf-8", errors="replace").strip()[:_STDERR_SHOWN]
    if proc.returncode != 0:
        detail = f": {stderr}" if stderr else " (no error output)"
        raise BootControlError(
            f"{what}: {args[0]} exited with status {proc.returncode}, expected 0{detail}"
        )
    if len(proc.stdout) > MAX_OUTPUT:
        raise BootControlError(
            f"{what}: {args[0]} printed {len(proc.stdout)} bytes, expected at most {MAX_OUTPUT}"
        )
    try:
        return proc.stdout.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BootControlError(f"{what}: {args[0]} printed output that is not UTF-8") from e


def parse_assignments(text: str) -> dict[str, str]:
    """``name=value`` lines, as ``grub-editenv list`` and ``fw_printenv`` print them."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            env[name] = value
    return env
