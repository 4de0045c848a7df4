"""Text chosen by the other side, made safe to print on an operator's terminal.

A collector's answer reaches a device's terminal, a request line reaches the collector's log:
either may carry escape sequences (rewrite the screen, set the window title, paste into the
shell). Every control character is shown escaped instead of being interpreted.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character written as ``\\xNN`` (or ``\\uNNNN``)."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
