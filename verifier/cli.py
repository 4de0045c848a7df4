"""``otakit-device``: the device CLI. Thin — parse, call one library function, render.

Errors are rendered in one place (``main``): an ``OtakitError`` becomes its diagnostic on
stderr and its family's exit code; ``NothingToDoError`` exits 0 with its message; tracebacks
appear only with ``-v``. typer's locals display is off (locals may hold key material).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from verifier.artifact import ImageVersion
from verifier.bootctl.base import DEFAULT_TRIES, parse_slot
from verifier.effects import RealDisk
from verifier.errors import ImageHashMismatchError, NothingToDoError, OtakitError, UsageError

app = typer.Typer(
    name="otakit-device",
    help="Verify signed OS updates with TUF and apply them to an A/B slot pair.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)


@dataclass(frozen=True)
class Ctx:
    state: Path
    verbose: int
    json: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _ctx(ctx: typer.Context) -> Ctx:
    obj = ctx.obj
    assert isinstance(obj, Ctx)
    return obj


def _device(c: Ctx) -> Any:
    from verifier.device import Device

    return Device.open(c.state, RealDisk())


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


@app.callback()
def _global(
    ctx: typer.Context,
    state: Annotated[
        Path, typer.Option("--state", help="Device state directory.", envvar="OTAKIT_STATE")
    ] = Path("/var/lib/otakit"),
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True)] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Ctx(state, verbose, json_out)
    from verifier.device import device_lock

    ctx.with_resource(device_lock(state))


@app.command()
def init(
    ctx: typer.Context,
    repo_url: Annotated[str, typer.Option(help="Base URL of the TUF repository.")],
    root: Annotated[Path, typer.Option(help="Trusted root metadata to pin.")],
    product: Annotated[str, typer.Option()],
    slot_a: Annotated[Path, typer.Option(help="Slot a (booted, holds the installed image).")],
    slot_b: Annotated[Path, typer.Option(help="Slot b.")],
    installed_version: Annotated[str, typer.Option(help="Version of the image in slot a.")],
    hardware: Annotated[str, typer.Option(help="This device's hardware id.")] = "generic",
    boot_backend: Annotated[str, typer.Option(help="file, grub, uboot or command.")] = "file",
    boot_option: Annotated[
        list[str] | None, typer.Option(help="Backend option KEY=VALUE (repeatable).")
    ] = None,
    tries: Annotated[int, typer.Option(help="Trial boot attempts.")] = DEFAULT_TRIES,
) -> None:
    """Pin the trusted root and describe this device's two slots."""
    from verifier.device import init_device
    from verifier.report import status
    from verifier.state import DeviceConfig
    from verifier.tuf_client import load_root_bytes

    c = _ctx(ctx)
    options = []
    for item in boot_option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--boot-option: expected KEY=VALUE, found {item!r}")
        options.append((key, value))
    config = DeviceConfig(
        repo_url, product, hardware, slot_a, slot_b, boot_backend, tuple(sorted(options)), tries
    )
    dev = init_device(
        c.state,
        RealDisk(),
        config,
        root=load_root_bytes(root),
        installed_version=ImageVersion.parse(installed_version),
    )
    _render_status(c, status(dev, _now()).to_dict())


@app.command()
def update(
    ctx: typer.Context,
    mode: Annotated[str, typer.Option(help="staged (download, then write) or stream.")] = "staged",
    tries: Annotated[int | None, typer.Option(help="Trial boot attempts.")] = None,
    version: Annotated[str | None, typer.Option(help="Install exactly this version.")] = None,
    no_delta: Annotated[bool, typer.Option("--no-delta", help="Always use full images.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON-lines progress.")] = False,
) -> None:
    """Install the newest signed image for this device into the inactive slot."""
    from verifier.update import UpdateOptions
    from verifier.update import update as run_update

    c = _ctx(ctx)
    as_json = c.json or json_out
    if mode not in ("staged", "stream"):
        raise UsageError(f"--mode: expected 'staged' or 'stream', found {mode!r}")
    options = UpdateOptions(
        mode="stream" if mode == "stream" else "staged",
        tries=tries,
        version=None if version is None else ImageVersion.parse(version),
        allow_delta=not no_delta,
    )
    with _ProgressView(as_json) as view:
        result = run_update(_device(c), _now(), options=options, progress=view.report)
    if as_json:
        _emit(
            {
                "event": "done",
                "version": str(result.version),
                "slot": result.slot,
                "artifact": result.artifact,
                "kind": result.kind,
                "fell_back": result.fell_back,
            }
        )
    else:
        typer.echo(result.message())


@app.command()
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Which slot is active, what each holds, what is pending, the last failure."""
    from verifier.report import status as get_status

    c = _ctx(ctx)
    _render_status(
        Ctx(c.state, c.verbose, c.json or json_out), get_status(_device(c), _now()).to_dict()
    )


@app.command("mark-good")
def mark_good(ctx: typer.Context) -> None:
    """Commit the running trial slot (for a health-check unit)."""
    from verifier.device import mark_good as run

    typer.echo(run(_device(_ctx(ctx)), _now()))


@app.command("mark-bad")
def mark_bad(ctx: typer.Context, slot: Annotated[str, typer.Argument(help="a or b")]) -> None:
    """Make SLOT unbootable; a pending or running trial on it is recorded as failed."""
    from verifier.device import mark_bad as run

    typer.echo(run(_device(_ctx(ctx)), parse_slot(slot), _now()))


@app.command()
def rollback(ctx: typer.Context) -> None:
    """Abandon the running or pending trial, or trial-boot the other slot."""
    from verifier.device import rollback as run

    typer.echo(run(_device(_ctx(ctx)), _now()))


@app.command("clear-failed")
def clear_failed(ctx: typer.Context) -> None:
    """Forget images that failed their trial, so the next update may install them again."""
    from verifier.device import clear_failures

    typer.echo(clear_failures(_device(_ctx(ctx)), _now()))


@app.command()
def boot(ctx: typer.Context) -> None:
    """Simulate a reboot (file backend only): the bootloader's part, for tests and demos."""
    from verifier.bootctl.file import FileBootControl
    from verifier.report import status as get_status

    c = _ctx(ctx)
    dev = _device(c)
    if not isinstance(dev.boot, FileBootControl):
        raise UsageError(
            f"'boot' simulates the file backend only; this device uses {dev.config.boot_backend!r}"
        )
    dev.boot.boot()
    _render_status(c, get_status(dev, _now()).to_dict())


@app.command("verify-installed")
def verify_installed(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Re-hash the booted slot against the signed hash of the installed version (offline)."""
    from verifier.report import verify_installed as run

    c = _ctx(ctx)
    report = run(_device(c))
    if c.json or json_out:
        _emit(report.to_dict())
    elif report.ok:
        typer.echo(
            f"slot {report.slot} holds exactly version {report.version} as signed "
            f"(sha256 {report.found_sha256})"
        )
    if not report.ok:
        raise ImageHashMismatchError(
            f"slot {report.slot} has drifted from version {report.version}: expected sha256 "
            f"{report.expected.sha256} as signed, found {report.found_sha256}"
        )


def _render_status(c: Ctx, data: dict[str, Any]) -> None:
    if c.json:
        _emit(data)
        return
    lines = [
        f"product {data['product']} on {data['hardware']}, boot backend {data['boot_backend']}"
    ]
    lines += [f"  warning: {w}" for w in data["warnings"]]
    for s, info in data["slots"].items():
        tags = [t for t in ("booted", "primary", "failed") if info[t]]
        held = f"version {info['version']}" if info["version"] else "unknown content"
        lines.append(
            f"  slot {s}: {held} ({info['path']}){' [' + ', '.join(tags) + ']' if tags else ''}"
        )
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
    typer.echo("\n".join(lines))


class _ProgressView:
    """Renders ``(stage, done, total)`` as rich bars on stderr or throttled JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
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
            _emit(
                {
                    "event": "progress",
                    "stage": stage,
                    "done": done,
                    "total": total,
                    "rate": round(rate),
                    "eta": None if eta is None else round(eta, 1),
                }
            )


def main() -> None:
    try:
        app()
    except NothingToDoError as e:
        typer.echo(f"nothing to do: {e.message}")
        sys.exit(0)
    except OtakitError as e:
        verbose = (
            "-v" in sys.argv
            or "--verbose" in sys.argv
            or any(a.startswith("-v") and set(a[1:]) == {"v"} for a in sys.argv[1:])
        )
        if verbose:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"otakit-device: {e.family} error: {e.diagnostic()}\n")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
