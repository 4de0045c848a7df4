"""``otakit-device``: the device CLI. Thin — parse, call one library function, render.

How outcomes reach the user (errors, exit codes, ``--json``, Ctrl-C) is decided once, in
``verifier.cli_contract``, for both CLIs. typer's locals display is off (locals may hold key
material) and so are its pretty tracebacks: a traceback appears only with ``-v``.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.artifact import ImageVersion
from verifier.bootctl.base import DEFAULT_TRIES, MAX_TRIES, parse_slot
from verifier.bootctl.factory import backend_names
from verifier.cli_common import QUIET_DEVICE, JsonOpt, VerboseOpt, VersionOpt, new_app, start
from verifier.cli_contract import EPILOG, RunState, run_app, run_state
from verifier.effects import RealDisk
from verifier.errors import ArtifactSchemaError, ConfigError, ImageHashMismatchError, UsageError
from verifier.imagetype import IMAGE_TYPES, is_image_type
from verifier.tuf.transfer import TransferLimits
from verifier.tuf_cmd import app as tuf_app

app = new_app(
    "Verify signed OS updates with TUF and apply them to an A/B slot pair.", "otakit-device"
)


#: the transport limits ``update`` starts from (docs/OPERATIONS.md, "Slow and hostile networks")
TRANSFER = TransferLimits()


class SlotName(StrEnum):
    a = "a"
    b = "b"


class Mode(StrEnum):
    staged = "staged"
    stream = "stream"


@dataclass(frozen=True)
class Ctx:
    state: Path
    run: RunState


def _now() -> datetime:
    return datetime.now(UTC)


def _ctx(ctx: typer.Context, json_out: bool = False) -> Ctx:
    return Ctx(ctx.meta["otakit.state"], run_state(ctx, json_out))


def _device(c: Ctx) -> Any:
    from verifier.device import Device

    return Device.open(c.state, RealDisk())


def _limit(what: str, default: float) -> Any:
    return typer.Option(metavar="N", help=f"{what} (default {default:g}).")


def _transfer_limits(**given: float | None) -> TransferLimits:
    """The transport limits of ``update``'s options; those not given keep their defaults."""
    try:
        return replace(TRANSFER, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        name, _, rest = str(e).partition(":")
        raise UsageError(f"--{name.replace('_', '-')}:{rest}") from e


def _version(text: str, option: str) -> ImageVersion:
    try:
        return ImageVersion.parse(text)
    except ArtifactSchemaError as e:
        raise UsageError(f"{option}: {e.message}") from e


@app.callback()
def _global(
    ctx: typer.Context,
    state: Annotated[
        Path,
        typer.Option("--state", help="Device state directory (absolute).", envvar="OTAKIT_STATE"),
    ] = Path("/var/lib/otakit"),
    verbose: VerboseOpt = 0,
    json_out: JsonOpt = False,
    version: VersionOpt = False,
) -> None:
    start(ctx, "otakit-device", verbose, json_out, quiet_level=QUIET_DEVICE)
    ctx.meta["otakit.state"] = state
    if ctx.resilient_parsing or ctx.invoked_subcommand == "tuf":  # completion; tuf: no state
        return
    if ctx.invoked_subcommand == "status":
        return  # status never waits on the lock: it reads atomically replaced files only
    from verifier.device import device_lock

    ctx.with_resource(device_lock(state, ctx.invoked_subcommand or ""))


app.add_typer(tuf_app, name="tuf")


@app.command(epilog=EPILOG)
def init(
    ctx: typer.Context,
    repo_url: Annotated[
        str,
        typer.Option(help="Repository: http(s) URL, or a mirror's file:// URL or absolute path."),
    ],
    root: Annotated[Path, typer.Option(help="Trusted root metadata to pin.")],
    product: Annotated[str, typer.Option(help="Product name, e.g. edge-gw.")],
    slot_a: Annotated[Path, typer.Option(help="Slot a, absolute (booted, installed image).")],
    slot_b: Annotated[Path, typer.Option(help="Slot b, absolute.")],
    installed_version: Annotated[str, typer.Option(help="Version of the image in slot a.")],
    hardware: Annotated[str, typer.Option(help="This device's hardware id.")] = "generic",
    boot_backend: Annotated[
        str, typer.Option(help=f"Boot control backend: {', '.join(backend_names())}.")
    ] = "file",
    boot_option: Annotated[
        list[str] | None, typer.Option(help="Backend option KEY=VALUE (repeatable).")
    ] = None,
    tries: Annotated[
        int, typer.Option(min=1, max=MAX_TRIES, help="Trial boot attempts.")
    ] = DEFAULT_TRIES,
    image_type: Annotated[
        str | None,
        typer.Option(
            metavar="TYPE", help="Image type the slots hold (e.g. ext4); others are refused."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Pin the trusted root and describe the two slots."""
    from verifier.device import init_device
    from verifier.mirror import repo_url as location
    from verifier.report import status
    from verifier.state import DeviceConfig
    from verifier.tuf.client import load_root_bytes

    c = _ctx(ctx, json_out)
    options = []
    for item in boot_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--boot-option: expected KEY=VALUE, found {item!r}")
        options.append((key, value))
    if image_type is not None and not is_image_type(image_type):
        raise UsageError(
            f"--image-type: expected one of {', '.join(IMAGE_TYPES)}, found {image_type!r}"
        )
    try:
        config = DeviceConfig(
            location(repo_url),
            product,
            hardware,
            slot_a,
            slot_b,
            boot_backend,
            tuple(sorted(options)),
            tries,
            image_type,
        )
    except ConfigError as e:  # built from this command line: a bad value is a usage error
        raise UsageError(e.message, hint=e.hint) from e
    dev = init_device(
        c.state,
        RealDisk(),
        config,
        root=load_root_bytes(root),
        installed_version=_version(installed_version, "--installed-version"),
        token=secrets.token_bytes,
    )
    _render_status(c, status(dev, _now()).to_dict())


@app.command(epilog=EPILOG)
def update(
    ctx: typer.Context,
    mode: Annotated[
        Mode, typer.Option(help="staged (download, then write) or stream.")
    ] = Mode.staged,
    tries: Annotated[
        int | None, typer.Option(min=1, max=MAX_TRIES, help="Trial boot attempts.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Install exactly this version.")] = None,
    no_delta: Annotated[bool, typer.Option("--no-delta", help="Always use full images.")] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Run now: skip a failed cycle's backoff and the rollout waves "
            "(never a halt or a recall).",
        ),
    ] = False,
    connect_timeout: Annotated[
        float | None, _limit("Seconds to connect", TRANSFER.connect_timeout)
    ] = None,
    read_timeout: Annotated[
        float | None, _limit("Seconds without a byte", TRANSFER.read_timeout)
    ] = None,
    min_throughput: Annotated[
        float | None, _limit("Minimum bytes/s over the window (0: off)", TRANSFER.min_throughput)
    ] = None,
    throughput_window: Annotated[
        float | None, _limit("Seconds of that window", TRANSFER.throughput_window)
    ] = None,
    download_deadline: Annotated[
        float | None, _limit("Seconds per file", TRANSFER.download_deadline)
    ] = None,
    cycle_deadline: Annotated[
        float | None, _limit("Seconds for refresh and downloads", TRANSFER.cycle_deadline)
    ] = None,
    from_path: Annotated[
        str | None,
        typer.Option(
            "--from", metavar="PATH", help="Install from an export (directory or .tar) or mirror."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON-lines progress.")] = False,
) -> None:
    """Install the newest signed image into the inactive slot.

    Verified through TUF, written and re-hashed, then armed for a trial boot.
    A failed cycle backs off, and a release rolled out in waves waits for this
    device's wave: until then, update has nothing to do (--now: go anyway).
    A recalled running version goes back (docs/OPERATIONS.md).
    """
    from verifier.tuf.client import TufLimits
    from verifier.update import UpdateOptions
    from verifier.update import update as run_update

    c = _ctx(ctx, json_out)
    transfer = _transfer_limits(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        min_throughput=min_throughput,
        throughput_window=throughput_window,
        download_deadline=download_deadline,
        cycle_deadline=cycle_deadline,
    )
    options = UpdateOptions(
        mode="stream" if mode is Mode.stream else "staged",
        tries=tries,
        version=None if version is None else _version(version, "--version"),
        allow_delta=not no_delta,
        limits=TufLimits(transfer=transfer),
        ignore_backoff=now,
        override_waves=now,
    )
    with _ProgressView(c.run) as view:
        if from_path is not None:  # an export or mirror: verifier.offline
            from verifier.offline import location, update_from

            result = update_from(
                _device(c),
                location(from_path),
                _now(),
                options=options,
                progress=view.report,
                rand=random.SystemRandom().random,
            )
        else:
            result = run_update(
                _device(c),
                _now(),
                options=options,
                progress=view.report,
                rand=random.SystemRandom().random,
                token=secrets.token_bytes,
            )
    c.run.result(result.to_dict(), result.message())


@app.command(epilog=EPILOG)
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """What each slot holds, the trial, the last failure.

    Also which slot is booted and primary, and what is pending.
    """
    from verifier.report import status as get_status

    c = _ctx(ctx, json_out)
    _render_status(c, get_status(_device(c), _now()).to_dict())


def _action(c: Ctx, name: str, message: str, dev: Any) -> None:
    """A state-changing command's outcome: its message, and the status it leaves."""
    from verifier.report import status as get_status

    c.run.result(
        {"action": name, "message": message, "status": get_status(dev, _now()).to_dict()},
        message,
    )


@app.command("mark-good", epilog=EPILOG)
def mark_good(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Commit the running trial slot (health-check unit)."""
    from verifier.device import mark_good as run

    c = _ctx(ctx, json_out)
    dev = _device(c)
    _action(c, "mark-good", run(dev, _now()), dev)


@app.command("mark-bad", epilog=EPILOG)
def mark_bad(
    ctx: typer.Context,
    slot: Annotated[SlotName, typer.Argument(metavar="SLOT", help="a or b")],
    json_out: JsonOpt = False,
) -> None:
    """Make SLOT unbootable.

    A pending or running trial on it is recorded as failed.
    """
    from verifier.device import mark_bad as run

    c = _ctx(ctx, json_out)
    dev = _device(c)
    _action(c, "mark-bad", run(dev, parse_slot(slot.value), _now()), dev)


@app.command(epilog=EPILOG)
def rollback(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Abandon the trial, or trial-boot the other slot."""
    from verifier.device import rollback as run

    c = _ctx(ctx, json_out)
    dev = _device(c)
    _action(c, "rollback", run(dev, _now()), dev)


@app.command("clear-failed", epilog=EPILOG)
def clear_failed(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Forget failed images, so updates may retry them."""
    from verifier.device import clear_failures

    c = _ctx(ctx, json_out)
    dev = _device(c)
    _action(c, "clear-failed", clear_failures(dev, _now()), dev)


@app.command(epilog=EPILOG)
def boot(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Simulate a reboot (file backend; tests, demos).

    Plays the bootloader's part: counts a trial try, or falls back.
    """
    from verifier.bootctl.file import FileBootControl
    from verifier.report import status as get_status

    c = _ctx(ctx, json_out)
    dev = _device(c)
    if not isinstance(dev.boot, FileBootControl):
        raise UsageError(
            f"'boot' simulates the file backend only; this device uses {dev.config.boot_backend!r}"
        )
    dev.boot.boot()
    _render_status(c, get_status(dev, _now()).to_dict())


@app.command(epilog=EPILOG)
def report(
    ctx: typer.Context,
    post: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Also send it to a collector (otakit fleet collect)."),
    ] = None,
    device_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID", envvar="OTAKIT_DEVICE_ID", help="This device's name for the collector."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """A small status document for the operator's fleet view.

    Versions, how the last cycle ended, bytes downloaded; unsigned and
    informational (docs/FORMAT.md, "Device report"). --post sends it (the
    id defaults to a hash of the device's rollout seed; a failure to send
    exits 4).
    """
    from verifier.device_report import device_report, post_report

    c = _ctx(ctx, json_out)
    r = device_report(_device(c), _now(), device_id)
    if post is not None and r.data["device_id"] is None:
        raise UsageError(
            "--post: expected a --device-id (or OTAKIT_DEVICE_ID) to name this device, found "
            "none (and no rollout seed to derive one from yet)",
            hint="a collector keeps one report per device id, e.g. the serial number",
        )
    if post is not None:
        c.run.note(f"report sent to {post}: {post_report(r, post)}")
    c.run.result(r.data, r.text())


@app.command("verify-installed", epilog=EPILOG)
def verify_installed(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Re-hash the running slot against its signed hash.

    Offline: uses the trusted metadata already on the device.
    """
    from verifier.artifact_view import artifact_lines
    from verifier.report import verify_installed as run

    c = _ctx(ctx, json_out)
    report = run(_device(c))
    if not report.ok:
        raise ImageHashMismatchError(
            f"slot {report.slot} has drifted from version {report.version}: expected sha256 "
            f"{report.expected.sha256} as signed, found {report.found_sha256}",
            hint=report.explain,
        )
    data = report.to_dict()
    lines = [f"slot {report.slot} holds exactly version {report.version} as signed"]
    if data["published"]:
        lines.append(f"  published as {data['published']['target']}:")
        lines += [f"    {line}" for line in artifact_lines(data["published"]["artifact"])]
    c.run.result(data, "\n".join(lines))


@app.command(epilog=EPILOG)
def fetch(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET_NAME", help="Signed target path.")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where to write it.")],
    repo_url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Mirror for this run (URL, file:// or path)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Download any signed target, verified, to FILE.

    Same refresh and checks as update (delegations too); FILE is written
    atomically, only after its length and hashes matched the signed ones.
    """
    from verifier.fetch_target import fetch_target
    from verifier.mirror import repo_url as location

    c = _ctx(ctx, json_out)
    url = None if repo_url is None else location(repo_url)
    result = fetch_target(_device(c), target, out, _now(), repo_url=url)
    c.run.result(result.to_dict(), result.message())


def _render_status(c: Ctx, data: dict[str, Any]) -> None:
    from verifier.artifact_view import artifact_lines

    lines = [
        f"product {data['product']} on {data['hardware']}, boot backend {data['boot_backend']}"
        + (f", slots hold {data['image_type']} images" if data.get("image_type") else "")
    ]
    lines += [f"  warning: {w}" for w in data["warnings"]]
    for s, info in data["slots"].items():
        tags = [t for t in ("booted", "primary", "failed", "withdrawn") if info.get(t)]
        held = f"version {info['version']}" if info["version"] else "unknown content"
        lines.append(
            f"  slot {s}: {held} ({info['path']}){' [' + ', '.join(tags) + ']' if tags else ''}"
        )
        if info["published"]:
            lines.append(f"    published as {info['published']['target']}:")
            lines += [f"      {line}" for line in artifact_lines(info["published"]["artifact"])]
        elif info["image"]:
            lines.append(f"    image {info['image']['length']} bytes, sha256 (not published):")
            lines.append(f"      {info['image']['sha256']}")
    if data["published_problem"]:
        lines.append(f"  trusted metadata unreadable: {data['published_problem']}")
    if data["trial"]:
        lines.append(
            f"  trial: slot {data['trial']}, {data['tries_left']} tries left"
            + (" (running it now; mark-good to commit)" if data["in_trial"] else "")
        )
    if data["pending"]:
        p = data["pending"]
        lines.append(
            f"  pending: version {p['version']} on slot {p['slot']}"
            + ("" if p["armed"] else " (written, not yet armed: run update)")
        )
    if data["last_failure"]:
        f = data["last_failure"]
        lines.append(f"  last failure: {f['reason']} at {f['at']}")
    if data.get("retry"):
        r = data["retry"]
        lines.append(
            f"  backoff: {r['failures']} failed cycles in a row, next attempt after "
            f"{r['not_before']} (last: {r['kind']}: {r['reason']})"
        )
    if data.get("rollout"):
        r = data["rollout"]
        lines.append(
            f"  rollout of {r['version']}: {r['reason']} (this device at "
            f"{r['position_bp'] / 100:g} %, allowed {r['allowed_bp'] / 100:g} %)"
        )
    if data.get("in_progress"):
        lines.append(
            f"  in progress: {data['in_progress']} holds the state lock (shown as last written)"
        )
    c.run.result(data, "\n".join(lines))


class _ProgressView:
    """Renders ``(stage, done, total)`` as rich bars on stderr or throttled JSON lines."""

    def __init__(self, run: RunState) -> None:
        self.run = run
        self.as_json = run.json
        self._start: dict[str, tuple[float, int]] = {}
        self._last_emit = 0.0
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressView:
        if not self.as_json and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description:>12}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def report(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        t0, d0 = self._start.setdefault(stage, (now, done))
        if self._progress is not None:
            if stage not in self._tasks:
                self._tasks[stage] = self._progress.add_task(stage, total=total)
            self._progress.update(self._tasks[stage], completed=done)
        elif self.as_json and (done >= total or now - self._last_emit >= 0.5):
            self._last_emit = now
            rate = (done - d0) / (now - t0) if now > t0 else 0.0
            eta = (total - done) / rate if rate > 0 else None
            self.run.emit(
                {
                    "event": "progress",
                    "stage": stage,
                    "done": done,
                    "total": total,
                    "rate": round(rate),
                    "eta": None if eta is None else round(eta, 1),
                }
            )


def main(argv: list[str] | None = None) -> None:
    """Run ``otakit-device`` under the CLI contract (see ``verifier.cli_contract``)."""
    from verifier.cli_contract import exit_with

    exit_with(run_app(app, "otakit-device", argv))


if __name__ == "__main__":
    main()
