"""Image-diff benchmark: ``otakit image diff`` against the obvious manual way, on one pair.

    python bench/image_diff_bench.py --corpus DIR [--repeat 3]

The manual way is what a reviewer without a tool does with an ext4 pair: ``debugfs -R
'rdump / DIR'`` for each image (no mount, no root), then ``diff -r --no-dereference``. It is
run in a scratch directory this script creates; that is the point of comparing against it —
``otakit image diff`` writes nothing. Both sides get the same warm page cache (each image is
read once before timing); the best of ``--repeat`` runs is kept. The corpus is built with
``/work/shared/corpus/make-image-pair.sh DIR`` if it is missing (root + apt; a few minutes).

Prints ratios (the baseline's time over otakit's) as the headline, seconds underneath, and the
squashfs and tar forms of the same pair when the corpus has them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAKE_PAIR = Path("/work/shared/corpus/make-image-pair.sh")
OTAKIT = [sys.executable, "-c", "import signer.entry as e; e.main()"]


def _warm(*paths: Path) -> None:
    for p in paths:
        with p.open("rb") as f:
            while f.read(1 << 24):
                pass


def _best(fn: object, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
    return best, out


def otakit_diff(a: Path, b: Path) -> dict[str, object]:
    r = subprocess.run(
        [*OTAKIT, "image", "diff", str(a), str(b), "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    doc: dict[str, object] = json.loads(r.stdout)
    return doc


def manual_diff(a: Path, b: Path) -> int:
    """rdump both images into a scratch directory, diff -r them; the number of differences."""
    debugfs = shutil.which("debugfs") or "/usr/sbin/debugfs"
    with tempfile.TemporaryDirectory(prefix="image-diff-bench-") as tmp:
        for name, img in (("a", a), ("b", b)):
            out = Path(tmp) / name
            out.mkdir()
            subprocess.run(
                [debugfs, "-R", f"rdump / {out}", str(img)], capture_output=True, check=True
            )
        r = subprocess.run(
            ["diff", "-r", "-q", "--no-dereference", f"{tmp}/a", f"{tmp}/b"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if r.returncode not in (0, 1):
            raise SystemExit(f"diff -r failed: {r.stderr}")
        return len(r.stdout.splitlines())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("/work/corpus"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    corpus: Path = args.corpus
    a, b = corpus / "v1.ext4", corpus / "v2.ext4"
    if not (a.exists() and b.exists()):
        subprocess.run(["bash", str(MAKE_PAIR), str(corpus)], check=True)
    _warm(a, b)
    t_manual, differences = _best(lambda: manual_diff(a, b), args.repeat)
    t_otakit, doc = _best(lambda: otakit_diff(a, b), args.repeat)
    assert isinstance(doc, dict)
    s = doc["summary"]
    pk = doc["packages"] or {}
    print(f"# image diff: {a.name} -> {b.name} ({a.stat().st_size >> 20} MiB each)\n")
    print(
        f"**otakit image diff is {t_manual / t_otakit:.1f}x faster** than "
        "debugfs rdump x2 + diff -r"
    )
    print()
    print("| form | tool | seconds | ratio to otakit ext4 | what it reports |")
    print("|---|---|---|---|---|")
    print(
        f"| ext4 | otakit image diff | {t_otakit:.2f} | 1.00 | {s['added']} added, "
        f"{s['removed']} removed, {s['modified']} modified, {s['bytes_changed'] >> 20} MiB; "
        f"{len(pk.get('upgraded', []))} packages upgraded, {len(pk.get('added', []))} added |"
    )
    print(
        f"| ext4 | debugfs rdump x2 + diff -r | {t_manual:.2f} | {t_manual / t_otakit:.2f} | "
        f"{differences} differing paths (content and presence only) |"
    )
    for form in ("sqfs", "tar"):
        fa, fb = corpus / f"v1.{form}", corpus / f"v2.{form}"
        if fa.exists() and fb.exists():
            _warm(fa, fb)
            t, d = _best(lambda fa=fa, fb=fb: otakit_diff(fa, fb), args.repeat)
            assert isinstance(d, dict)
            fs = d["summary"]
            print(
                f"| {form} | otakit image diff | {t:.2f} | {t / t_otakit:.2f} | "
                f"{fs['added']} added, {fs['removed']} removed, {fs['modified']} modified |"
            )


if __name__ == "__main__":
    main()
