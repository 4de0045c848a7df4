"""The options each boot backend takes, and the one check every backend's options pass.

A device stores its backend options for good (``config.json``), so they are checked whole where
they enter: when ``DeviceConfig`` is built at ``init`` (a ``UsageError``: the operator's input),
when a stored configuration is read back (a ``ConfigError``: the state is wrong), and when a
backend is built from them. A typo is then found at ``init``, not at the first reboot, and an
option that names a file is absolute: a relative one would name another file from every working
directory (``update`` from cron, the health-check unit).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Literal

from verifier.errors import ConfigError, OtakitError
from verifier.preflight import require_absolute

#: seconds a boot tool may run (``timeout`` option); here, not in ``external``, so that
#: reading options does not load ``subprocess`` (the ``file`` backend never runs a tool)
DEFAULT_TIMEOUT = 30.0

#: ``path``: an absolute file name; ``program``: a name looked up in PATH (as the defaults are)
#: or an absolute file name; ``command``: a program and its arguments, split like a shell would
#: (never run by one); ``cmdline``: a path, or ``none`` to ask the backend; ``seconds``: a timeout.
Kind = Literal["path", "program", "command", "cmdline", "seconds"]

OPTIONS: Mapping[str, Mapping[str, Kind]] = {
    "file": {"path": "path"},
    "grub": {"envfile": "path", "cmdline": "path", "editenv": "program", "timeout": "seconds"},
    "uboot": {
        "config": "path",
        "cmdline": "path",
        "printenv": "program",
        "setenv": "program",
        "timeout": "seconds",
    },
    "command": {"handler": "command", "cmdline": "cmdline", "timeout": "seconds"},
}
#: Options a backend cannot do without, with what their value looks like.
REQUIRED: Mapping[str, Mapping[str, str]] = {"command": {"handler": "PROGRAM [ARGS]"}}
MAX_TIMEOUT = 600.0


def check_options(
    options: Mapping[str, str], backend: str, error: type[OtakitError] = ConfigError
) -> None:
    """Refuse an unknown backend, unknown or missing options and values of the wrong kind."""
    spec = OPTIONS.get(backend)
    if spec is None:
        raise error(
            f"boot backend: expected one of {', '.join(sorted(OPTIONS))}, found {backend!r}"
        )
    extra = set(options) - set(spec)
    if extra:
        raise error(
            f"boot backend {backend!r}: unknown options {sorted(extra)}; "
            f"expected a subset of {sorted(spec)}"
        )
    for name, form in REQUIRED.get(backend, {}).items():
        if name not in options:
            raise error(f"boot backend {backend!r}: expected option {name}={form}, found none")
    for name, value in options.items():
        _check_value(spec[name], value, f"boot backend {backend!r} option {name}", error)


def _check_value(kind: Kind, value: str, what: str, error: type[OtakitError]) -> None:
    hint = (
        "boot options that name files are stored with the device and used from any "
        "directory; give them as absolute paths"
    )
    if kind == "seconds":
        seconds(value, what, error)
    elif kind == "program":
        _check_program(value, what, error, hint)
    elif kind == "command":
        _check_program(split_command(value, what, error)[0], what, error, hint)
    elif kind == "path" or value != "none":  # kind "cmdline": a path, or "none"
        require_absolute(value, what, error, hint)


def _check_program(value: str, what: str, error: type[OtakitError], hint: str) -> None:
    if not value:
        raise error(f"{what}: expected a program name or an absolute path, found ''")
    if "/" in value:  # a bare name is found in PATH, like the defaults; a path must be absolute
        require_absolute(value, what, error, hint)


def split_command(value: str, what: str, error: type[OtakitError] = ConfigError) -> list[str]:
    """A program and its arguments, split like a shell would split them; never run by one."""
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise error(f"{what}: {e}") from e
    if not words:
        raise error(f"{what}: expected PROGRAM [ARGS], found {value!r}")
    return words


def seconds(raw: str, what: str, error: type[OtakitError] = ConfigError) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT:
        raise error(f"{what}: expected 0-{MAX_TIMEOUT:g} seconds, found {raw!r}")
    return value


def timeout_option(options: Mapping[str, str]) -> float:
    """The checked ``timeout`` option (see ``check_options``), or the tools' default."""
    return seconds(options["timeout"], "timeout") if "timeout" in options else DEFAULT_TIMEOUT
