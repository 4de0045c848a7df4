"""``otakit-device tuf``: the standalone TUF client (``verifier.tuf.standalone``).

Thin: parse, call one library function, render. Its options follow the command-line
interface the TUF conformance suite drives clients through (``tuf --metadata-url URL
--metadata-dir DIR ... refresh``), and so does its exit status: **0 on success, 1 on any
failure** — an exception to the otakit exit-code families (docs/CLI.md). The diagnostic and
the JSON error object are the contract's own: they still name the family, its code and the
error kind; only the process status is folded to 1. That is done once, for the whole group,
by the device CLI's runner (``folded`` parsers: parse errors of the group's own options
included).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from verifier.cli_contract import EXIT_OK, RunState
from verifier.errors import UsageError

#: The exit status of every failure under ``otakit-device tuf``.
EXIT_FAILURE = 1

#: The ``--help`` epilog of the group and its commands: their own two exit codes.
TUF_EPILOG = (
    "Exit codes:\n"
    f"  {EXIT_OK:>3}  success\n"
    f"  {EXIT_FAILURE:>3}  any failure (the message names its family and kind)\n\n"
    "With --json a failure is a JSON error object on stdout; see docs/CLI.md."
)


def _need(value: Any, option: str, command: str) -> Any:
    if value is None:
        raise UsageError(f"tuf {command}: expected {option}, found none")
    return value


def _directory(a: argparse.Namespace, command: str) -> Path:
    """``--metadata-dir``: needed by every command, checked by each (so that
    ``tuf init --help`` works without it)."""
    return Path(_need(a.metadata_dir, "--metadata-dir", command))


def init(c: Any, a: argparse.Namespace) -> None:
    """Trust ROOT.json (written as DIR/root.json, alone)."""
    from verifier.effects import RealDisk
    from verifier.tuf.standalone import init_metadata

    result = init_metadata(_directory(a, "init"), a.root, RealDisk())
    _result(c.run, result)


def refresh(c: Any, a: argparse.Namespace) -> None:
    """Update the trusted top-level metadata from --metadata-url."""
    from verifier.effects import RealDisk
    from verifier.tuf.standalone import refresh as run_refresh

    directory = _directory(a, "refresh")
    url = _need(a.metadata_url, "--metadata-url", "refresh")
    _result(c.run, run_refresh(directory, url, RealDisk()))


def _result(run: RunState, result: Any) -> None:
    run.result(result.to_dict(), f"{result.metadata_dir}: trusting {result.describe()}")


def download(c: Any, a: argparse.Namespace) -> None:
    """Refresh, then download each --target-name into --target-dir.

    Delegations are searched as TUF says; a target already present and valid stays.
    """
    from verifier.effects import RealDisk
    from verifier.tuf.standalone import download as run_download

    result = run_download(
        _directory(a, "download"),
        _need(a.metadata_url, "--metadata-url", "download"),
        _need(a.target_base_url, "--target-base-url", "download"),
        _need(a.target_dir, "--target-dir", "download"),
        tuple(a.target_name or ()),
        RealDisk(),
    )
    lines = [
        f"{t.name}: {'downloaded' if t.downloaded else 'already present and valid'} "
        f"({t.length} bytes) -> {t.file}"
        for t in result.targets
    ]
    c.run.result(result.to_dict(), "\n".join(lines))


def add_to(sub: Any, add_command: Any) -> None:
    """Register the ``tuf`` group under the device CLI's commands (``sub``)."""
    group = sub.add_parser(
        "tuf",
        help="A standalone TUF client over plain directories.",
        description="A standalone TUF client over plain directories.\n\n"
        "Exit status 0 on success, 1 on any failure (the TUF conformance suite's\ninterface).",
        epilog=TUF_EPILOG,
        usage_args="COMMAND [ARGS]...",
        folded=True,
    )
    group.add_argument("--metadata-dir", type=Path, metavar="DIR",
                       help="Directory of the trusted metadata.")  # fmt: skip
    group.add_argument("--metadata-url", metavar="URL",
                       help="Base URL of the repository's metadata.")  # fmt: skip
    group.add_argument("--target-base-url", metavar="URL", help="Base URL of the targets.")
    group.add_argument("--target-dir", type=Path, metavar="DIR",
                       help="Directory the targets are downloaded into.")  # fmt: skip
    group.add_argument("--target-name", action="append", metavar="NAME",
                       help="Target path to download (repeatable).")  # fmt: skip
    group.set_defaults(json_out=False)
    commands = group.add_subparsers(
        dest="tuf_command", metavar="COMMAND", title="Commands", prog=f"{group.prog}"
    )
    p = add_command(commands, "init", init, usage_args="ROOT.json", epilog=TUF_EPILOG,
                    folded=True)  # fmt: skip
    p.add_argument("root", type=Path, metavar="ROOT.json", help="The root to trust.")
    add_command(commands, "refresh", refresh, epilog=TUF_EPILOG, folded=True)
    add_command(commands, "download", download, epilog=TUF_EPILOG, folded=True)
