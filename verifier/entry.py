"""The console-script entries of both CLIs, Ctrl-C safe from the first statement.

The scripts name this module rather than the CLI modules: it imports nothing at load time,
so a Ctrl-C while typer, rich and python-tuf load (a few hundred milliseconds on a small
device) is caught here and reported as one line with exit 130, never as a traceback.
"""

import sys


def interrupted_in(exc: BaseException) -> bool:
    """Whether Ctrl-C is what really ended this: a ``KeyboardInterrupt`` anywhere in the chain.

    Python wraps an interrupt in other errors in places: a cleanup that fails while unwinding
    (``BufferError`` closing an mmap), a class body being created (``RuntimeError: Error
    calling __set_name__``). Those must still read as an interruption, not as a bug.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def run(prog: str, module: str) -> None:
    """Import the CLI ``module`` and run its ``app`` under the CLI contract."""
    try:
        import importlib

        from verifier.cli_contract import exit_with, run_app

        app = importlib.import_module(module).app
        code = run_app(app, prog, None)
    except BaseException as e:  # only what escapes while loading: run_app never raises
        if isinstance(e, SystemExit):
            raise
        if interrupted_in(e):
            sys.stderr.write(f"{prog}: interrupted\n")
            raise SystemExit(130) from None
        sys.stderr.write(f"{prog}: internal error: cannot load the command line: {e}\n")
        raise SystemExit(1) from None
    exit_with(code)


def main() -> None:
    run("otakit-device", "verifier.cli")
