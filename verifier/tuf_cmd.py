"""``otakit-device tuf``: the standalone TUF client (``verifier.tuf.standalone``).

Thin: parse, call one library function, render. Its options follow the command-line
interface the TUF conformance suite drives clients through (``tuf --metadata-url URL
--metadata-dir DIR ... refresh``), and so does its exit status: **0 on success, 1 on any
failure** — an exception to the otakit exit-code families (docs/CLI.md). The diagnostic and
the JSON error object are the contract's own: they still name the family, its code and the
error kind; only the process status is folded to 1. That is done once, for the whole group,
by ``_ExitOneGroup`` (parse errors of the group's own options included).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from verifier.cli_common import JsonOpt, new_app
from verifier.cli_contract import EXIT_OK, RunState, report_failure, run_state
from verifier.entry import interrupted_in
from verifier.errors import UsageError

#: The exit status of every failure under ``otakit-device tuf``.
EXIT_FAILURE = 1

#: The ``--help`` epilog of the group and its commands: their own two exit codes.
TUF_EPILOG = (
    "\b\nExit codes:\n"
    f"  {EXIT_OK:>3}  success\n"
    f"  {EXIT_FAILURE:>3}  any failure (the message names its family and kind)\n\n"
    "With --json a failure is a JSON error object on stdout; see docs/CLI.md."
)


def _fail(ctx: Any, exc: Exception) -> NoReturn:
    """Render ``exc`` as every command does, then exit 1 (0 stays 0: nothing to do)."""
    from typer import Abort, Exit

    if isinstance(exc, Exit | Abort) or interrupted_in(exc):
        raise exc  # --help, or Ctrl-C: the contract's own outcome (0, 130)
    code = report_failure(run_state(ctx), exc)
    raise Exit(EXIT_OK if code == EXIT_OK else EXIT_FAILURE) from None


class _ExitOneGroup(TyperGroup):
    """The ``tuf`` group: every failure below it exits 1, however it arises."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except Exception as exc:  # the group's own options failed to parse
            _fail(parent, exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            _fail(ctx, exc)


app = new_app(
    "A standalone TUF client over plain directories.\n\n"
    "Exit status 0 on success, 1 on any failure (the TUF conformance suite's interface)."
)


@dataclass(frozen=True)
class TufOptions:
    metadata_dir: Path | None
    metadata_url: str | None
    target_base_url: str | None
    target_dir: Path | None
    target_names: tuple[str, ...]

    def need(self, value: Any, option: str, command: str) -> Any:
        if value is None:
            raise UsageError(f"tuf {command}: expected {option}, found none")
        return value

    def directory(self, command: str) -> Path:
        """``--metadata-dir``: needed by every command, checked by each (so that
        ``tuf init --help`` works without it)."""
        return Path(self.need(self.metadata_dir, "--metadata-dir", command))


@app.callback(cls=_ExitOneGroup, epilog=TUF_EPILOG)
def _group(
    ctx: typer.Context,
    metadata_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Directory of the trusted metadata.")
    ] = None,
    metadata_url: Annotated[
        str | None, typer.Option(metavar="URL", help="Base URL of the repository's metadata.")
    ] = None,
    target_base_url: Annotated[
        str | None, typer.Option(metavar="URL", help="Base URL of the targets.")
    ] = None,
    target_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Directory the targets are downloaded into.")
    ] = None,
    target_name: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME", help="Target path to download (repeatable)."),
    ] = None,
) -> None:
    ctx.meta["otakit.tuf"] = TufOptions(
        metadata_dir, metadata_url, target_base_url, target_dir, tuple(target_name or ())
    )


def _options(ctx: typer.Context, json_out: bool) -> tuple[TufOptions, RunState]:
    return ctx.meta["otakit.tuf"], run_state(ctx, json_out)


@app.command(epilog=TUF_EPILOG)
def init(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(metavar="ROOT.json", help="The root to trust.")],
    json_out: JsonOpt = False,
) -> None:
    """Trust ROOT.json (written as DIR/root.json, alone)."""
    from verifier.effects import RealDisk
    from verifier.tuf.standalone import init_metadata

    opts, run = _options(ctx, json_out)
    result = init_metadata(opts.directory("init"), root, RealDisk())
    run.result(result.to_dict(), f"{result.metadata_dir}: trusting {result.describe()}")


@app.command(epilog=TUF_EPILOG)
def refresh(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Update the trusted top-level metadata from --metadata-url."""
    from verifier.effects import RealDisk
    from verifier.tuf.standalone import refresh as run_refresh

    opts, run = _options(ctx, json_out)
    directory = opts.directory("refresh")
    url = opts.need(opts.metadata_url, "--metadata-url", "refresh")
    result = run_refresh(directory, url, RealDisk())
    run.result(result.to_dict(), f"{result.metadata_dir}: trusting {result.describe()}")


@app.command(epilog=TUF_EPILOG)
def download(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Refresh, then download each --target-name into --target-dir.

    Delegations are searched as TUF says; a target already present and valid stays.
    """
    from verifier.effects import RealDisk
    from verifier.tuf.standalone import download as run_download

    opts, run = _options(ctx, json_out)
    result = run_download(
        opts.directory("download"),
        opts.need(opts.metadata_url, "--metadata-url", "download"),
        opts.need(opts.target_base_url, "--target-base-url", "download"),
        opts.need(opts.target_dir, "--target-dir", "download"),
        opts.target_names,
        RealDisk(),
    )
    lines = [
        f"{t.name}: {'downloaded' if t.downloaded else 'already present and valid'} "
        f"({t.length} bytes) -> {t.file}"
        for t in result.targets
    ]
    run.result(result.to_dict(), "\n".join(lines))
