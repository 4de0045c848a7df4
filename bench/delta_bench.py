"""Delta benchmark: otakit's encoder/decoder against the anchors of issue 3, in one run.

    python bench/delta_bench.py --pair 1=/work/corpus --pair 2=/work/corpus2 \
        [--forms ext4,raw.sqfs,tar] [--otakit PATH] [--hdiffpatch-python PY] [--double]

Every tool runs as its own child process under ``/usr/bin/time`` so wall time and peak RSS
are measured the same way for all of them. The corpus is built with
``../shared/corpus/make-image-pair.sh DIR`` if it is missing (root + apt; a few minutes).
Prints one markdown table per image pair and writes them to ``--out`` (bench/RESULTS.md's
generated part goes to bench/results-latest.md by default; RESULTS.md holds the notes).

Anchors: zstd -3 --long=31 (full image), zstd -3/-19 --long=31 --patch-from, xdelta3,
casync (new chunks only), bsdiff (killed after --bsdiff-timeout seconds), HDiffPatch
(PyPI ``hdiffpatch`` in a separate interpreter given by --hdiffpatch-python, optional).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAKE_PAIR = Path("/work/shared/corpus/make-image-pair.sh")
PY = str(REPO / ".venv" / "bin" / "python")
OTAKIT_DELTA = "import sys; from signer.delta_cmd import delta_app; delta_app(sys.argv[1:])"


def otakit_cmd(otakit: str | None) -> list[str]:
    """How to call ``otakit delta``: a given executable (another worktree's venv) or ours."""
    if otakit:
        return [otakit, "delta"]
    return [PY, "-c", OTAKIT_DELTA]


def offered_flags(base_cmd: list[str], env: dict[str, str]) -> set[str]:
    """Which of the round-2 options (``--max``, ``--format``) this encoder's help offers."""
    p = subprocess.run(
        [*base_cmd, "create", "--help"], capture_output=True, text=True, env=env, check=False
    )
    return {f for f in ("--max", "--format") if f in p.stdout}


def median(xs: list[float]) -> float:
    """Median of the interleaved repeats (robust to one run hit by a neighbour's burst)."""
    if not xs:
        raise ValueError("median of no values")
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either side is missing (a tool failed or was skipped)."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None, digits: int = 2) -> str:
    return "—" if r is None else f"{r:.{digits}f}×"


@dataclass
class Run:
    seconds: float
    rss_mb: float
    ok: bool
    note: str = ""


@dataclass
class Row:
    tool: str
    size: int | None
    create: Run | None
    apply: Run | None
    bounded: bool  # applies in memory that does not grow with the image
    note: str = ""
    create_runs: tuple[float, ...] = ()  # interleaved repeats (median is create.seconds)


def timed(
    cmd: list[str], *, timeout: float | None = None, env: dict[str, str] | None = None
) -> Run:
    """Run ``cmd`` under /usr/bin/time; wall seconds and the child's peak RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%e %M", "-o", tf.name, *cmd]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(full, capture_output=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return Run(time.perf_counter() - t0, 0.0, False, f"killed after {timeout:.0f} s")
        wall = time.perf_counter() - t0
        fields = Path(tf.name).read_text().split()
        rss = float(fields[-1]) / 1024 if fields else 0.0
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return Run(wall, rss, False, f"exit {p.returncode}: {err[0][:120]}")
        return Run(wall, rss, True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def hashed_apply(cmd: list[str], result: Path) -> list[str]:
    """Apply, then hash the written result (the device re-reads the slot; count it for all)."""
    script = f"{' '.join(_q(c) for c in cmd)} && sha256sum {_q(str(result))} > /dev/null"
    return ["bash", "-c", script]


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def check(result: Path, expected: str) -> str:
    if not result.exists():
        return "no output"
    return "" if sha256(result) == expected else "WRONG RESULT"


def run_pair(base: Path, new: Path, work: Path, args: argparse.Namespace, label: str) -> list[Row]:
    expected = sha256(new)
    sha256(base)  # both images in the page cache: the first tool timed must not pay the reads
    rows: list[Row] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = work / "out.img"

    def finish(
        tool: str,
        artifact: Path,
        create: Run,
        apply_cmd: list[str] | None,
        bounded: bool,
        note: str = "",
    ) -> None:
        size = artifact.stat().st_size if create.ok and artifact.exists() else None
        app = None
        if apply_cmd is not None and size is not None:
            out.unlink(missing_ok=True)
            app = timed(hashed_apply(apply_cmd, out), env=env)
            note = "; ".join(x for x in (note, check(out, expected), app.note) if x)
        rows.append(
            Row(tool, size, create, app, bounded, "; ".join(x for x in (note, create.note) if x))
        )
        print(
            f"  {label} {tool}: size={size} create={create.seconds:.1f}s/{create.rss_mb:.0f}MB "
            f"apply={app.seconds if app else '-'} {app.rss_mb if app else ''} {note}",
            flush=True,
        )
        artifact.unlink(missing_ok=True)
        out.unlink(missing_ok=True)

    # --- otakit ---------------------------------------------------------------------------
    d = work / "otakit.otd"
    c = timed([PY, "-c", OTAKIT_DELTA, "create", str(base), str(new), str(d), "--json"], env=env)
    finish(
        "otakit delta (level 3, 4 MiB zones)",
        d,
        c,
        [PY, "-c", OTAKIT_DELTA, "apply", str(base), str(d), str(out)],
        True,
        "create includes the decoder round trip",
    )
    if args.otakit_level9:
        c = timed(
            [PY, "-c", OTAKIT_DELTA, "create", "--level", "9", str(base), str(new), str(d)], env=env
        )
        finish(
            "otakit delta (level 9, 4 MiB zones)",
            d,
            c,
            [PY, "-c", OTAKIT_DELTA, "apply", str(base), str(d), str(out)],
            True,
        )
    if args.only_otakit:
        return rows
    # --- zstd -------------------------------------------------------------------------------
    z = work / "full.zst"
    c = timed(["zstd", "-q", "-f", "-3", "--long=31", str(new), "-o", str(z)])
    finish(
        "zstd -3 --long=31 (full image)",
        z,
        c,
        ["zstd", "-q", "-d", "-f", "--long=31", str(z), "-o", str(out)],
        False,
    )
    for level in args.patch_levels:
        z = work / f"patch{level}.zst"
        c = timed(
            [
                "zstd",
                "-q",
                "-f",
                f"-{level}",
                "--long=31",
                f"--patch-from={base}",
                str(new),
                "-o",
                str(z),
            ],
            timeout=args.slow_timeout,
        )
        finish(
            f"zstd -{level} --long=31 --patch-from",
            z,
            c,
            ["zstd", "-q", "-d", "-f", "--long=31", f"--patch-from={base}", str(z), "-o", str(out)],
            False,
        )
    # --- xdelta3 ----------------------------------------------------------------------------
    x = work / "x.xd3"
    c = timed(["xdelta3", "-e", "-f", "-s", str(base), str(new), str(x)])
    finish(
        "xdelta3 (default)", x, c, ["xdelta3", "-d", "-f", "-s", str(base), str(x), str(out)], True
    )
    # --- casync -----------------------------------------------------------------------------
    if shutil.which("casync") and not args.no_casync:
        rows.append(casync_row(base, new, work, expected, label))
    # --- bsdiff -----------------------------------------------------------------------------
    if shutil.which("bsdiff") and args.bsdiff_timeout > 0:
        b = work / "b.bsdiff"
        c = timed(["bsdiff", str(base), str(new), str(b)], timeout=args.bsdiff_timeout)
        if c.ok:
            finish("bsdiff", b, c, ["bspatch", str(base), str(out), str(b)], False)
        else:
            rows.append(Row("bsdiff", None, c, None, False, c.note))
            print(f"  {label} bsdiff: {c.note}", flush=True)
            b.unlink(missing_ok=True)
    # --- HDiffPatch -------------------------------------------------------------------------
    if args.hdiffpatch_python:
        h = work / "h.hdiff"
        prog = (
            "import sys,hdiffpatch as h; o=open(sys.argv[1],'rb').read(); "
            "n=open(sys.argv[2],'rb').read(); "
            "open(sys.argv[3],'wb').write(h.diff(o,n,h.COMPRESSION_ZSTD,validate=False))"
        )
        c = timed(
            [args.hdiffpatch_python, "-c", prog, str(base), str(new), str(h)],
            timeout=args.slow_timeout,
        )
        aprog = (
            "import sys,hdiffpatch as h; o=open(sys.argv[1],'rb').read(); "
            "open(sys.argv[3],'wb').write(h.apply(o,open(sys.argv[2],'rb').read()))"
        )
        finish(
            "HDiffPatch (PyPI hdiffpatch, zstd)",
            h,
            c,
            [args.hdiffpatch_python, "-c", aprog, str(base), str(h), str(out)],
            False,
        )
    return rows


def casync_row(base: Path, new: Path, work: Path, expected: str, label: str) -> Row:
    sa, sb = work / "a.castr", work / "b.castr"
    for s in (sa, sb):
        shutil.rmtree(s, ignore_errors=True)
    ia, ib = work / "a.caibx", work / "b.caibx"
    timed(["casync", "make", f"--store={sa}", str(ia), str(base)])
    c = timed(["casync", "make", f"--store={sb}", str(ib), str(new)])
    old = {p.name for p in sa.rglob("*.cacnk")}
    size = sum(p.stat().st_size for p in sb.rglob("*.cacnk") if p.name not in old)
    size += ib.stat().st_size
    out = work / "out.img"
    out.unlink(missing_ok=True)
    a = timed(
        hashed_apply(
            ["casync", "extract", f"--store={sb}", f"--seed={base}", str(ib), str(out)], out
        )
    )
    note = "; ".join(x for x in ("new chunks + index", check(out, expected), a.note) if x)
    print(
        f"  {label} casync: size={size} create={c.seconds:.1f} apply={a.seconds:.1f} {note}",
        flush=True,
    )
    for s in (sa, sb):
        shutil.rmtree(s, ignore_errors=True)
    for f in (ia, ib, out):
        f.unlink(missing_ok=True)
    return Row("casync (new chunks)", size, c, a, True, note)


def table(label: str, rows: list[Row]) -> str:
    ours = rows[0]
    anchors = [r for r in rows if not r.tool.startswith("otakit") and r.size]
    bounded = [r for r in anchors if r.bounded and "WRONG" not in r.note]
    smallest = min((r.size for r in anchors if r.size), default=None)
    smallest_b = min((r.size for r in bounded if r.size), default=None)
    pf3 = next((r for r in rows if r.tool.startswith("zstd -3 --long=31 --patch-from")), None)
    lines = [
        f"### {label}",
        "",
        "| tool | delta | create | apply (+hash) | create RSS | apply RSS | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        size = f"{r.size / 1e6:.2f} MB" if r.size else "—"
        cr = f"{r.create.seconds:.1f} s" if r.create and r.create.ok else "—"
        ap = f"{r.apply.seconds:.1f} s" if r.apply else "—"
        crm = f"{r.create.rss_mb:.0f} MB" if r.create and r.create.rss_mb else "—"
        apm = f"{r.apply.rss_mb:.0f} MB" if r.apply else "—"
        lines.append(f"| {r.tool} | {size} | {cr} | {ap} | {crm} | {apm} | {r.note} |")
    lines.append("")
    if ours.size and smallest_b:
        lines.append(
            f"- size / smallest bounded-memory anchor: **{ours.size / smallest_b:.3f}**"
            " (target ≤ 0.92)"
        )
    if ours.size and smallest:
        lines.append(f"- size / smallest anchor overall: **{ours.size / smallest:.3f}**")
    if pf3 and pf3.create and ours.create and pf3.apply and ours.apply:
        lines.append(
            f"- create time / `zstd -3 --patch-from`: "
            f"**{ours.create.seconds / pf3.create.seconds:.2f}** (target ≤ 1.0)"
        )
        lines.append(
            f"- apply time (incl. hash of result) / `zstd -d --patch-from` (incl. hash): "
            f"**{ours.apply.seconds / pf3.apply.seconds:.2f}** (target ≤ 1.5)"
        )
    if ours.apply:
        lines.append(f"- otakit apply peak RSS: **{ours.apply.rss_mb:.0f} MB** (target ≤ 128 MiB)")
    lines.append("")
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    zv = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    import zstandard

    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"python-zstandard {zstandard.__version__} (libzstd {zstandard.ZSTD_VERSION}), "
        f"{zv}"
    )


def ensure_corpus(corpus: Path) -> None:
    if (corpus / "v1.ext4").exists() and (corpus / "v2.ext4").exists():
        return
    print(f"building corpus in {corpus} with {MAKE_PAIR} (root + apt, a few minutes)", flush=True)
    subprocess.run(["bash", str(MAKE_PAIR), str(corpus)], check=True)


def doubled(corpus: Path, work: Path, form: str) -> tuple[Path, Path]:
    out = []
    for v in ("v1", "v2"):
        p = work / f"{v}x2.{form}"
        if not p.exists():
            with p.open("wb") as f:
                for _ in range(2):
                    with (corpus / f"{v}.{form}").open("rb") as src:
                        shutil.copyfileobj(src, f, 8 << 20)
        out.append(p)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--pairs", default="ext4,raw.sqfs,tar")
    ap.add_argument(
        "--patch-levels", default="3,19", help="zstd --patch-from levels (19 takes minutes)"
    )
    ap.add_argument("--double", action="store_true", help="also run ext4 at twice the size")
    ap.add_argument("--bsdiff-timeout", type=float, default=120.0)
    ap.add_argument("--slow-timeout", type=float, default=600.0)
    ap.add_argument("--no-casync", action="store_true")
    ap.add_argument(
        "--hdiffpatch-python",
        default=None,
        help="interpreter with PyPI hdiffpatch installed (optional anchor)",
    )
    ap.add_argument("--otakit-level9", action="store_true")
    ap.add_argument("--only-otakit", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results-latest.md")
    args = ap.parse_args()
    args.patch_levels = [int(x) for x in args.patch_levels.split(",") if x]
    ensure_corpus(args.corpus)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="otakit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = [
        f"Machine: {machine()}",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
    ]
    for form in args.pairs.split(","):
        label = f"{form} pair (v1.{form} → v2.{form})"
        print(f"== {label}", flush=True)
        rows = run_pair(args.corpus / f"v1.{form}", args.corpus / f"v2.{form}", work, args, form)
        parts.append(table(label, rows))
    if args.double:
        b2, n2 = doubled(args.corpus, work, "ext4")
        label = "ext4 at 2× size (each image concatenated with itself)"
        print(f"== {label}", flush=True)
        saved = (args.patch_levels, args.bsdiff_timeout, args.hdiffpatch_python)
        args.patch_levels, args.bsdiff_timeout, args.hdiffpatch_python = [3], 0, None
        rows = run_pair(b2, n2, work, args, "ext4x2")
        args.patch_levels, args.bsdiff_timeout, args.hdiffpatch_python = saved
        parts.append(table(label, rows))
        b2.unlink()
        n2.unlink()
    text = "\n".join(parts)
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
