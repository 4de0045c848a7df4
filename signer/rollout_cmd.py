"""``otakit rollout status|advance|halt|resume|recall|gate``: thin shells over ``repo.rollout``.

The arguments follow ``otakit withdraw``: ``REPO PRODUCT VERSION``, then ``--keys`` for the
commands that sign. Each signing command is one signed targets change, and a rerun of one
that took effect signs nothing and says so (``"already": true``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from repo.errors import UsageError
from repo.keys import load_key_config, load_role_keys, tty_prompt
from repo.rollout import (
    GateAction,
    Publisher,
    RolloutChange,
    advance,
    gate,
    halt,
    recall,
    resume,
    status,
)
from repo.rollout_spec import parse_share
from signer.cli_options import ProductKeysOpt
from verifier.cli_common import JsonOpt, new_app
from verifier.cli_contract import EPILOG, RunState, run_state

rollout_app = new_app("Staged rollouts: watch, advance, halt, resume, recall, gate.")

RepoArg = Annotated[Path, typer.Argument(metavar="REPO", help="Repository directory.")]
ProductArg = Annotated[str, typer.Argument(metavar="PRODUCT", help="Product, e.g. edge-gw.")]
VersionArg = Annotated[str, typer.Argument(metavar="VERSION", help="The release's version.")]
KeysOpt = Annotated[
    Path, typer.Option("--keys", help="Key configuration (keys.json) naming each role's keys.")
]
ReportsOpt = Annotated[
    Path | None,
    typer.Option("--reports", metavar="DIR", help="Reports directory (otakit fleet collect)."),
]


def _now() -> datetime:
    return datetime.now(UTC)


def _publisher(
    run: RunState, keys: Path, product: str, product_keys: Path | None = None
) -> Publisher:
    pk = None if product_keys is None else load_role_keys(product_keys, product)
    return Publisher(load_key_config(keys), product_keys=pk, prompt=tty_prompt(), progress=run.note)


def _render(run: RunState, r: RolloutChange, verb: str) -> None:
    for w in r.warnings:
        run.warn(w)
    run.result(r.to_json(), "\n".join(r.targets))
    name = f"{r.product} {r.version}"
    if r.already:
        run.note(f"{name} was {verb} already; nothing was signed")
    else:
        run.note(
            f"{verb} {name} ({len(r.changed)} target(s); targets v{r.targets_version}, "
            f"timestamp v{r.timestamp_version})"
        )


@rollout_app.command("status", epilog=EPILOG)
def status_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: ProductArg,
    version: VersionArg,
    reports: ReportsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Where a release's rollout stands (verified; needs no keys).

    The signed policy, the share of the fleet allowed now, the next opening, halted,
    withdrawn or recalled; with --reports, how the reporting devices fare on it.
    """
    run = run_state(ctx, json_out)
    s = status(repo, product, version, _now(), reports_dir=reports, warn=run.warn)
    run.result(s.to_json(), s.text())


@rollout_app.command("halt", epilog=EPILOG)
def halt_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: ProductArg,
    version: VersionArg,
    keys: KeysOpt,
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Halt a release: no device starts it; devices on it stay.

    A release without waves gets a halted policy for the whole fleet.
    """
    run = run_state(ctx, json_out)
    _render(
        run,
        halt(repo, product, version, _now(), _publisher(run, keys, product, product_keys)),
        "halted",
    )


@rollout_app.command("resume", epilog=EPILOG)
def resume_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: ProductArg,
    version: VersionArg,
    keys: KeysOpt,
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Lift a halt; the waves keep their times.

    A withdrawn or recalled release cannot be resumed.
    """
    run = run_state(ctx, json_out)
    _render(
        run,
        resume(repo, product, version, _now(), _publisher(run, keys, product, product_keys)),
        "resumed",
    )


@rollout_app.command("advance", epilog=EPILOG)
def advance_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: ProductArg,
    version: VersionArg,
    keys: KeysOpt,
    to: Annotated[
        str | None,
        typer.Option(metavar="SHARE", help="Open every wave up to SHARE now, e.g. 50%."),
    ] = None,
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Open the next wave now (or every wave up to --to SHARE).

    With --to a rerun signs nothing; without it, each run opens one more wave.
    """
    run = run_state(ctx, json_out)
    to_bp = None if to is None else parse_share(to, "--to")
    r = advance(repo, product, version, _now(), _publisher(run, keys, product, product_keys), to_bp)
    _render(run, r, "advanced")


@rollout_app.command("recall", epilog=EPILOG)
def recall_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: ProductArg,
    version: VersionArg,
    keys: KeysOpt,
    reason: Annotated[str, typer.Option(help="Why (one line; devices show it in status).")],
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recall a release: devices on it go back to the previous image.

    A withdrawal with recall: nobody starts it, and a device running it switches back
    to its other slot (or installs the newest release not taken back).
    """
    run = run_state(ctx, json_out)
    r = recall(repo, product, version, reason, _now(), _publisher(run, keys, product, product_keys))
    _render(run, r, "recalled")


@rollout_app.command("gate", epilog=EPILOG)
def gate_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: ProductArg,
    version: VersionArg,
    keys: KeysOpt,
    reports: Annotated[
        Path,
        typer.Option("--reports", metavar="DIR", help="Reports directory (otakit fleet collect)."),
    ],
    max_failure_rate: Annotated[
        float,
        typer.Option(metavar="R", help="Trip above this failed/attempted fraction, e.g. 0.05."),
    ],
    min_reports: Annotated[
        int, typer.Option(min=1, metavar="N", help="Trip only once N devices attempted it.")
    ] = 10,
    action: Annotated[
        str, typer.Option(metavar="ACTION", help="What tripping signs: halt or recall.")
    ] = "halt",
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Halt (or recall) a release when too many devices fail on it.

    Failure rate = devices whose last failed image is VERSION / devices that attempted it.
    Exits 0 whether or not it tripped; --json says "tripped".
    """
    run = run_state(ctx, json_out)
    g = gate(
        repo, product, version, reports, _now(), _publisher(run, keys, product, product_keys),
        max_failure_rate=max_failure_rate, min_reports=min_reports,
        action=_gate_action(action), warn=run.warn,
    )  # fmt: skip
    if g.change is not None:
        for w in g.change.warnings:
            run.warn(w)
    run.result(g.to_json(), g.text())


def _gate_action(action: str) -> GateAction:
    if action == "halt":
        return "halt"
    if action == "recall":
        return "recall"
    raise UsageError(f"--action: expected halt or recall, found {action!r}")
