"""The contract both CLIs keep, written once: how an outcome reaches the user.

``otakit`` and ``otakit-device`` differ in their commands, not in how they fail. Here, once:

* every error — ours, a stray ``OSError``, a typer usage error, Ctrl-C, a bug — becomes one
  diagnostic line family on stderr (or one JSON error object on stdout with ``--json``) and the
  exit code of its family (docs/CLI.md); a traceback only with ``-v``;
* SIGINT anywhere, including while modules load and while the interpreter shuts down, is one
  line and exit 130, never a traceback;
* data goes to stdout (text, or one JSON document per command; ``update`` streams JSON lines),
  progress and warnings to stderr.

Options that every command honours (``--json``, ``-v``) are collected into one ``RunState``
that the wrapper owns and hands to typer as the context object, so the error path reads the
same values the command saw, never ``sys.argv`` or a module global.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from verifier.entry import interrupted_in
from verifier.errors import (
    InternalError,
    InterruptedByUserError,
    LocalError,
    NothingToDoError,
    OtakitError,
    SecurityError,
    TransportError,
    UsageError,
)

EXIT_OK = NothingToDoError.exit_code
EXIT_INTERRUPTED = InterruptedByUserError.exit_code

#: The exit-code table, rendered into every ``--help`` epilog and kept equal to docs/CLI.md
#: by a test; the codes are the error families' own, so the table cannot drift from them.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success, also 'nothing to do' (no newer image, nothing due)"),
    (InternalError.exit_code, "internal error (a bug: please report it with the -v output)"),
    (UsageError.exit_code, "usage: bad option, argument or request (e.g. a version not published)"),
    (
        SecurityError.exit_code,
        "security: not authentic, not fresh or not for us; never retry silently",
    ),
    (TransportError.exit_code, "transport: network or server problem; retry later"),
    (LocalError.exit_code, "local: disk, slot, boot environment, key file or configuration"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); rerun to converge"),
)


def _epilog() -> str:
    """The exit-code table for ``--help`` (``\\b`` keeps click from re-wrapping it)."""
    rows = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES)
    return (
        f"\b\nExit codes:\n{rows}\n\n"
        "With --json a failure is a JSON error object on stdout; see docs/CLI.md."
    )


#: The ``--help`` epilog of every command of both CLIs.
EPILOG = _epilog()


@dataclass
class RunState:
    """What the global options said; filled by the CLI's callback and commands as they parse."""

    prog: str
    verbose: int = 0
    json: bool = False
    warnings: list[str] = field(default_factory=list)

    def use_json(self, flag: bool) -> bool:
        """A command's own ``--json`` counts like the global one (both spellings work)."""
        self.json = self.json or flag
        return self.json

    # --- rendering ---------------------------------------------------------------------------

    def emit(self, data: Any) -> None:
        """One JSON document (or JSON line) on stdout."""
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
        sys.stdout.flush()

    def result(self, data: dict[str, Any], text: str | None) -> None:
        """A command's outcome: ``data`` as JSON with ``--json``, else ``text`` (if any)."""
        if self.json:
            self.emit(self._with_warnings(data))
        elif text:
            sys.stdout.write(text.rstrip("\n") + "\n")
            sys.stdout.flush()

    def _with_warnings(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with every warning shown during the run listed in ``warnings``: a result's
        own structured entries first, then the others as ``{"message": ...}``."""
        own = list(data.get("warnings") or [])
        known = {w.get("message") if isinstance(w, dict) else w for w in own}
        extra = [{"message": m} for m in self.warnings if m not in known]
        return {**data, "warnings": own + extra} if own or extra else data

    def warn(self, message: str) -> None:
        """A warning: on stderr at once, and collected for the JSON result. Once per command
        run: a command that verifies the same root five times says so once, not five times."""
        if message in self.warnings:
            return
        self.warnings.append(message)
        sys.stderr.write(f"{self.prog}: WARNING: {message}\n")
        sys.stderr.flush()

    def note(self, message: str) -> None:
        """Progress or a remark for a human: stderr, never stdout."""
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()


class _ContractLogHandler(logging.Handler):
    """Library code logs; the CLI decides where it goes. Warnings (demo keys, expiry) become
    contract warnings — one ``PROG: WARNING:`` line on stderr and an entry in the JSON
    result's ``warnings`` — so no library prints and no warning is lost under ``--json``.
    Lower levels are progress notes on stderr."""

    def __init__(self, run: RunState, verbose: int) -> None:
        super().__init__()
        self.run = run
        self._fmt = logging.Formatter(
            "%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno >= logging.WARNING:
                self.run.warn(record.getMessage())
            else:
                self.run.note(self._fmt.format(record))
        except Exception:  # a logging failure must not become the command's failure
            self.handleError(record)


def setup_logging(run: RunState, verbose: int, *, quiet_level: int) -> None:
    """Route otakit's logs through the contract: ``quiet_level`` without ``-v``, INFO with
    ``-v``, DEBUG with ``-vv``."""
    level = quiet_level if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _ContractLogHandler)]:
        root.removeHandler(h)
    root.addHandler(_ContractLogHandler(run, verbose))
    root.setLevel(level)


def run_state(ctx: Any, json_out: bool = False) -> RunState:
    """The contract state of this invocation (set up by the CLI's callback); a command's own
    ``--json`` counts like the global one."""
    run = ctx.find_object(RunState)
    if not isinstance(run, RunState):  # a sub-app invoked on its own (tests, embedding)
        root = ctx.find_root()
        run = root.obj = RunState(root.info_name or "otakit")
    run.use_json(json_out)
    return run


def render_error(state: RunState, err: OtakitError, exc: BaseException | None = None) -> int:
    """Print ``err`` the one way both CLIs print errors; returns the exit code."""
    if state.verbose and exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(err, NothingToDoError):
        if state.json:
            state.emit({"event": "nothing-to-do", "message": err.message})
        else:
            sys.stdout.write(f"nothing to do: {err.message}\n")
        return EXIT_OK
    if state.json:
        state.emit(err.to_json())
    if isinstance(err, InterruptedByUserError):
        sys.stderr.write(f"{state.prog}: {err.message}\n")
    elif not state.json or state.verbose:
        sys.stderr.write(f"{state.prog}: {err.family} error: {err.diagnostic()}\n")
    return err.exit_code


def classify(exc: BaseException) -> OtakitError:
    """Our error for anything that escaped a command."""
    # typer >= 0.20 vendors click; its exceptions are reachable only there (version locked).
    # Only the publisher's CLI is typer: on a device-only install typer is absent, and an
    # exception can only be typer's when typer is loaded.
    abort: tuple[type[BaseException], ...] = ()
    click: tuple[type[BaseException], ...] = ()
    if "typer" in sys.modules:
        from typer import Abort
        from typer._click.exceptions import ClickException

        abort, click = (Abort,), (ClickException,)

    if interrupted_in(exc) or isinstance(exc, abort):
        if isinstance(exc, abort) and isinstance(exc.__context__, EOFError):
            return UsageError("input ended while a prompt was waiting for an answer")
        return InterruptedByUserError("interrupted; nothing is left half-done, rerun to converge")
    if isinstance(exc, OtakitError):
        return exc
    if isinstance(exc, click):
        message = cast(Any, exc).format_message().replace("Value error, ", "")
        return UsageError(message, hint=_usage_hint(exc))
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return LocalError(f"{where}{exc.strerror or exc}")
    return InternalError(
        f"unexpected {type(exc).__name__}: {exc}",
        hint="this is a bug in otakit; rerun with -v and report the traceback",
    )


def _usage_hint(exc: Any) -> str | None:
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return None
    return f"see '{ctx.command_path} --help'"


def _json_asked(exc: BaseException, state: RunState) -> bool:
    """Whether ``--json`` was given, even when parsing stopped before the command ran: the
    parameters click had already converted are in the failing context and its parents."""
    ctx = getattr(exc, "ctx", None)
    while ctx is not None:
        if any(ctx.params.get(name) for name in ("json_out", "json")):
            return True
        ctx = ctx.parent
    return state.json


def report_failure(state: RunState, exc: BaseException) -> int:
    """Render whatever ended a command (ours, typer's, an OSError, a bug) the one way both CLIs
    do; returns the exit code of its family. Never raises."""
    try:
        err = classify(exc)
    except Exception as bug:  # the contract itself must never end in a traceback
        err = InternalError(f"while reporting {type(exc).__name__}: {bug}")
    if not isinstance(exc, OtakitError) and isinstance(err, UsageError):
        state.json = _json_asked(exc, state)
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and not state.json:
            sys.stderr.write(ctx.get_usage() + "\n")
    return render_error(state, err, exc)


def run_app(app: Callable[..., Any], prog: str, argv: Sequence[str] | None) -> int:
    """Run a typer app (the publisher's) under the contract; returns the exit code (never
    raises). The device's argparse CLI has its own runner, ``verifier.cli.run_cli``."""
    state = RunState(prog)
    try:
        rv = app(args=None if argv is None else list(argv), prog_name=prog,
                 standalone_mode=False, obj=state)  # fmt: skip
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        return report_failure(state, exc)
    if rv == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into Exit(130)
        return render_error(state, classify(KeyboardInterrupt()))
    return rv if isinstance(rv, int) else EXIT_OK


def exit_with(code: int) -> NoReturn:
    """Leave without a Ctrl-C turning interpreter shutdown into a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        code = code or LocalError.exit_code
    sys.exit(code)
