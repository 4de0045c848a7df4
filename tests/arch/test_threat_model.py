"""docs/THREAT-MODEL.md's table names, for every attack, the tests that prove it is stopped.

This keeps the promise "no row without a test": every test node id named in the table must
exist (the file, the test function, and for a parametrized id the exact case, as pytest
collects it), every row names at least one, and each TUF attack's own test is in the table.
A row may instead say ``(pending: issue 9 fix)`` only if it is listed in ``PENDING``: the
holes whose regression tests are being written with their fixes. The lead empties the list
as the fixes land.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "THREAT-MODEL.md"
MARKER = "<!-- threat-table: parsed by tests/arch/test_threat_model.py -->"
PENDING_TEXT = "(pending: issue 9 fix)"

#: Rows (by the start of their attack cell) allowed to name a pending test.
PENDING: tuple[str, ...] = ()

#: The attacks the TUF specification names, each with its test in tests/e2e/test_tuf_attacks.py.
TUF_ATTACKS = (
    "arbitrary_installation",
    "endless_data",
    "extraneous_dependencies",
    "fast_forward",
    "indefinite_freeze",
    "malicious_mirrors",
    "mix_and_match",
    "rollback",
    "slow_retrieval",
    "key_compromise_below_threshold",
    "wrong_software_installation",
)

_REF_RE = re.compile(r"`(tests/[^`]+)`")


def rows() -> list[tuple[str, str, str]]:
    text = DOC.read_text()
    assert MARKER in text, f"{DOC}: the table marker {MARKER!r} is missing"
    lines = text.split(MARKER, 1)[1].strip().splitlines()
    assert lines[0].startswith("| attack |") and lines[1].startswith("|---"), lines[:2]
    out = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"expected 3 cells (attack, code, test), found {cells}"
        out.append((cells[0], cells[1], cells[2]))
    return out


def refs(test_cell: str) -> list[str]:
    return _REF_RE.findall(test_cell)


@cache
def functions(path: Path) -> frozenset[str]:
    """Test functions defined in ``path`` (module level and in classes)."""
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def collected(files: list[str]) -> set[str]:
    """Node ids pytest collects from ``files`` (only collection: no test runs)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.strip() for line in proc.stdout.splitlines() if "::" in line}


def test_the_table_parses_and_every_row_names_a_test_or_an_allowed_pending_one() -> None:
    table = rows()
    assert len(table) >= len(TUF_ATTACKS)
    for attack, code, tests in table:
        assert code, f"{attack}: no code named"
        pending = PENDING_TEXT in tests
        assert refs(tests) or pending, f"{attack}: no test named"
        if pending:
            assert attack.startswith(PENDING), f"{attack}: pending, but not in PENDING"
    starts = [a for a, _, _ in table]
    for allowed in PENDING:
        assert any(a.startswith(allowed) for a in starts), f"PENDING names no row: {allowed}"


def test_every_named_test_exists() -> None:
    missing = []
    parametrized: dict[str, list[str]] = {}
    for attack, _, tests in rows():
        for ref in refs(tests):
            path_s, _, name = ref.partition("::")
            path = ROOT / path_s
            if path_s.endswith("/"):
                if not path.is_dir() or not list(path.glob("test_*.py")):
                    missing.append((attack, ref))
                continue
            if not path.is_file():
                missing.append((attack, ref))
                continue
            func = name.split("[", 1)[0]
            if func and func not in functions(path):
                missing.append((attack, ref))
            elif "[" in name:
                parametrized.setdefault(path_s, []).append(ref)
    assert not missing, f"tests named in {DOC.name} that do not exist: {missing}"
    if parametrized:
        ids = collected(sorted(parametrized))
        cases = [r for refs_ in parametrized.values() for r in refs_ if r not in ids]
        assert not cases, (
            f"parametrized cases named in {DOC.name} that pytest does not collect: {cases}"
        )


def test_each_tuf_attack_has_its_named_test_in_the_table() -> None:
    named = {r.split("[", 1)[0] for _, _, tests in rows() for r in refs(tests)}
    attacks = ROOT / "tests" / "e2e" / "test_tuf_attacks.py"
    for attack in TUF_ATTACKS:
        assert f"test_{attack}" in functions(attacks), attack
        assert f"tests/e2e/test_tuf_attacks.py::test_{attack}" in named, attack
