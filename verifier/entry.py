"""The console-script entries of both CLIs, Ctrl-C safe from the first statement.

The scripts name this module rather than the CLI modules: it imports nothing at load time,
so a Ctrl-C while typer, rich and python-tuf load (a few hundred milliseconds on a small
device) is caught here and reported as one line with exit 130, never as a traceback.
"""

import sys


def run(prog: str, module: str) -> None:
    """Import the CLI ``module`` and run its ``app`` under the CLI contract."""
    try:
        import importlib

        from verifier.cli_contract import exit_with, run_app

        code = run_app(importlib.import_module(module).app, prog, None)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        raise SystemExit(130) from None
    exit_with(code)


def main() -> None:
    run("otakit-device", "verifier.cli")
