"""The console-script entries of both CLIs, Ctrl-C safe from the first statement.

The scripts name this module rather than the CLI modules: it imports nothing at load time,
so a Ctrl-C while the CLI loads (the publisher's typer and rich take a few hundred
milliseconds on a small device) is caught here and reported as one line with exit 130,
never as a traceback.
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
    """Import the CLI ``module`` and run it under the CLI contract: its ``run_cli`` (the
    device's argparse CLI) or its typer ``app`` (the publisher's)."""
    try:
        import importlib

        from verifier.cli_contract import exit_with, run_app

        loaded = importlib.import_module(module)
        runner = getattr(loaded, "run_cli", None)
        code = runner(None) if runner is not None else run_app(loaded.app, prog, None)
    except BaseException as e:  # only what escapes while loading: the runners never raise
        if isinstance(e, SystemExit):
            raise
        if interrupted_in(e):
            sys.stderr.write(f"{prog}: interrupted\n")
            raise SystemExit(130) from None
        if isinstance(e, ModuleNotFoundError) and e.name in _PUBLISHER_ONLY:
            sys.stderr.write(
                f"{prog}: local error: {e.name} is not installed: this is a device-only install "
                "(requirements/device.lock); the publisher needs the full install "
                "(requirements/runtime.lock)\n"
            )
            raise SystemExit(5) from None
        sys.stderr.write(f"{prog}: internal error: cannot load the command line: {e}\n")
        raise SystemExit(1) from None
    exit_with(code)


#: what a device-only install leaves out, so ``otakit`` there says why it cannot start
_PUBLISHER_ONLY = frozenset({"typer", "rich", "click", "pydantic"})


def main() -> None:
    run("otakit-device", "verifier.cli")
