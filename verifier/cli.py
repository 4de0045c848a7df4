"""``otakit-device``: the device CLI. Thin — parse, call one library function, render.

How outcomes reach the user (errors, exit codes, ``--json``, Ctrl-C) is decided once, in
``verifier.cli_contract``, for both CLIs. The parser is stdlib ``argparse``
(``verifier.cli_parse`` says why): the device runs on its own dependency set
(requirements/device.lock), without typer or rich, and starts in a few tens of milliseconds.
Everything a command needs beyond parsing is imported inside the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from verifier import __version__
from verifier.bootctl.base import DEFAULT_TRIES, MAX_TRIES
from verifier.cli_contract import (
    EPILOG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RunState,
    exit_with,
    render_error,
    report_failure,
    setup_logging,
)
from verifier.cli_parse import ParseFailure, Parser, bash_completion, int_in, number, pre_scan
from verifier.errors import UsageError

PROG = "otakit-device"

#: a device logs its stages without -v: the journal of what it did
QUIET_DEVICE = logging.INFO

#: the ``--help`` epilog of every command (``\b`` is click's no-rewrap mark; plain text here)
HELP_EPILOG = EPILOG.replace("\b\n", "")


@dataclass(frozen=True)
class Ctx:
    state: Path
    run: RunState


def _now() -> datetime:
    return datetime.now(UTC)


def _device(c: Ctx) -> Any:
    from verifier.device import Device
    from verifier.effects import RealDisk

    return Device.open(c.state, RealDisk())


def _transfer_limits(a: argparse.Namespace) -> Any:
    """The transport limits of ``update``'s options; those not given keep their defaults."""
    from dataclasses import replace

    from verifier.tuf.transfer import TransferLimits

    given = {k: getattr(a, k) for k in _LIMITS if getattr(a, k) is not None}
    try:
        return replace(TransferLimits(), **given)
    except ValueError as e:
        name, _, rest = str(e).partition(":")
        raise UsageError(f"--{name.replace('_', '-')}:{rest}") from e


def _version(text: str, option: str) -> Any:
    from verifier.artifact import ImageVersion
    from verifier.errors import ArtifactSchemaError

    try:
        return ImageVersion.parse(text)
    except ArtifactSchemaError as e:
        raise UsageError(f"{option}: {e.message}") from e


# --- commands ---------------------------------------------------------------------------------


def init(c: Ctx, a: argparse.Namespace) -> None:
    """Pin the trusted root and describe the two slots."""
    import secrets

    from verifier.device import init_device
    from verifier.effects import RealDisk
    from verifier.errors import ConfigError
    from verifier.imagetype import IMAGE_TYPES, is_image_type
    from verifier.mirror import repo_url as location
    from verifier.report import status
    from verifier.state import DeviceConfig
    from verifier.tuf.client import load_root_bytes

    options = []
    for item in a.boot_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--boot-option: expected KEY=VALUE, found {item!r}")
        options.append((key, value))
    if a.image_type is not None and not is_image_type(a.image_type):
        raise UsageError(
            f"--image-type: expected one of {', '.join(IMAGE_TYPES)}, found {a.image_type!r}"
        )
    try:
        config = DeviceConfig(
            location(a.repo_url),
            a.product,
            a.hardware,
            a.slot_a,
            a.slot_b,
            a.boot_backend,
            tuple(sorted(options)),
            a.tries,
            a.image_type,
        )
    except ConfigError as e:  # built from this command line: a bad value is a usage error
        raise UsageError(e.message, hint=e.hint) from e
    dev = init_device(
        c.state,
        RealDisk(),
        config,
        root=load_root_bytes(a.root),
        installed_version=_version(a.installed_version, "--installed-version"),
        token=secrets.token_bytes,
    )
    _render_status(c, status(dev, _now()).to_dict())


def update(c: Ctx, a: argparse.Namespace) -> None:
    """Install the newest signed image into the inactive slot.

    Verified through TUF, written and re-hashed, then armed for a trial boot.
    A failed cycle backs off, and a release rolled out in waves waits for this
    device's wave: until then, update has nothing to do (--now: go anyway).
    A recalled running version goes back (docs/OPERATIONS.md).
    """
    import random
    import secrets

    from verifier.tuf.client import TufLimits
    from verifier.update import UpdateOptions
    from verifier.update import update as run_update

    options = UpdateOptions(
        mode=a.mode,
        tries=a.tries,
        version=None if a.version is None else _version(a.version, "--version"),
        allow_delta=not a.no_delta,
        limits=TufLimits(transfer=_transfer_limits(a)),
        ignore_backoff=a.now,
        override_waves=a.now,
    )
    with _ProgressView(c.run) as view:
        if a.from_path is not None:  # an export or mirror: verifier.offline
            from verifier.offline import location, update_from

            result = update_from(
                _device(c),
                location(a.from_path),
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


def status(c: Ctx, a: argparse.Namespace) -> None:
    """What each slot holds, the trial, the last failure.

    Also which slot is booted and primary, and what is pending.
    """
    from verifier.report import status as get_status

    _render_status(c, get_status(_device(c), _now()).to_dict())


def _action(c: Ctx, name: str, message: str, dev: Any) -> None:
    """A state-changing command's outcome: its message, and the status it leaves."""
    from verifier.report import status as get_status

    c.run.result(
        {"action": name, "message": message, "status": get_status(dev, _now()).to_dict()},
        message,
    )


def mark_good(c: Ctx, a: argparse.Namespace) -> None:
    """Commit the running trial slot (health-check unit)."""
    from verifier.device import mark_good as run

    dev = _device(c)
    _action(c, "mark-good", run(dev, _now()), dev)


def mark_bad(c: Ctx, a: argparse.Namespace) -> None:
    """Make SLOT unbootable.

    A pending or running trial on it is recorded as failed.
    """
    from verifier.bootctl.base import parse_slot
    from verifier.device import mark_bad as run

    dev = _device(c)
    _action(c, "mark-bad", run(dev, parse_slot(a.slot), _now()), dev)


def rollback(c: Ctx, a: argparse.Namespace) -> None:
    """Abandon the trial, or trial-boot the other slot."""
    from verifier.device import rollback as run

    dev = _device(c)
    _action(c, "rollback", run(dev, _now()), dev)


def clear_failed(c: Ctx, a: argparse.Namespace) -> None:
    """Forget failed images, so updates may retry them."""
    from verifier.device import clear_failures

    dev = _device(c)
    _action(c, "clear-failed", clear_failures(dev, _now()), dev)


def boot(c: Ctx, a: argparse.Namespace) -> None:
    """Simulate a reboot (file backend; tests, demos).

    Plays the bootloader's part: counts a trial try, or falls back.
    """
    from verifier.bootctl.file import FileBootControl
    from verifier.report import status as get_status

    dev = _device(c)
    if not isinstance(dev.boot, FileBootControl):
        raise UsageError(
            f"'boot' simulates the file backend only; this device uses {dev.config.boot_backend!r}"
        )
    dev.boot.boot()
    _render_status(c, get_status(dev, _now()).to_dict())


def report(c: Ctx, a: argparse.Namespace) -> None:
    """A small status document for the operator's fleet view.

    Versions, how the last cycle ended, bytes downloaded; unsigned and
    informational (docs/FORMAT.md, "Device report"). --post sends it (the
    id defaults to a hash of the device's rollout seed; a failure to send
    exits 4).
    """
    from verifier.device_report import device_report, post_report

    r = device_report(_device(c), _now(), a.device_id)
    if a.post is not None and r.data["device_id"] is None:
        raise UsageError(
            "--post: expected a --device-id (or OTAKIT_DEVICE_ID) to name this device, found "
            "none (and no rollout seed to derive one from yet)",
            hint="a collector keeps one report per device id, e.g. the serial number",
        )
    if a.post is not None:
        c.run.note(f"report sent to {a.post}: {post_report(r, a.post)}")
    c.run.result(r.data, r.text())


def verify_installed(c: Ctx, a: argparse.Namespace) -> None:
    """Re-hash the running slot against its signed hash.

    Offline: uses the trusted metadata already on the device.
    """
    from verifier.artifact_view import artifact_lines
    from verifier.errors import ImageHashMismatchError
    from verifier.report import verify_installed as run

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


def fetch(c: Ctx, a: argparse.Namespace) -> None:
    """Download any signed target, verified, to FILE.

    Same refresh and checks as update (delegations too); FILE is written
    atomically, only after its length and hashes matched the signed ones.
    """
    from verifier.fetch_target import fetch_target
    from verifier.mirror import repo_url as location

    url = None if a.repo_url is None else location(a.repo_url)
    result = fetch_target(_device(c), a.target, a.out, _now(), repo_url=url)
    c.run.result(result.to_dict(), result.message())


# --- the command line -------------------------------------------------------------------------

#: ``update``'s transport limits: option dest -> help (defaults: verifier.tuf.transfer)
_LIMITS = {
    "connect_timeout": "Seconds to connect",
    "read_timeout": "Seconds without a byte",
    "min_throughput": "Minimum bytes/s over the window (0: off)",
    "throughput_window": "Seconds of that window",
    "download_deadline": "Seconds per file",
    "cycle_deadline": "Seconds for refresh and downloads",
}

#: the transport limits' defaults as ``--help`` shows them, without importing the transport
#: (python-tuf) to draw a help page; tests/footprint keeps them equal to ``TransferLimits()``
LIMIT_DEFAULTS = {
    "connect_timeout": 30.0,
    "read_timeout": 60.0,
    "min_throughput": 1024.0,
    "throughput_window": 60.0,
    "download_deadline": 7200.0,
    "cycle_deadline": 14400.0,
}

#: the boot-control backends as ``init --help`` names them (tests/footprint: equal to
#: ``verifier.bootctl.factory.backend_names()``, which imports every backend)
BACKENDS = ("command", "file", "grub", "uboot")

JSON_HELP = "Machine-readable output on stdout."


def add_command(
    sub: Any, name: str, handler: Any, *, usage_args: str = "", epilog: str = HELP_EPILOG,
    folded: bool = False, json_help: str = JSON_HELP,
) -> Parser:  # fmt: skip
    """A command: its docstring is its help, ``--json`` and the exit-code epilog come with it."""
    doc = (handler.__doc__ or "").strip()
    lines = doc.splitlines()
    description = "\n".join(
        [lines[0], *(ln[4:] if ln.startswith("    ") else ln for ln in lines[1:])]
    )
    p: Parser = sub.add_parser(
        name, help=lines[0], description=description, epilog=epilog, usage_args=usage_args,
        folded=folded,
    )  # fmt: skip
    p.add_argument("--json", dest="json_out", action="store_true", help=json_help)
    p.set_defaults(handler=handler)
    return p


def build_parser() -> Parser:
    """The whole ``otakit-device`` command line (cheap: no command module is imported)."""
    from verifier import tuf_cmd

    root = Parser(
        prog=PROG,
        description="Verify signed OS updates with TUF and apply them to an A/B slot pair.",
        epilog=HELP_EPILOG,
        usage_args="COMMAND [ARGS]...",
    )
    root.add_argument(
        "--state",
        type=Path,
        metavar="PATH",
        default=Path(os.environ.get("OTAKIT_STATE") or "/var/lib/otakit"),
        help="Device state directory (absolute; env OTAKIT_STATE; default /var/lib/otakit).",
    )
    root.add_argument(
        "-v", "--verbose", action="count", default=0, help="More log detail; tracebacks on errors."
    )
    root.add_argument("--json", dest="json_global", action="store_true", help=JSON_HELP)
    root.add_argument(
        "--version", action="version", version=f"{PROG} {__version__}", help="Print the version."
    )
    root.add_argument(
        "--show-completion", metavar="SHELL", choices=["bash"], help="Print bash completion."
    )
    sub = root.add_subparsers(dest="command", metavar="COMMAND", title="Commands", prog=PROG)

    p = add_command(sub, "init", init)
    p.add_argument(
        "--repo-url",
        required=True,
        metavar="TEXT",
        help="Repository: http(s) URL, or a mirror's file:// URL or absolute path.",
    )
    p.add_argument("--root", required=True, type=Path, metavar="PATH", help="Trusted root.")
    p.add_argument("--product", required=True, metavar="TEXT", help="Product name, e.g. edge-gw.")
    p.add_argument(
        "--slot-a", required=True, type=Path, metavar="PATH", help="Slot a, absolute (booted)."
    )
    p.add_argument("--slot-b", required=True, type=Path, metavar="PATH", help="Slot b, absolute.")
    p.add_argument("--installed-version", required=True, metavar="TEXT", help="Version in slot a.")
    p.add_argument("--hardware", default="generic", metavar="TEXT", help="Hardware id.")
    p.add_argument(
        "--boot-backend",
        default="file",
        metavar="TEXT",
        help=f"Boot control backend: {', '.join(BACKENDS)}.",
    )
    p.add_argument(
        "--boot-option",
        action="append",
        metavar="KEY=VALUE",
        help="Backend option (repeatable).",
    )
    p.add_argument(
        "--tries",
        type=int_in(1, MAX_TRIES),
        default=DEFAULT_TRIES,
        metavar="N",
        help=f"Trial boot attempts (default {DEFAULT_TRIES}).",
    )
    p.add_argument(
        "--image-type",
        metavar="TYPE",
        help="Image type the slots hold (e.g. ext4); others are refused.",
    )

    p = add_command(sub, "update", update, json_help="JSON-lines progress.")
    p.add_argument(
        "--mode",
        choices=["staged", "stream"],
        default="staged",
        help="staged (download, then write) or stream.",
    )
    p.add_argument("--tries", type=int_in(1, MAX_TRIES), metavar="N", help="Trial boot attempts.")
    p.add_argument("--version", metavar="TEXT", help="Install exactly this version.")
    p.add_argument("--no-delta", action="store_true", help="Always use full images.")
    p.add_argument(
        "--now",
        action="store_true",
        help="Run now: skip a failed cycle's backoff and the rollout waves "
        "(never a halt or a recall).",
    )
    for dest, what in _LIMITS.items():
        p.add_argument(
            f"--{dest.replace('_', '-')}",
            type=number,
            metavar="N",
            help=f"{what} (default {LIMIT_DEFAULTS[dest]:g}).",
        )
    p.add_argument(
        "--from",
        dest="from_path",
        metavar="PATH",
        help="Install from an export (directory or .tar) or mirror.",
    )

    add_command(sub, "status", status)
    add_command(sub, "mark-good", mark_good)
    p = add_command(sub, "mark-bad", mark_bad, usage_args="SLOT")
    p.add_argument("slot", metavar="SLOT", choices=["a", "b"], help="a or b")
    add_command(sub, "rollback", rollback)
    add_command(sub, "clear-failed", clear_failed)
    add_command(sub, "boot", boot)
    p = add_command(sub, "report", report)
    p.add_argument(
        "--post", metavar="URL", help="Also send it to a collector (otakit fleet collect)."
    )
    p.add_argument(
        "--device-id",
        metavar="ID",
        default=os.environ.get("OTAKIT_DEVICE_ID") or None,
        help="This device's name for the collector (env OTAKIT_DEVICE_ID).",
    )
    add_command(sub, "verify-installed", verify_installed)
    p = add_command(sub, "fetch", fetch, usage_args="TARGET_NAME")
    p.add_argument("target", metavar="TARGET_NAME", help="Signed target path.")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="Where to write it.")
    p.add_argument("--repo-url", metavar="URL", help="Mirror for this run (URL, file:// or path).")
    tuf_cmd.add_to(sub, add_command)
    return root


def _missing_command(parser: Parser) -> ParseFailure:
    return ParseFailure(parser, f"Missing command. {parser.format_usage().strip()}")


def _dispatch(run: RunState, root: Parser, argv: list[str]) -> int:
    args = root.parse_args(argv)
    if args.show_completion:
        sys.stdout.write(bash_completion(PROG, root) + "\n")
        return EXIT_OK
    if args.command is None:
        raise _missing_command(root)
    handler = getattr(args, "handler", None)
    if handler is None:  # a group without its command (tuf)
        raise _missing_command(root.commands()[args.command])
    run.verbose = args.verbose
    run.use_json(args.json_global or args.json_out)
    setup_logging(run, run.verbose, quiet_level=QUIET_DEVICE)
    with ExitStack() as stack:
        # status never waits on the lock: it reads atomically replaced files only; tuf: no state
        if args.command not in ("status", "tuf"):
            from verifier.device import device_lock

            stack.enter_context(device_lock(args.state, args.command))
        handler(Ctx(args.state, run), args)
    return EXIT_OK


def run_cli(argv: list[str] | None = None) -> int:
    """Run ``otakit-device`` under the CLI contract; returns the exit code (never raises)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    run = RunState(PROG)
    run.json = pre_scan(argv, "--json")
    run.verbose = int(pre_scan(argv, "-v", "--verbose"))
    folded = False
    try:
        root = build_parser()
        folded = bool(argv) and _first_command(argv) == "tuf"
        code = _dispatch(run, root, argv)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ParseFailure as exc:
        folded = exc.parser.folded
        if not run.json:
            sys.stderr.write(exc.parser.format_usage())
        err = UsageError(exc.message, hint=f"see '{exc.parser.prog} --help'")
        code = render_error(run, err)
    except BaseException as exc:
        code = report_failure(run, exc)
    if folded and code not in (EXIT_OK, EXIT_INTERRUPTED):
        from verifier.tuf_cmd import EXIT_FAILURE

        return EXIT_FAILURE
    return code


def _first_command(argv: list[str]) -> str | None:
    """The command word (the first argument that is neither a global option nor its value)."""
    takes_value = {"--state", "--show-completion"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


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
    exit_with(run_cli(argv))


if __name__ == "__main__":
    main()
