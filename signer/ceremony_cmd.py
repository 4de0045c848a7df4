"""``otakit repo stage|sign|sign-status|publish``: multi-party signing of a staged change.

Thin shells over ``repo.ceremony`` (the file travels between holders; see docs/OPERATIONS.md
"Initial ceremony", "Rotation"). The status command is ``sign-status`` rather than a
second form of ``repo status``: that one reports a repository's expiry and takes a
directory; overloading it with a file argument would give one command two JSON schemas
(and ``sign-status`` sits next to ``sign``, short enough to keep ``repo --help`` uncut).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from repo.ceremony import publish_file, sign_file, stage_file, status_file
from repo.keys import load_key_config, tty_prompt
from repo.repository import Expiries
from verifier.cli_common import JsonOpt
from verifier.cli_contract import EPILOG, run_state

StagedArg = Annotated[Path, typer.Argument(metavar="STAGED", help="Staged-change file.")]
RepoArg = Annotated[Path, typer.Argument(metavar="REPO", help="Repository directory.")]


def _now() -> datetime:
    return datetime.now(UTC)


def _short(keyids: list[str]) -> str:
    return ", ".join(k[:12] for k in keyids) or "-"


def stage(
    ctx: typer.Context,
    repo: RepoArg,
    role: Annotated[str, typer.Argument(metavar="ROLE", help="root or targets.")],
    out: Annotated[Path, typer.Option("--out", help="Staged-change file to write (new).")],
    keys: Annotated[
        Path | None,
        typer.Option("--keys", help="For root: the key configuration root N+1 grants."),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option(min=1, metavar="DAYS", help="Expiry of the staged role (days)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Stage a change to root or targets, unsigned.

    root: root N+1 from --keys (any role's keys and thresholds may change), with targets
    N+1 when its keys change. targets: targets N+1, same content, fresh expiry. Every key
    holder then runs 'otakit repo sign OUT --key URI'.
    """
    run = run_state(ctx, json_out)
    conf = load_key_config(keys) if keys is not None else None
    d = Expiries()
    exp = Expiries(
        root=timedelta(days=expires_in) if expires_in and role == "root" else d.root,
        targets=timedelta(days=expires_in) if expires_in and role == "targets" else d.targets,
    )
    staged = stage_file(repo, role, out, _now(), keys=conf, expiries=exp)
    docs = [f"{d.signed.type} v{d.signed.version}" for d in staged.documents]
    run.result(
        {"staged": str(out), "change": staged.change, "documents": docs},
        f"{out}: {' + '.join(docs)} (unsigned)",
    )


def sign(
    ctx: typer.Context,
    staged: StagedArg,
    key: Annotated[
        str,
        typer.Option(
            "--key", metavar="URI", help="Signer URI of your key: file2:PATH, envvar:NAME, hsm:N."
        ),
    ],
    secret_env: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Environment variable holding the key's passphrase or PIN."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add your key's signature to STAGED (nothing else).

    Signs every document of STAGED that lists the key; signing twice is a no-op.
    """
    run = run_state(ctx, json_out)
    outcome = sign_file(staged, key, secret_env=secret_env, prompt=tty_prompt())
    lines = [f"signed {d} with key {outcome.keyid[:12]}" for d in outcome.signed]
    lines += [f"{d}: key {outcome.keyid[:12]} had already signed" for d in outcome.already]
    run.result({"staged": str(staged), **outcome.to_json()}, "\n".join(lines))


def sign_status(
    ctx: typer.Context,
    staged: StagedArg,
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="Check against this repository's published root too."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Who has signed STAGED and who is missing.

    Per document and per root whose threshold applies; with --repo, against the
    published root (and a stale change is reported).
    """
    run = run_state(ctx, json_out)
    status = status_file(staged, repo)
    lines = []
    for d in status.documents:
        for a in d.authorities:
            need = "required" if a.required else "optional bridge"
            mark = "met" if a.met else "NOT met"
            lines.append(
                f"{d.role} v{d.version}  {a.authority} {a.role} keys ({need}): "
                f"{len(a.signed)} of {a.threshold} {mark}; signed: {_short(list(a.signed))}; "
                f"missing: {_short(list(a.missing))}"
            )
        if d.invalid:
            lines.append(f"{d.role} v{d.version}  INVALID signatures: {_short(list(d.invalid))}")
        if d.foreign:
            lines.append(f"{d.role} v{d.version}  signatures of unlisted keys: "
                         f"{_short(list(d.foreign))}")  # fmt: skip
    lines += [f"problem: {p}" for p in status.problems]
    lines.append("ready to publish" if status.ready else "not ready to publish")
    run.result({"staged": str(staged), **status.to_json()}, "\n".join(lines))


def publish(
    ctx: typer.Context,
    staged: StagedArg,
    repo: RepoArg,
    keys: Annotated[
        list[Path],
        typer.Option(
            "--keys",
            help="Key configuration with the online (snapshot, timestamp) keys; "
            "repeat to add the old ones (bridges an online key rotation).",
        ),
    ],
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish a publication interrupted after its new root."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Publish STAGED once every threshold is met.

    Snapshot and timestamp are re-signed with the online keys of --keys.
    """
    run = run_state(ctx, json_out)
    confs = [load_key_config(k) for k in keys]
    result = publish_file(staged, repo, confs, _now(), prompt=tty_prompt(), resume=resume)
    for w in result.warnings:
        run.warn(w)
    run.result(result.to_json(), "written in order: " + " ".join(result.written))
    mode = "" if result.change != "root" else " (bridged)" if result.bridged else " (root first)"
    run.note(f"published the {result.change} change{mode}")


def register(app: typer.Typer) -> None:
    """Add the ceremony commands to the ``repo`` app."""
    for name, fn in (
        ("stage", stage),
        ("sign", sign),
        ("sign-status", sign_status),
        ("publish", publish),
    ):
        app.command(name, epilog=EPILOG)(fn)
