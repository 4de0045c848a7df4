"""The publisher's command line: ``otakit``.

Each command parses its options, calls one library function and renders the result through
the contract both CLIs share (``verifier.cli_contract``): errors rendered in one place with
stable exit codes, a JSON document (or JSON error) on stdout with ``--json``, progress and
warnings on stderr, a traceback only with ``-v``. Typer's locals display and pretty
tracebacks are off because locals can hold key material.
"""

from __future__ import annotations

from collections.abc import Sequence
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

from repo.ceremony import stage_delegation_file
from repo.delegation import DEFAULT_BINS, DEFAULT_HEAD, DelegationSpec, delegate
from repo.errors import OtakitError, UsageError
from repo.keys import (
    KeyConfig,
    PromptFn,
    load_available_signers,
    load_key_config,
    load_product_keys,
    load_role_keys,
    load_signers,
    tty_prompt,
)
from repo.prune import prune
from repo.refresh import ExpiryWarning, refresh, repository_status
from repo.repository import Expiries, init, load_role_signers
from repo.roles import ONLINE_ROLES, TOP_LEVEL_ROLES
from repo.rollout_spec import describe as describe_waves
from repo.rollout_spec import parse_time
from repo.rotate import rotate_root
from repo.serve import make_server, serve_until_interrupted, server_url
from repo.withdraw import withdraw
from signer.ceremony_cmd import register as register_ceremony
from signer.cli_options import ProductKeysOpt
from signer.compress import CompressSettings, image_length
from signer.delta.encode import create_options
from signer.delta.release import delta_builder
from signer.delta_cmd import delta_app
from signer.demo import run_demo
from signer.fleet_cmd import fleet_app
from signer.image_cmd import image_app
from signer.inspect_cmd import inspect_app
from signer.keygen import generate_demo_keys
from signer.keys_cmd import paused_prompt
from signer.keys_cmd import register as register_keys_commands
from signer.release import list_published, release
from signer.rollout_cmd import rollout_app
from verifier.cli_common import (
    QUIET_PUBLISHER,
    JsonOpt,
    VerboseOpt,
    VersionOpt,
    new_app,
    start,
)
from verifier.cli_contract import EPILOG, RunState, exit_with, run_app, run_state
from verifier.delta.format import FORMAT_VERSION as DELTA_FORMAT_VERSION

app = new_app("Publish signed OS updates: TUF repository, releases, keys.", "otakit")
repo_app = new_app("Create, serve, refresh and re-key TUF repositories.")
keys_app = new_app("Key management.")
app.add_typer(repo_app, name="repo")
app.add_typer(keys_app, name="keys")
app.add_typer(delta_app, name="delta")
app.add_typer(inspect_app, name="inspect")
app.add_typer(image_app, name="image")
app.add_typer(fleet_app, name="fleet")
app.add_typer(rollout_app, name="rollout")

_err = Console(stderr=True)

KeysOpt = Annotated[
    Path,
    typer.Option("--keys", help="Key configuration (keys.json) naming each role's keys."),
]
RepoArg = Annotated[Path, typer.Argument(metavar="REPO", help="Repository directory.")]
DaysOpt = Annotated[int | None, typer.Option(min=1, help="Override the default expiry (days).")]


@app.callback()
def _global(
    ctx: typer.Context,
    verbose: VerboseOpt = 0,
    json_out: JsonOpt = False,
    version: VersionOpt = False,
) -> None:
    start(ctx, "otakit", verbose, json_out, quiet_level=QUIET_PUBLISHER)


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


@repo_app.command("init", epilog=EPILOG)
def repo_init(
    ctx: typer.Context,
    repo: RepoArg,
    keys: KeysOpt,
    root_expiry_days: DaysOpt = None,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a new TUF repository (version 1 of every role)."""
    run = run_state(ctx, json_out)
    keyconf = load_key_config(keys)
    signers = load_role_signers(keyconf, TOP_LEVEL_ROLES, prompt=tty_prompt())
    exp = _expiries(
        root_expiry_days, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days
    )
    state = init(repo, keyconf, _now(), signers=signers, expiries=exp)
    root_file = state.repo_dir / "metadata" / "1.root.json"
    run.note(f"created repository {repo}")
    run.result({"repository": str(state.repo_dir), "root": str(root_file)}, str(root_file))


@repo_app.command("serve", epilog=EPILOG)
def repo_serve(
    ctx: typer.Context,
    repo: RepoArg,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free).")] = 8080,
    json_out: JsonOpt = False,
) -> None:
    """Serve REPO read-only over HTTP until interrupted.

    Only metadata/ and targets/ are served, with Range support.
    """
    run = run_state(ctx, json_out)
    server = make_server(repo, host, port)
    run.result({"url": server_url(server), "repository": str(repo)}, server_url(server))
    run.note(f"serving {repo}; press Ctrl-C to stop")
    serve_until_interrupted(server, run.note)


@repo_app.command("list", epilog=EPILOG)
def repo_list(
    ctx: typer.Context,
    repo: RepoArg,
    product: Annotated[str | None, typer.Option(help="Only this product.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List published artifacts, oldest first, with how each stands.

    The repository is verified against its root first. The last column is
    live, withdrawn or recalled (with time and reason), halted, or in waves.
    """
    run = run_state(ctx, json_out)
    arts = list_published(repo, product)
    if run.json:
        run.emit([a.to_json() for a in arts])
        return
    for a in arts:
        info = a.info
        print(
            f"{info.product}\t{info.version}\t{info.kind}\t{a.length}\t{a.target_path}\t{info.standing}"
        )


@repo_app.command("refresh", epilog=EPILOG)
def repo_refresh(
    ctx: typer.Context,
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
    product_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--product-keys",
            metavar="PRODUCT=ROLEKEYS",
            help="Re-sign PRODUCT's role and bins expiring within --warn-days (repeat).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Re-sign snapshot and timestamp with the online keys.

    With --targets, targets too (needs its offline keys); with --product-keys, the
    delegated roles of those products that expire within --warn-days.
    """
    run = run_state(ctx, json_out)
    keyconf = load_key_config(keys)
    roles = ("targets", *ONLINE_ROLES) if targets else ONLINE_ROLES
    prompt = tty_prompt()
    signers = dict(load_role_signers(keyconf, roles, prompt=prompt))
    for product, pk in load_product_keys(product_keys or []).items():
        signers[product] = load_signers(pk, product, prompt=prompt)
    result = refresh(
        repo,
        signers,
        _now(),
        within=None if within is None else timedelta(hours=within),
        targets=targets,
        warn_within=timedelta(days=warn_days),
        expiries=_expiries(None, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days),
    )
    _warn_expiry(run, result.warnings)
    doc = result.to_json()
    info = {**doc["roles"], **doc["delegated"]}
    lines = [
        f"{role} v{info[role]['version']} expires {info[role]['expires']}"
        for role in result.refreshed
    ]
    run.result(doc, "\n".join(lines))
    if result.refreshed:
        run.note(f"refreshed {' and '.join(result.refreshed)} ({result.reason})")
    else:
        run.note(result.reason)


def _warn_expiry(run: RunState, warnings: Sequence[ExpiryWarning]) -> None:
    for w in warnings:
        run.warn(w.message())


@repo_app.command("status", epilog=EPILOG)
def repo_status(
    ctx: typer.Context,
    repo: RepoArg,
    warn_days: Annotated[
        float, typer.Option(min=0, help="Warn when root or targets expire within DAYS.")
    ] = 14,
    json_out: JsonOpt = False,
) -> None:
    """Version and expiry of every role (verified; needs no keys)."""
    run = run_state(ctx, json_out)
    now = _now()
    result = repository_status(repo, now, warn_within=timedelta(days=warn_days))
    _warn_expiry(run, result.warnings)
    doc = result.to_json()
    del doc["refreshed"], doc["reason"]
    lines = [
        f"{role}\tv{info['version']}\texpires {info['expires']}"
        for role, info in doc["roles"].items()
    ]
    soon = now + timedelta(days=warn_days)
    lines += [
        f"{d.role}\tv{d.version}\texpires {doc['delegated'][d.role]['expires']}\t"
        f"({d.product}'s keys"
        + ("; EXPIRED)" if d.expires <= now else "; expires soon)" if d.expires <= soon else ")")
        for d in result.delegated
    ]
    run.result(doc, "\n".join(lines))


@repo_app.command("rotate-root", epilog=EPILOG)
def repo_rotate_root(
    ctx: typer.Context,
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
    json_out: JsonOpt = False,
    root_expiry_days: DaysOpt = None,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """New root N+1 granting NEW keys; re-sign the rest.

    Signed by the old and the new root keys. Revoke a key by leaving it out of NEW; renew an
    expiring root with OLD = NEW.
    """
    run = run_state(ctx, json_out)
    old_conf, new_conf = load_key_config(old_keys), load_key_config(new_keys)
    prompt = tty_prompt()
    old_signers = _available(run, old_conf, TOP_LEVEL_ROLES, "old", prompt)
    new_signers = _available(run, new_conf, TOP_LEVEL_ROLES, "new", prompt)
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
        run.warn(w)
    lines = [
        f"{c.role}: added {[k[:12] for k in c.added]}, revoked "
        f"{[k[:12] for k in c.revoked]}, threshold {c.threshold[0]} -> {c.threshold[1]}"
        for c in result.changes
        if c.changed
    ]
    lines.append("written in order: " + " ".join(result.written))
    run.result(result.to_json(), "\n".join(lines))
    mode = "bridged" if result.bridged else "root first"
    run.note(f"rotated root v{result.old_root_version} -> v{result.root_version} ({mode})")


register_ceremony(repo_app)  # repo stage / sign / sign-status / publish


def _available(
    run: RunState, conf: KeyConfig, roles: tuple[str, ...], which: str, prompt: PromptFn | None
) -> dict[str, list[Signer]]:
    """Every loadable key; the threshold checks decide whether that is enough."""
    out: dict[str, list[Signer]] = {}
    for role in roles:
        signers, problems = load_available_signers(conf, role, prompt=prompt)
        for p in problems:
            run.note(f"note: {which} {p}")
        out[role] = signers
    return out


@repo_app.command("delegate", epilog=EPILOG)
def repo_delegate(
    ctx: typer.Context,
    repo: RepoArg,
    product: Annotated[str, typer.Argument(metavar="PRODUCT", help="Product to delegate.")],
    product_keys: Annotated[
        Path,
        typer.Option(
            "--product-keys",
            metavar="ROLEKEYS",
            help="The product's key file: its keys and threshold (docs/REPOSITORY.md).",
        ),
    ],
    keys: Annotated[
        Path | None,
        typer.Option("--keys", help="Key configuration (keys.json); not with --stage."),
    ] = None,
    bins: Annotated[
        int, typer.Option(min=0, help="Hash bins for older versions (power of 2; 0: none).")
    ] = DEFAULT_BINS,
    head: Annotated[
        int, typer.Option(min=1, help="Newest versions the product role lists itself.")
    ] = DEFAULT_HEAD,
    stage: Annotated[
        bool, typer.Option("--stage", help="Write an unsigned ceremony file (--out).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --stage: the staged file (new).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Give PRODUCT its own targets role, signed by its keys.

    Signs the top-level targets (offline keys), the product role and its bins (the
    product keys) and snapshot and timestamp. Rerun with new product keys to rotate or
    revoke them. With --stage, nothing is signed: holders of the targets and the product
    keys sign OUT with 'otakit repo sign', then 'otakit repo publish' publishes it.
    """
    run = run_state(ctx, json_out)
    if (stage or out is not None) and (not stage or out is None or keys is not None):
        raise UsageError("staging a delegation takes --stage --out FILE, and no --keys")
    role_keys = load_role_keys(product_keys, product)
    spec = DelegationSpec(product, role_keys.role(product), bins=bins, head=head)
    if stage:
        assert out is not None
        staged = stage_delegation_file(repo, spec, out, _now())
        docs = [f"{r} v{d.signed.version}" for r, d in staged.named()]
        shown = docs[:2] + ([f"{len(docs) - 2} hash bins"] if len(docs) > 2 else [])
        run.result(
            {"staged": str(out), "change": staged.change, "documents": docs},
            f"{out}: {' + '.join(shown)} (unsigned)",
        )
        return
    if keys is None:
        raise UsageError("--keys: expected the key configuration (or --stage --out FILE)")
    keyconf = load_key_config(keys)
    prompt = tty_prompt()
    signers = dict(load_role_signers(keyconf, ("targets", *ONLINE_ROLES), prompt=prompt))
    signers[product] = load_signers(role_keys, product, prompt=prompt)
    result = delegate(repo, spec, signers, _now())
    run.result(result.to_json(), "written in order: " + " ".join(result.written))
    revoked = f", revoked {[k[:12] for k in result.revoked]}" if result.revoked else ""
    run.note(f"delegated {product}/*/* to {len(result.keyids)} key(s){revoked}")


@keys_app.command("generate-demo", epilog=EPILOG)
def keys_generate_demo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Directory for the demo keys.")],
    force: Annotated[bool, typer.Option("--force", help="Replace existing demo keys.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write the PUBLIC demo keys (never for production).

    The same keys as keys-example/, derived from a published seed: anyone can sign
    with them, and every otakit command warns when they are used.
    """
    run = run_state(ctx, json_out)
    conf = generate_demo_keys(directory, overwrite=force)
    run.warn("demo keys are for demos and tests only; never use them in production")
    run.result({"keys": str(conf.source)}, str(conf.source))


register_keys_commands(keys_app)


@app.command("release", epilog=EPILOG)
def release_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    image: Annotated[
        Path, typer.Argument(metavar="IMAGE", help="Image file or block device to release.")
    ],
    keys: KeysOpt,
    product: Annotated[str, typer.Option(help="Product name, e.g. edge-gw.")],
    version: Annotated[str, typer.Option(help="Image version, e.g. 2.4.1.")],
    hardware: Annotated[
        list[str] | None,
        typer.Option(metavar="ID", help="Compatible hardware id (repeatable)."),
    ] = None,
    allow_downgrade: Annotated[
        bool,
        typer.Option(
            "--allow-downgrade", help="Permit a version older than the newest published (signed)."
        ),
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
    delta_format: Annotated[
        int,
        typer.Option(
            min=1,
            max=DELTA_FORMAT_VERSION,
            help="Delta container version; 1 while devices without DIFF ops remain.",
        ),
    ] = DELTA_FORMAT_VERSION,
    delta_max: Annotated[
        bool,
        typer.Option("--delta-max", help="Smaller deltas: zstd level 12 and DIFF ops (slower)."),
    ] = False,
    image_type: Annotated[
        str | None,
        typer.Option(
            metavar="TYPE",
            help="ext4, squashfs, erofs, btrfs, vfat, gpt, mbr, tar or raw (default: detect).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Build and check everything; sign and publish nothing."),
    ] = False,
    waves: Annotated[
        str | None,
        typer.Option(
            metavar="SPEC",
            help="Signed staged rollout, e.g. '5%@0,25%@24h,100%@3d' (default: everyone).",
        ),
    ] = None,
    rollout_start: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Waves start, UTC 2026-12-01T06:00:00Z (default: now)."),
    ] = None,
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Compress IMAGE, sign it as PRODUCT VERSION, and publish.

    Deltas from the last N published versions are built and checked with the device's own
    decoder before anything is signed. With --waves every artifact of the release carries
    the same signed rollout policy (otakit rollout halt, advance, recall change it).
    """
    run = run_state(ctx, json_out)
    start_at = None if rollout_start is None else parse_time(rollout_start, "--rollout-start")
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
            image_type=image_type,
            dry_run=dry_run,
            allow_downgrade=allow_downgrade,
            waves=waves,
            rollout_start=start_at,
            settings=CompressSettings(level=level, threads=threads, window_log=window_log),
            expiries=exp,
            prompt=paused_prompt(bar, tty_prompt()),
            product_keys=None if product_keys is None else load_role_keys(product_keys, product),
            progress=lambda done: bar.update(task, completed=done),
            log=say,
            extra_builder=(
                delta_builder(
                    deltas,
                    options=create_options(smallest=delta_max, format_version=delta_format),
                    say=say,
                )
                if deltas
                else None
            ),
        )
    for w in result.warnings:
        run.warn(w)
    if result.dry_run:
        run.result(
            result.to_json(),
            "\n".join(
                f"would publish {a.target_path}\t{a.length}\t{a.sha256}\t{a.info.image_type}"
                for a in result.artifacts
            ),
        )
        run.note(
            f"dry run: would publish {result.product} {result.version} "
            f"({result.image_type} image; targets v{result.targets_version}, "
            f"timestamp v{result.timestamp_version}); nothing was signed or written"
        )
        return
    run.result(
        result.to_json(),
        "\n".join(f"{a.target_path}\t{a.length}\t{a.sha256}" for a in result.artifacts),
    )
    run.note(
        f"published {result.product} {result.version} "
        f"(targets v{result.targets_version}, timestamp v{result.timestamp_version})"
    )
    policy = result.artifacts[0].info.rollout if result.artifacts else None
    for line in [] if policy is None else describe_waves(policy):
        run.note(f"rollout: {line}")


@app.command("withdraw", epilog=EPILOG)
def withdraw_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    product: Annotated[str, typer.Argument(metavar="PRODUCT", help="Product, e.g. edge-gw.")],
    version: Annotated[str, typer.Argument(metavar="VERSION", help="Version to withdraw.")],
    keys: KeysOpt,
    reason: Annotated[
        str, typer.Option(help="Why (one line; devices running it show it in status).")
    ],
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Withdraw a release: devices never install it.

    A signed targets change: its full artifact and every delta to it stay listed, marked
    withdrawn with REASON, so a device already running it is told so. Rerunning is safe.
    A delegated product's release is signed with its --product-keys.
    """
    run = run_state(ctx, json_out)
    exp = _expiries(None, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days)
    pk = None if product_keys is None else load_role_keys(product_keys, product)
    result = withdraw(
        repo, load_key_config(keys), product, version, reason, _now(), expiries=exp,
        product_keys=pk, prompt=tty_prompt(), progress=run.note,
    )  # fmt: skip
    for w in result.warnings:
        run.warn(w)
    run.result(result.to_json(), "\n".join(result.targets))
    if result.already:
        run.note(f"{product} {result.version} was already withdrawn; nothing was signed")
    else:
        run.note(
            f"withdrew {product} {result.version} ({len(result.marked)} target(s); targets "
            f"v{result.targets_version}, timestamp v{result.timestamp_version})"
        )


@app.command("release-file", epilog=EPILOG)
def release_file_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="File to publish.")],
    keys: KeysOpt,
    name: Annotated[str, typer.Option(help="Target name, e.g. edge-gw/config/site.tar.")],
    custom: Annotated[
        str | None, typer.Option(metavar="JSON", help="Custom metadata (a JSON object).")
    ] = None,
    product_keys: ProductKeysOpt = None,
    json_out: JsonOpt = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Sign FILE as target NAME (not an image), for device fetch.

    The role owning NAME signs it: top-level targets, or a delegated product whose
    paths admit NAME (--product-keys).
    """
    from repo.state import load_state
    from signer.release_file import parse_custom, release_file

    run = run_state(ctx, json_out)
    exp = _expiries(None, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days)
    doc = parse_custom(custom)
    pk = None
    if product_keys is not None:
        from repo.delegation import owning_role

        role = owning_role(load_state(repo).targets.signed, name)
        pk = load_role_keys(product_keys, role)
    result = release_file(
        repo, load_key_config(keys), file, name, doc, _now(), product_keys=pk,
        expiries=exp, prompt=tty_prompt(),
    )  # fmt: skip
    run.result(result.to_json(), f"{result.target}\t{result.length}\t{result.sha256}")
    run.note(
        f"published {result.target} signed by {result.role} (targets "
        f"v{result.targets_version}, timestamp v{result.timestamp_version})"
    )


@app.command("export", epilog=EPILOG)
def export_cmd(
    ctx: typer.Context,
    repo: RepoArg,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="New directory, or FILE.tar.")],
    keys: KeysOpt,
    product: Annotated[str, typer.Option(help="Product to export, e.g. edge-gw.")],
    version: Annotated[
        str | None, typer.Option(help="Version (default: newest not withdrawn).")
    ] = None,
    from_version: Annotated[
        list[str] | None,
        typer.Option(metavar="BASE", help="Include the delta from BASE (repeatable)."),
    ] = None,
    valid_for: Annotated[
        str, typer.Option(metavar="DURATION", help="Export validity, e.g. 30d (1d to 90d).")
    ] = "30d",
    json_out: JsonOpt = False,
) -> None:
    """Write a self-contained subset for an offline site.

    Metadata, the full image and the listed deltas; its snapshot and timestamp are
    valid for DURATION. The repository publishes a newer timestamp at once, so a
    device that later goes online never sees a rollback (docs/FORMAT.md "Export").
    """
    from signer.export import export, parse_duration

    run = run_state(ctx, json_out)
    result = export(
        repo, load_key_config(keys), product, out, _now(), version=version,
        bases=tuple(from_version or ()), valid_for=parse_duration(valid_for),
        prompt=tty_prompt(),
    )  # fmt: skip
    run.result(result.to_json(), "\n".join(result.files))
    run.note(
        f"exported {product} {result.version} (+ deltas from {', '.join(result.bases) or 'none'})"
        f" to {out}, valid until {result.manifest['valid_until']}; the repository now serves "
        f"timestamp v{result.online_timestamp_version}"
    )


@repo_app.command("prune", epilog=EPILOG)
def repo_prune(
    ctx: typer.Context,
    repo: RepoArg,
    keys: KeysOpt,
    keep: Annotated[
        int, typer.Option(min=1, metavar="N", help="Versions to keep per product (newest).")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; sign and delete nothing.")
    ] = False,
    product_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--product-keys",
            metavar="PRODUCT=ROLEKEYS",
            help="A delegated product's key file (repeat); products without one are kept.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    targets_expiry_days: DaysOpt = None,
    snapshot_expiry_days: DaysOpt = None,
    timestamp_expiry_days: DaysOpt = None,
) -> None:
    """Drop old releases, publish, then delete their files.

    Keeps the newest N versions per product and the base of every kept delta. Files are
    deleted only after the metadata without them is published.
    """
    run = run_state(ctx, json_out)
    exp = _expiries(None, targets_expiry_days, snapshot_expiry_days, timestamp_expiry_days)
    result = prune(
        repo, load_key_config(keys), keep, _now(), dry_run=dry_run, expiries=exp,
        product_keys=load_product_keys(product_keys or []), prompt=tty_prompt(),
        progress=run.note,
    )  # fmt: skip
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{p}: keeps {', '.join(v)}" for p, v in result.plan.kept_versions.items()]
    lines += [f"{p}: not pruned (delegated; pass --product-keys)" for p in result.plan.skipped]
    lines += [f"drops {t}" for t in result.plan.remove]
    lines += [f"{verb} {f}" for f in result.deleted]
    run.result(result.to_json(), "\n".join(lines))
    run.note(
        f"{'dry run: ' if dry_run else ''}{len(result.plan.remove)} target(s) dropped, "
        f"{len(result.deleted)} file(s) {verb} ({result.freed_bytes} bytes)"
        + (f"; targets v{result.targets_version}" if result.published else "")
    )


@app.command("demo", epilog=EPILOG)
def demo_cmd(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Directory for the demo (default: a new temporary directory)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the whole path on localhost: keys to a device updating."""
    run = run_state(ctx, json_out)
    say = run.note if run.json else (lambda line: print(line, flush=True))
    result = run_demo(workdir, say=say)
    run.result(
        {"ok": True, "final_version": result.final_version, "workdir": str(result.workdir)},
        f"demo ok: device on {result.final_version}; files in {result.workdir}",
    )


def _image_size(image: Path) -> int | None:
    try:
        with image.open("rb") as f:
            return image_length(f, image)
    except (OSError, OtakitError):
        return None  # release() reports the real problem with a proper diagnostic


def main(argv: list[str] | None = None) -> None:
    """Run ``otakit`` under the CLI contract (see ``verifier.cli_contract``)."""
    exit_with(run_app(app, "otakit", argv))


if __name__ == "__main__":
    main()
