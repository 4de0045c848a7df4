"""Run both CLIs the way a user does: a subprocess through the console-script entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
DEMO_KEYS = ROOT / "keys-example" / "keys.json"
ENTRY = {"otakit": "signer.entry", "otakit-device": "verifier.entry"}


def command(prog: str, *args: str) -> list[str]:
    """argv for ``prog`` through its real entry point (the Ctrl-C-safe import path)."""
    return [sys.executable, "-c", f"import {ENTRY[prog]} as e; e.main()", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80", "NO_COLOR": "1"}


def run(prog: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(prog, *args),
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def ext4_image(path: Path, tree: Path, size_mib: int = 24) -> Path:
    """A real ext4 image of ``tree`` (mkfs.ext4 -d), the kind of file a pipeline releases."""
    mkfs = require("mkfs.ext4")
    subprocess.run(
        [mkfs, "-q", "-F", "-b", "4096", "-E", "root_owner=0:0", "-U", "clear",
         "-d", str(tree), str(path), f"{size_mib}M"],
        check=True, capture_output=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"},
    )  # fmt: skip
    return path


def make_tree(root: Path, seed: int, files: int = 60) -> Path:
    """A small root-filesystem-like tree: text configs and binary blobs, seeded."""
    import random

    r = random.Random(seed)
    for i in range(files):
        sub = root / f"usr/lib/pkg{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 3:
            words = [f"option{r.randrange(500)}={r.randrange(10**6)}" for _ in range(400)]
            (sub / f"conf{i}.txt").write_text("\n".join(words))
        else:
            (sub / f"blob{i}.bin").write_bytes(r.randbytes(48_000))
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/os-release").write_text(f"ID=otakit-test\nVERSION_ID={seed}\n")
    return root
