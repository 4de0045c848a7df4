"""The device CLI's parser: stdlib ``argparse``, speaking the contract's language.

Why not typer on the device: typer 0.2x pulls in pydantic, rich, pygments and markdown-it
(about 25 MB installed) and costs ~0.2 s and ~6 MB of RSS before the first command line is
read, on a path a fleet runs from a timer. ``argparse`` is already in the interpreter. What a
user sees stays the contract's (docs/CLI.md): a parse error is a usage error (exit 2) with the
same words the publisher's CLI uses ("No such command", "Missing option '--out'"), help is
plain text at 80 columns with the exit-code table, and ``--show-completion bash`` prints a
completion script.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

#: how wide help is rendered, whatever the terminal (docs/CLI.md: readable at 80 columns)
HELP_WIDTH = 80


class ParseFailure(Exception):
    """A command line that does not parse; ``parser`` is the (sub)command that refused it.
    Internal to the CLI: the runner turns it into a ``UsageError`` (never escapes)."""

    def __init__(self, parser: Parser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (they are wrapped already), 80 columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=HELP_WIDTH, max_help_position=28)

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, "Usage: " if prefix is None else prefix)

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):  # no "COMMAND" line above the list
            text = text.split("\n", 1)[1]
        return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are raised, not printed and exited on.

    ``folded``: failures under this command exit 1 (``otakit-device tuf``, docs/CLI.md).
    """

    def __init__(
        self, *args: Any, folded: bool = False, usage_args: str = "", **kwargs: Any
    ) -> None:
        kwargs.setdefault("add_help", False)
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("usage", f"%(prog)s [OPTIONS]{' ' + usage_args if usage_args else ''}")
        super().__init__(*args, **kwargs)
        self.folded = folded
        self._optionals.title = "Options"
        self._positionals.title = "Arguments"
        self.add_argument("--help", action="help", help="Show this message and exit.")

    def error(self, message: str) -> NoReturn:
        raise ParseFailure(self, contract_message(message, self))

    def commands(self) -> dict[str, Parser]:
        """This parser's subcommands, by name (empty for a leaf command)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def option_names(self) -> set[str]:
        return {o for action in self._actions for o in action.option_strings}


def walk(parser: Parser, path: str = "") -> Iterator[tuple[str, Parser]]:
    """Every command path of a parser tree (``""`` for the root), with its parser."""
    yield path, parser
    for name, sub in parser.commands().items():
        yield from walk(sub, f"{path} {name}".strip())


def contract_message(message: str, parser: Parser) -> str:
    """argparse's wording turned into the contract's (the publisher's CLI says the same)."""
    if m := re.fullmatch(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)", message):
        if m[1] == "COMMAND":
            return f"No such command '{m[2]}'."
        return f"Invalid value for '{_name(m[1])}': '{m[2]}' is not one of {m[3]}."
    if m := re.fullmatch(r"argument (\S+): expected one argument", message):
        return f"Option '{_name(m[1])}' requires an argument."
    if m := re.fullmatch(r"argument (\S+): (.*)", message, re.S):
        return f"Invalid value for '{_name(m[1])}': {m[2]}"
    if m := re.fullmatch(r"the following arguments are required: (.*)", message):
        first = m[1].split(", ")[0]
        if first == "COMMAND":
            return f"Missing command. {parser.format_usage().strip()}"
        what = "option" if first.startswith("-") else "argument"
        return f"Missing {what} '{_name(first)}'."
    if m := re.fullmatch(r"unrecognized arguments: (\S+).*", message):
        return f"No such option: {m[1]}"
    return message[:1].upper() + message[1:]


def _name(argument: str) -> str:
    """``-v/--verbose`` -> ``--verbose``: the long spelling names an option."""
    return argument.split("/")[-1]


# --- values -------------------------------------------------------------------------------------


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a valid integer.") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in the range {low}<=x<={high}.")
        return value

    return parse


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a valid float.") from None


# --- shell completion ---------------------------------------------------------------------------


def bash_completion(prog: str, root: Parser) -> str:
    """A bash completion script: commands, then the options of the command being typed."""
    func = f"_{prog.replace('-', '_')}_completion"
    subs, opts = [], []
    for path, parser in walk(root):
        key = "/" + path.replace(" ", "/") if path else ""
        subs.append(f"  [{key or '/'}]='{' '.join(parser.commands())}'")
        opts.append(f"  [{key or '/'}]='{' '.join(sorted(parser.option_names()))}'")
    return "\n".join(
        [
            f"{func}() {{",
            "  local -A subs=(",
            *subs,
            "  )",
            "  local -A opts=(",
            *opts,
            "  )",
            '  local key="" w cur="${COMP_WORDS[COMP_CWORD]}"',
            '  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do',
            '    [[ " ${subs[${key:-/}]} " == *" $w "* ]] && key="$key/$w"',
            "  done",
            '  COMPREPLY=($(compgen -W "${subs[${key:-/}]} ${opts[${key:-/}]}" -- "$cur"))',
            "}",
            f"complete -o default -F {func} {prog}",
        ]
    )


def pre_scan(argv: Sequence[str], *flags: str) -> bool:
    """Whether one of ``flags`` is on the command line (before ``--``): the contract must
    know ``--json`` and ``-v`` even when the rest does not parse."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in flags or (arg.startswith("-v") and "-v" in flags and set(arg[1:]) == {"v"}):
            return True
    return False
