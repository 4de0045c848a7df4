"""The typer pieces both CLIs declare the same way (the contract itself is in
``verifier.cli_contract``, which stays free of typer so the entry points load fast).

Global options are declared once here: ``-v``, ``--json`` (also accepted by every command),
``--version``; and ``new_app`` builds every app and sub-app with the same help, epilog and
traceback settings.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from verifier import __version__
from verifier.cli_contract import EPILOG, RunState, setup_logging

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
VerboseOpt = Annotated[
    int, typer.Option("-v", "--verbose", count=True, help="More log detail; tracebacks on errors.")
]


def _show_version(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(f"{ctx.find_root().info_name} {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
]


def new_app(help_text: str, name: str | None = None) -> typer.Typer:
    """A typer app (or sub-app) set up the one way both CLIs are: exit-code epilog, plain
    help that wraps at 80 columns instead of cutting option names, no pretty tracebacks and
    no locals (they may hold key material), shell completion available."""
    return typer.Typer(
        name=name,
        help=help_text,
        epilog=EPILOG,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        no_args_is_help=True,
        context_settings={"max_content_width": 80},
    )


def start(
    ctx: typer.Context, prog: str, verbose: int, json_out: bool, *, quiet_level: int
) -> RunState:
    """The root callback's work on both CLIs: one ``RunState`` for the invocation (the one
    ``run_app`` passed in, or a new one when the app is driven directly), logging routed
    through it."""
    run = ctx.obj if isinstance(ctx.obj, RunState) else RunState(prog)
    ctx.obj = run
    run.verbose, run.json = verbose, json_out
    setup_logging(run, verbose, quiet_level=quiet_level)
    return run


QUIET_PUBLISHER = logging.WARNING
QUIET_DEVICE = logging.INFO  # a device logs its stages: the journal of what it did
