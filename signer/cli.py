"""The publisher's command line: ``otakit``.

Each command parses its options, calls one library function and renders the result. Errors
are rendered in exactly one place (``main``): a ``PublisherError`` prints its diagnostic and
exits with its family's stable code; a traceback appears only with ``-v``. Data goes to
stdout (``--json`` for machines), progress and diagnostics to stderr. Typer's
``pretty_exceptions_show_locals`` is off because locals can hold key material.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from securesystemslib.signer import Signer  # type: ignore[attr-defined]

from repo.errors import PublisherError
from repo.keys import (
    KeyConfig,
    PromptFn,
    load_available_signers,
    load_key_config,
    tty_prompt,
)
from repo.refresh import ExpiryWarning, refresh, repository_status
from repo.repository import Expiries, init, load_role_signers
from repo.roles import ONLINE_ROLES, TOP_LEVEL_ROLES
from repo.rotate import rotate_root
from repo.serve import make_server, server_url
from signer.compress import CompressSettings, image_length
from signer.delta.release import delta_builder
from signer.delta_cmd import delta_app
from signer.demo import run_demo
from signer.keygen import generate_demo_keys
from signer.release import list_published, release

app = typer.Typer(
    name="otakit",
    help="Publish signed OS updates: TUF repository, releases, keys.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)
repo_app = typer.Typer(
    help="Create, serve, refresh and re-key TUF repositories.", no_args_is_help=True
)
keys_app = typer.Typer(help="Key management.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")
app.add_typer(keys_app, name="keys")
app.add_typer(delta_app, name="delta")

_err = Console(stderr=True)


@dataclass
class _Options:
    verbose: bool = False


_opts = _Options()

KeysOpt = Annotated[
    Path,
    typer.Option("--keys", help="Key configuration (keys.json) naming each role's keys."),
]
RepoArg = Annotated[Path, typer.Argument(help="Repository directory.")]
DaysOpt = Annotated[int | None, typer.Option(min=1, help="Override the default expiry (days).")]


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Tracebacks on errors.")] = False,
) -> None:
    _opts.verbose = verbose


def _expiries(root: int | None, targets: int | None, snap: int | None, ts: int | None) -> Expiries:
    d = Expiries()
    return Expiries(
        root=timedelta(days=root) if root else d.root,
        targets=timedelta(days=targets) if targets else d.targets,
        snapshot=timedelta(days=snap) if snap else d.snapshot,
        timestamp=timedelta(days=ts) if ts else d.timestamp,
    )


def _now() -> datetime:
    return datetime.now(UTC)


@repo_app.command("init")
def repo_init(
    repo: RepoArg,
    keys: KeysOpt,
    root_expiry_days: DaysOpt = None,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Create a new TUF repository (version 1 of every role, consistent snapshots)."""
    keyconf = load_key_config(keys)
    signers = load_role_signers(keyconf, TOP_LEVEL_ROLES, prompt=tty_prompt())
    exp = _expiries(
        root_expiry_days, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days
    )
    state = init(repo, keyconf, _now(), signers=signers, expiries=exp)
    _err.print(f"created repository {repo}")
    print(state.repo_dir / "metadata" / "1.root.json")


@repo_app.command("serve")
def repo_serve(
    repo: RepoArg,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8080,
) -> None:
    """Serve REPO read-only over HTTP (metadata/ and targets/ only) until interrupted."""
    server = make_server(repo, host, port)
    print(server_url(server), flush=True)
    _err.print(f"serving {repo}; press Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@repo_app.command("list")
def repo_list(
    repo: RepoArg,
    product: Annotated[str | None, typer.Option(help="Only this product.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List published artifacts (verified against the repository's root), oldest first."""
    arts = list_published(repo, product)
    if json_out:
        print(json.dumps([a.to_json() for a in arts], indent=2))
        return
    for a in arts:
        print(f"{a.info.product}\t{a.info.version}\t{a.info.kind}\t{a.length}\t{a.target_path}")


@repo_app.command("refresh")
def repo_refresh(
    repo: RepoArg,
    keys: KeysOpt,
    within: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="HOURS",
            help="Do nothing unless snapshot or timestamp expire within HOURS (for a timer).",
        ),
    ] = None,
    warn_days: Annotated[
        float, typer.Option(min=0, help="Warn when root or targets expire within DAYS.")
    ] = 14,
    targets: Annotated[
        bool,
        typer.Option("--targets", help="Also re-sign targets (needs the offline targets keys)."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Re-sign snapshot and timestamp with the online keys (targets too with --targets)."""
    keyconf = load_key_config(keys)
    roles = ("targets", *ONLINE_ROLES) if targets else ONLINE_ROLES
    signers = load_role_signers(keyconf, roles, prompt=tty_prompt())
    result = refresh(
        repo,
        signers,
        _now(),
        within=None if within is None else timedelta(hours=within),
        targets=targets,
        warn_within=timedelta(days=warn_days),
        expiries=_expiries(None, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days),
    )
    _print_warnings(result.warnings)
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
        return
    if not result.refreshed:
        _err.print(result.reason, markup=False)
        return
    for role in result.refreshed:
        when = result.to_json()["roles"][role]["expires"]
        print(f"{role} v{result.versions[role]} expires {when}")
    _err.print(f"refreshed {' and '.join(result.refreshed)} ({result.reason})", markup=False)


def _print_warnings(warnings: Sequence[ExpiryWarning]) -> None:
    for w in warnings:
        _err.print(
            f"WARNING: {w.message()}",
            style="bold red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@repo_app.command("status")
def repo_status(
    repo: RepoArg,
    warn_days: Annotated[
        float, typer.Option(min=0, help="Warn when root or targets expire within DAYS.")
    ] = 14,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Version and expiry of every role (verified; needs no keys), with expiry warnings."""
    result = repository_status(repo, _now(), warn_within=timedelta(days=warn_days))
    _print_warnings(result.warnings)
    if json_out:
        doc = result.to_json()
        del doc["refreshed"], doc["reason"]
        print(json.dumps(doc, indent=2))
        return
    for role, info in result.to_json()["roles"].items():
        print(f"{role}\tv{info['version']}\texpires {info['expires']}")


@repo_app.command("rotate-root")
def repo_rotate_root(
    repo: RepoArg,
    old_keys: Annotated[
        Path,
        typer.Option("--old-keys", help="Key configuration matching the current root."),
    ],
    new_keys: Annotated[
        Path,
        typer.Option("--new-keys", help="Key configuration the new root will grant."),
    ],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Finish a rotation interrupted after publishing its new root."
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    root_expiry_days: DaysOpt = None,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """New root N+1 with NEW keys, signed by old and new root keys; re-sign the rest.

    Revoke a key by leaving it out of NEW; renew an expiring root with OLD = NEW.
    """
    old_conf, new_conf = load_key_config(old_keys), load_key_config(new_keys)
    prompt = tty_prompt()
    old_signers = _available(old_conf, TOP_LEVEL_ROLES, "old", prompt)
    new_signers = _available(new_conf, TOP_LEVEL_ROLES, "new", prompt)
    exp = _expiries(
        root_expiry_days, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days
    )
    result = rotate_root(
        repo,
        new_conf,
        _now(),
        old_signers=old_signers,
        new_signers=new_signers,
        expiries=exp,
        resume=resume,
    )
    for w in result.warnings:
        _err.print(f"WARNING: {w}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
        return
    for c in result.changes:
        if c.changed:
            print(
                f"{c.role}: added {[k[:12] for k in c.added]}, revoked "
                f"{[k[:12] for k in c.revoked]}, threshold {c.threshold[0]} -> {c.threshold[1]}"
            )
    print("written in order: " + " ".join(result.written))
    mode = "bridged" if result.bridged else "root first"
    _err.print(
        f"rotated root v{result.old_root_version} -> v{result.root_version} ({mode})",
        markup=False,
    )


def _available(
    conf: KeyConfig, roles: tuple[str, ...], which: str, prompt: PromptFn | None
) -> dict[str, list[Signer]]:
    """Every loadable key; the threshold checks decide whether that is enough."""
    out: dict[str, list[Signer]] = {}
    for role in roles:
        signers, problems = load_available_signers(conf, role, prompt=prompt)
        for p in problems:
            _err.print(f"note: {which} {p}", markup=False, highlight=False)
        out[role] = signers
    return out


@keys_app.command("generate-demo")
def keys_generate_demo(
    directory: Annotated[Path, typer.Argument(help="Directory for the demo keys.")],
    force: Annotated[bool, typer.Option(help="Replace existing demo keys.")] = False,
) -> None:
    """Generate PUBLIC, throwaway ed25519 keys for demos and tests (never for production)."""
    conf = generate_demo_keys(directory, overwrite=force)
    _err.print("[yellow]demo keys are for demos and tests only; never use them in production")
    print(conf.source)


@app.command("release")
def release_cmd(
    repo: RepoArg,
    image: Annotated[Path, typer.Argument(help="Image file or block device to release.")],
    keys: KeysOpt,
    product: Annotated[str, typer.Option(help="Product name, e.g. edge-gw.")],
    version: Annotated[str, typer.Option(help="Image version, e.g. 2.4.1.")],
    hardware: Annotated[
        list[str] | None, typer.Option(help="Compatible hardware id (repeatable).")
    ] = None,
    allow_downgrade: Annotated[
        bool, typer.Option(help="Permit a version older than the newest published (signed).")
    ] = False,
    level: Annotated[int, typer.Option(min=1, max=22, help="zstd level.")] = 10,
    threads: Annotated[int, typer.Option(min=0, help="zstd worker threads (0: none).")] = 0,
    window_log: Annotated[
        int,
        typer.Option(
            min=10, max=27, help="zstd window = 2**N bytes; the device needs that much RAM."
        ),
    ] = 24,
    deltas: Annotated[
        int,
        typer.Option(min=0, max=16, help="Build deltas from the last N published versions."),
    ] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Compress IMAGE, add it as a signed target of PRODUCT VERSION, and publish."""
    keyconf = load_key_config(keys)
    exp = _expiries(None, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days)
    total = _image_size(image)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=_err,
        transient=True,
    ) as bar:
        task = bar.add_task("compressing", total=total)

        def say(msg: str) -> None:
            bar.console.print(msg, markup=False, highlight=False)

        result = release(
            repo,
            keyconf,
            product,
            version,
            image,
            hardware or [],
            _now(),
            allow_downgrade=allow_downgrade,
            settings=CompressSettings(level=level, threads=threads, window_log=window_log),
            expiries=exp,
            prompt=tty_prompt(),
            progress=lambda done: bar.update(task, completed=done),
            log=say,
            extra_builder=delta_builder(deltas, say=say) if deltas else None,
        )
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
        return
    for a in result.artifacts:
        print(f"{a.target_path}\t{a.length}\t{a.sha256}")
    _err.print(
        f"published {result.product} {result.version} "
        f"(targets v{result.targets_version}, timestamp v{result.timestamp_version})",
        markup=False,
    )


@app.command("demo")
def demo_cmd(
    workdir: Annotated[
        Path | None,
        typer.Option(help="Directory for the demo (default: a new temporary directory)."),
    ] = None,
) -> None:
    """Run the whole path on localhost: keys, repository, releases, HTTP, a device updating."""
    result = run_demo(workdir, say=lambda line: print(line, flush=True))
    print(f"demo ok: device on {result.final_version}; files in {result.workdir}")


def _image_size(image: Path) -> int | None:
    try:
        with image.open("rb") as f:
            return image_length(f, image)
    except (OSError, PublisherError):
        return None  # release() reports the real problem with a proper diagnostic


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``otakit``: the one place errors are rendered.

    Typer (standalone mode) renders usage errors itself and exits 2; every error the
    publisher raises on purpose reaches this handler.
    """
    try:
        app(args=argv)
    except PublisherError as e:
        if _opts.verbose:
            traceback.print_exc()
        sys.stderr.write(f"otakit: {e.family} error: {e.diagnostic()}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("otakit: interrupted\n")
        sys.exit(130)
