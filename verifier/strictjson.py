"""The device's one JSON reader: every metadata and state file goes through it.

Python's ``json`` (and so python-tuf) keeps the *last* of two equal keys, accepts ``NaN`` and
``Infinity``, decodes UTF-16/32 when handed bytes and recurses as deep as the input nests. A
reviewer's parser that keeps the *first* ``expires`` or ``version`` then reads something else
than what the device enforces. So the device refuses, before anything interprets the bytes:

* a key twice in one object, at any depth (the message says which key, in which file, where);
* ``NaN``, ``Infinity``, ``-Infinity`` (not JSON);
* anything but UTF-8 text (a BOM included);
* nesting deeper than ``MAX_DEPTH`` (no TUF or state document needs more than a dozen).

``duplicates`` reports instead of refusing, for the reviewer's ``otakit inspect``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from verifier.errors import OtakitError

#: Deeper than any metadata or state file otakit reads (targets custom: about 8).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Duplicate:
    """One key found twice: ``key`` in the object at ``at`` (e.g. ``signed.meta``)."""

    key: str
    at: str


class _Dict(dict[str, Any]):
    """An object that had a key twice; found again after parsing to learn its path."""

    dup_keys: tuple[str, ...] = ()


def _hook(found: list[_Dict]) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) == len(pairs):
            return d
        seen: set[str] = set()
        twice = []
        for k, _ in pairs:
            if k in seen:
                twice.append(k)
            seen.add(k)
        marked = _Dict(pairs)
        marked.dup_keys = tuple(twice)
        found.append(marked)
        return marked

    return hook


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if key.isidentifier():
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key)}]"


def _walk(doc: Any, paths: dict[int, str] | None) -> None:
    """Bound the depth of ``doc``; record the path of every ``_Dict`` into ``paths``.

    Paths are spelled only when some object had a duplicate (``paths`` given): a clean
    16 MiB targets file costs one pass without string building.
    """
    stack: list[tuple[Any, str, int]] = [(doc, "", 1)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if paths is None:
                stack.extend((v, "", depth + 1) for v in node.values())
                continue
            if isinstance(node, _Dict):
                paths[id(node)] = where
            stack.extend((v, _path(where, k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            if paths is None:
                stack.extend((v, "", depth + 1) for v in node)
            else:
                stack.extend((v, _path(where, i), depth + 1) for i, v in enumerate(node))


def _parse(data: bytes) -> tuple[Any, list[Duplicate]]:
    """The document and its duplicate keys; ``ValueError`` with a plain reason otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"binary data, not UTF-8 text ({len(data)} bytes, starting {data[:8].hex(' ')})"
        ) from e
    found: list[_Dict] = []
    try:
        doc = json.loads(text, object_pairs_hook=_hook(found), parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        if e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string"):
            raise ValueError(
                f"truncated JSON (it ends after {len(data)} bytes, mid-document)"
            ) from e
        raise ValueError(f"not JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except RecursionError as e:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from e
    paths: dict[int, str] | None = {} if found else None
    _walk(doc, paths)
    paths = paths or {}
    dups = [
        Duplicate(k, paths.get(id(d), "a value that a later duplicate replaced"))
        for d in found
        for k in d.dup_keys
    ]
    return doc, dups


def _where(at: str) -> str:
    return f"at {at}" if at else "at the top level"


def loads(data: bytes, *, name: str, error: type[OtakitError], hint: str | None = None) -> Any:
    """``data`` parsed, or ``error`` naming ``name`` and what is wrong where.

    ``error`` is the caller's family: ``InvalidMetadataError`` for bytes from a server,
    ``ConfigError`` for a state file, ``TrustedMetadataError`` for the device's own trust.
    """
    try:
        doc, dups = _parse(data)
    except ValueError as e:
        raise error(f"{name}: expected strict JSON, found {e}", hint=hint) from e
    if dups:
        first = dups[0]
        more = f" (and {len(dups) - 1} more)" if len(dups) > 1 else ""
        raise error(
            f"{name}: duplicate key {first.key!r} {_where(first.at)}{more}: "
            "expected each key once (parsers disagree on which value counts)",
            hint=hint,
        )
    return doc


def duplicates(data: bytes) -> list[Duplicate]:
    """Every key found twice in ``data``; [] if ``data`` is not strict JSON at all."""
    try:
        return _parse(data)[1]
    except ValueError:
        return []
