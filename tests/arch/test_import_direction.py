"""The device never imports publisher code (DESIGN.md: signer -> repo -> verifier).

Checked two ways: statically over every ``import`` in verifier/ (catches lazy imports inside
functions), and dynamically by importing every verifier module in a fresh interpreter and
checking that no ``signer``/``repo`` module got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("signer", "repo")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def test_verifier_sources_never_import_publisher_code() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{line}: import {mod}"
        for p in sorted((ROOT / "verifier").rglob("*.py"))
        for line, mod in _imports(p)
        if mod.split(".")[0] in FORBIDDEN
    ]
    assert offenders == [], "verifier/ must not import signer/ or repo/:\n" + "\n".join(offenders)


def test_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from repo.keys import load\n    import signer.release\n")
    assert [m for _, m in _imports(bad)] == ["repo.keys", "signer.release"]


def test_importing_all_of_verifier_loads_no_publisher_module() -> None:
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "verifier").rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('signer', 'repo'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
