"""Delta benchmark (issues 3 and 14): otakit's encoder against the other tools, in one run.

    nice python bench/delta_bench.py --pair 1=/tmp/imagediff-corpus --pair 2=/work/corpus2 \\
        [--forms ext4,raw.sqfs,tar] [--tools otakit,otakit-max,...] [--otakit PATH] \\
        [--repeat 3] [--hdiffpatch-python PY] [--reuse OLD.json] [--out FILE.md]

For every pair and image form it prints one markdown table: delta size, size against
HDiffPatch, create wall / CPU time and peak RSS, apply wall time and peak RSS. Every tool runs
as its own child under ``/usr/bin/time`` (wall, user+sys CPU, peak RSS of the child and its
descendants), one at a time. Apply times include a ``sha256sum`` of the result for every tool
that does not check the result itself (the device re-reads the slot); ``otakit delta apply``
checks the base, every op and the whole result against the container's hashes. Every delta is
applied and the result compared with the new image's sha256 before its size is reported.

otakit default and ``zstd -3 --long=31 --patch-from`` are created ``--repeat`` times,
interleaved (otakit, zstd, otakit, zstd, ...); the time ratio is the median of the per-round
ratios, because this machine is shared and its wall times swing between runs.

``--otakit PATH`` runs the ``otakit`` executable of another worktree (e.g.
``/work/wt-delta2/.venv/bin/otakit``); its ``--max`` and ``--format`` rows run only if its
``delta create --help`` offers them. ``--reuse OLD.json`` fills the rows of tools not run now
from an earlier run's JSON (marked as such: their times are from another run).
HDiffPatch is the PyPI ``hdiffpatch`` binding in a separate interpreter (not a project
dependency); ``/tmp/hdp-bench/bin/python`` is used when present.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OTAKIT_DELTA = "import sys; from signer.delta_cmd import delta_app; delta_app(sys.argv[1:])"
DEFAULT_PAIRS = ("1=/tmp/imagediff-corpus", "2=/work/corpus2")
DEFAULT_HDP = Path("/tmp/hdp-bench/bin/python")
ALL_TOOLS = ("otakit", "otakit-max", "otakit-f1", "xdelta3", "zstd3", "zstd19", "hdiffpatch")
HDP_DIFF = (
    "import sys,hdiffpatch as h; o=open(sys.argv[1],'rb').read(); "
    "n=open(sys.argv[2],'rb').read(); "
    "open(sys.argv[3],'wb').write(h.diff(o,n,h.COMPRESSION_ZSTD,validate=False))"
)
HDP_APPLY = (
    "import sys,hdiffpatch as h; o=open(sys.argv[1],'rb').read(); "
    "open(sys.argv[3],'wb').write(h.apply(o,open(sys.argv[2],'rb').read()))"
)


def otakit_cmd(otakit: str | None) -> list[str]:
    """How to call ``otakit delta``: a given executable (another worktree's venv) or ours."""
    if otakit:
        return [otakit, "delta"]
    own = REPO / ".venv" / "bin" / "otakit"
    return [str(own), "delta"] if own.exists() else [sys.executable, "-c", OTAKIT_DELTA]


def offered_flags(base_cmd: list[str], env: dict[str, str]) -> set[str]:
    """Which of the round-2 options (``--max``, ``--format``) this encoder's help offers."""
    p = subprocess.run(
        [*base_cmd, "create", "--help"], capture_output=True, text=True, env=env, check=False
    )
    return {f for f in ("--max", "--format") if f in p.stdout}


def otakit_commit(otakit: str | None) -> str:
    """The commit of the worktree the measured encoder comes from (+ "dirty" if edited)."""
    tree = Path(otakit).resolve().parents[2] if otakit else REPO

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        branch = git("branch", "--show-current")
    except (OSError, subprocess.CalledProcessError):
        return f"{tree} (not a git worktree)"
    return f"{tree} branch {branch} at {head[:90]}" + (" (uncommitted changes)" if dirty else "")


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
    cpu: float
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
    create_runs: list[float] = field(default_factory=list)  # interleaved repeats (walls)
    reused: str = ""  # from another run's JSON (its times are not of this run)


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    create: Callable[[Path, Path, Path], list[str]]  # base, new, artifact
    apply: Callable[[Path, Path, Path], list[str]]  # base, artifact, out
    verifies: bool  # the apply checks the result's hash itself
    bounded: bool


def tools(otakit: list[str], flags: set[str], hdp: str | None) -> dict[str, Tool]:
    def ota(extra: list[str]) -> Callable[[Path, Path, Path], list[str]]:
        return lambda b, n, a: [*otakit, "create", str(b), str(n), str(a), "--json", *extra]

    def ota_apply(b: Path, a: Path, o: Path) -> list[str]:
        return [*otakit, "apply", str(b), str(a), str(o)]

    def srcwin(b: Path) -> str:  # xdelta3 source window: the whole base (capped at 2 GiB)
        return str(min(1 << 31, max(64 << 20, (b.stat().st_size + (1 << 20) - 1) >> 20 << 20)))

    def zc(level: int) -> Callable[[Path, Path, Path], list[str]]:
        return lambda b, n, a: [
            "zstd", "-q", "-f", f"-{level}", "--long=31", f"--patch-from={b}", str(n), "-o", str(a)
        ]  # fmt: skip

    def zd(b: Path, a: Path, o: Path) -> list[str]:
        return ["zstd", "-q", "-d", "-f", "--long=31", f"--patch-from={b}", str(a), "-o", str(o)]

    t = [
        Tool("otakit", "otakit default", ota([]), ota_apply, True, True),
        Tool("otakit-max", "otakit --max", ota(["--max"]), ota_apply, True, True),
        Tool("otakit-f1", "otakit --format 1", ota(["--format", "1"]), ota_apply, True, True),
        Tool(
            "xdelta3",
            "xdelta3 -9 -B (whole base)",
            lambda b, n, a: [
                "xdelta3",
                "-9",
                "-B",
                srcwin(b),
                "-e",
                "-f",
                "-s",
                str(b),
                str(n),
                str(a),
            ],
            lambda b, a, o: ["xdelta3", "-d", "-B", srcwin(b), "-f", "-s", str(b), str(a), str(o)],
            False,
            False,
        ),
        Tool("zstd3", "zstd -3 --long=31 --patch-from", zc(3), zd, False, False),
        Tool("zstd19", "zstd -19 --long=31 --patch-from", zc(19), zd, False, False),
    ]
    if hdp:
        t.append(
            Tool(
                "hdiffpatch",
                "HDiffPatch (PyPI hdiffpatch 2.6.0, zstd)",
                lambda b, n, a: [hdp, "-c", HDP_DIFF, str(b), str(n), str(a)],
                lambda b, a, o: [hdp, "-c", HDP_APPLY, str(b), str(a), str(o)],
                False,
                False,
            )
        )
    out = {x.key: x for x in t}
    if "--max" not in flags:
        out.pop("otakit-max")
    if "--format" not in flags:
        out.pop("otakit-f1")
    return out


def timed(
    cmd: list[str], *, timeout: float | None = None, env: dict[str, str] | None = None
) -> Run:
    """Run ``cmd`` under /usr/bin/time: wall seconds, user+sys CPU, peak RSS of the child."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, *cmd]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(full, capture_output=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return Run(time.perf_counter() - t0, 0.0, 0.0, False, f"killed after {timeout:.0f} s")
        wall = time.perf_counter() - t0
        fields = Path(tf.name).read_text().split()
        try:
            cpu = float(fields[-3]) + float(fields[-2])
            rss = float(fields[-1]) / 1024
        except (IndexError, ValueError):
            cpu, rss = 0.0, 0.0
        if p.returncode != 0:
            err = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return Run(wall, cpu, rss, False, f"exit {p.returncode}: {err[0][:120]}")
        return Run(wall, cpu, rss, True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def hashed_apply(cmd: list[str], result: Path) -> list[str]:
    """Apply, then hash the written result (the device re-reads the slot)."""
    script = f"{' '.join(_q(c) for c in cmd)} && sha256sum {_q(str(result))} > /dev/null"
    return ["bash", "-c", script]


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def check(result: Path, expected: str) -> str:
    if not result.exists():
        return "no output"
    return "" if sha256(result) == expected else "WRONG RESULT"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_form(
    base: Path,
    new: Path,
    work: Path,
    args: argparse.Namespace,
    label: str,
    available: dict[str, Tool],
    env: dict[str, str],
) -> list[Row]:
    expected = sha256(new)
    sha256(base)  # both images in the page cache: the first tool timed must not pay the reads
    out = work / "out.img"
    wanted = [k for k in args.tools if k in available]
    rows: dict[str, Row] = {}

    def create(tool: Tool) -> tuple[Path, Run]:
        art = work / f"{tool.key}.delta"
        art.unlink(missing_ok=True)
        r = timed(tool.create(base, new, art), timeout=args.timeout, env=env)
        log(
            f"  {label} {tool.key} create: {r.seconds:.1f} s cpu {r.cpu:.1f} s"
            f" {r.rss_mb:.0f} MB {r.note}"
        )
        return art, r

    def finish(tool: Tool, art: Path, c: Run, walls: list[float]) -> None:
        size = art.stat().st_size if c.ok and art.exists() else None
        app, notes = None, [c.note]
        if size is not None:
            out.unlink(missing_ok=True)
            cmd = tool.apply(base, art, out)
            app = timed(
                cmd if tool.verifies else hashed_apply(cmd, out), timeout=args.timeout, env=env
            )
            bad = check(out, expected)
            notes += [bad, app.note]
            if bad or not app.ok:
                size = None  # a delta that does not rebuild the new image has no size to report
            log(
                f"  {label} {tool.key} apply: {app.seconds:.1f} s {app.rss_mb:.0f} MB"
                f" size {size} {bad}"
            )
        rows[tool.key] = Row(
            tool.label, size, c, app, tool.bounded, "; ".join(n for n in notes if n), walls
        )
        art.unlink(missing_ok=True)
        out.unlink(missing_ok=True)

    # otakit default and zstd -3 interleaved, `repeat` rounds; the last delta of each is applied
    paired = [k for k in ("otakit", "zstd3") if k in wanted]
    walls: dict[str, list[float]] = {k: [] for k in paired}
    runs: dict[str, list[Run]] = {k: [] for k in paired}
    arts: dict[str, Path] = {}
    for _ in range(args.repeat if paired else 0):
        for k in paired:
            art, r = create(available[k])
            arts[k] = art  # one file per tool: the last round's delta is the one applied
            runs[k].append(r)
            if r.ok:
                walls[k].append(r.seconds)
    for k in paired:
        good = [r for r in runs[k] if r.ok]
        summary = (
            Run(median(walls[k]), median([r.cpu for r in good]), max(r.rss_mb for r in good), True)
            if good
            else runs[k][-1]
        )
        finish(available[k], arts[k], summary, walls[k])
    for k in wanted:
        if k not in paired:
            art, r = create(available[k])
            finish(available[k], art, r, [r.seconds] if r.ok else [])
    return [rows[k] for k in ALL_TOOLS if k in rows]


def row_key(row: Row) -> str:
    for k, prefix in (
        ("otakit-max", "otakit --max"),
        ("otakit-f1", "otakit --format 1"),
        ("otakit", "otakit default"),
        ("xdelta3", "xdelta3"),
        ("zstd3", "zstd -3"),
        ("zstd19", "zstd -19"),
        ("hdiffpatch", "HDiffPatch"),
    ):
        if row.tool.startswith(prefix):
            return k
    return row.tool


def by_key(rows: list[Row]) -> dict[str, Row]:
    return {row_key(r): r for r in rows}


def interleaved_ratio(rows: dict[str, Row]) -> tuple[float | None, list[float]]:
    """Median over the rounds of otakit default wall / zstd -3 wall (same round)."""
    o, z = rows.get("otakit"), rows.get("zstd3")
    if not o or not z or o.reused != z.reused:  # both from the same run, or no ratio
        return None, []
    per = [a / b for a, b in zip(o.create_runs, z.create_runs, strict=False) if b]
    return (median(per) if per else None), per


def table(label: str, rows: list[Row]) -> str:
    k = by_key(rows)
    hdp = k.get("hdiffpatch")
    hsize = hdp.size if hdp else None
    lines = [
        f"#### {label}",
        "",
        "| tool | delta | × HDiffPatch | create wall | create CPU | create RSS "
        "| apply wall (+hash) | apply RSS | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        size = f"{r.size / 1e6:.3f} MB" if r.size else "—"
        c, a = r.create, r.apply
        cr = f"{c.seconds:.1f} s" if c and c.ok else "—"
        if c and c.ok and len(r.create_runs) > 1:
            cr += f" (median of {len(r.create_runs)})"
        cc = f"{c.cpu:.1f} s" if c and c.ok else "—"
        crm = f"{c.rss_mb:.0f} MB" if c and c.rss_mb else "—"
        ap = f"{a.seconds:.1f} s" if a and a.ok else "—"
        apm = f"{a.rss_mb:.0f} MB" if a and a.rss_mb else "—"
        note = "; ".join(x for x in (r.note, f"reused from {r.reused}" if r.reused else "") if x)
        lines.append(
            f"| {r.tool} | {size} | {fmt_ratio(ratio(r.size, hsize), 3)} | {cr} | {cc} | {crm} "
            f"| {ap} | {apm} | {note} |"
        )
    lines.append("")
    rt, per = interleaved_ratio(k)
    o, z, mx = k.get("otakit"), k.get("zstd3"), k.get("otakit-max")
    if rt is not None:
        lines.append(
            f"- otakit default create wall / `zstd -3 --long=31 --patch-from`: **{fmt_ratio(rt)}**"
            f" (median of {len(per)} interleaved rounds: {', '.join(f'{x:.2f}' for x in per)};"
            " target ≤ 1.0×)"
        )
    if o and z and o.create and z.create and o.reused == z.reused:
        lines.append(f"- same, CPU time: {fmt_ratio(ratio(o.create.cpu, z.create.cpu))}")
    if mx and hdp and mx.create and hdp.create and mx.create.ok and hdp.create.ok:
        same = "" if mx.reused == hdp.reused else " (times from different runs)"
        lines.append(
            f"- otakit --max create wall / HDiffPatch: "
            f"**{fmt_ratio(ratio(mx.create.seconds, hdp.create.seconds))}**{same} (target ≤ 1.0×)"
        )
    if o and z and o.apply and z.apply and o.apply.ok and z.apply.ok and o.reused == z.reused:
        lines.append(
            "- otakit apply wall (verifies base, ops, result) / `zstd -d --patch-from` + sha256sum:"
            f" {fmt_ratio(ratio(o.apply.seconds, z.apply.seconds))}"
        )
    for key in ("otakit", "otakit-max", "otakit-f1"):
        ot = k.get(key)
        if ot and ot.apply and ot.apply.ok:
            lines.append(
                f"- {ot.tool}: apply peak RSS {ot.apply.rss_mb:.0f} MB (target ≤ 128 MiB), "
                f"create peak RSS {ot.create.rss_mb if ot.create else 0:.0f} MB"
            )
    lines.append("")
    return "\n".join(lines)


def headline(results: dict[str, list[Row]]) -> str:
    cols = ("otakit", "otakit-max", "otakit-f1", "xdelta3", "zstd3", "zstd19")
    lines = [
        "| pair · form | HDiffPatch | otakit default | --max | --format 1 | xdelta3 -9 | "
        "zstd -3 pf | zstd -19 pf | create / zstd -3 | otakit apply RSS | otakit create RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in results.items():
        k = by_key(rows)
        h = k.get("hdiffpatch")
        hs = h.size if h else None
        cells = [f"{hs / 1e6:.2f} MB" if hs else "—"]
        for c in cols:
            r = k.get(c)
            cells.append(fmt_ratio(ratio(r.size if r else None, hs), 3) if r and r.size else "—")
        rt, _ = interleaved_ratio(k)
        o = k.get("otakit")
        cells.append(fmt_ratio(rt))
        cells.append(f"{o.apply.rss_mb:.0f} MB" if o and o.apply else "—")
        cells.append(f"{o.create.rss_mb:.0f} MB" if o and o.create else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("(sizes as × HDiffPatch's; `pf` = `--long=31 --patch-from`)")
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
    xv = subprocess.run(["xdelta3", "-V"], capture_output=True, text=True)
    xdv = (xv.stdout + xv.stderr).split(",")[0].strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {zv.strip('* ')}, {xdv}; "
        f"load average at start {os.getloadavg()[0]:.2f}, nice {os.nice(0)}"
    )


def load_reuse(paths: list[Path]) -> tuple[list[str], dict[str, list[Row]], dict[str, str]]:
    """Rows and table titles of earlier runs' JSON; a later file's row of a tool wins."""
    names: list[str] = []
    out: dict[str, dict[str, Row]] = {}
    titles: dict[str, str] = {}
    for path in paths:
        doc = json.loads(path.read_text())
        src = f"{path.name} ({doc['run']})"
        names.append(src)
        titles.update(doc.get("titles", {}))
        for label, rows in doc["results"].items():
            for r in rows:
                c = Run(**r["create"]) if r["create"] else None
                a = Run(**r["apply"]) if r["apply"] else None
                row = Row(
                    r["tool"],
                    r["size"],
                    c,
                    a,
                    r["bounded"],
                    r["note"],
                    r["create_runs"],
                    r["reused"] or src,
                )
                out.setdefault(label, {})[row_key(row)] = row
    return names, {k: list(v.values()) for k, v in out.items()}, titles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--pair",
        action="append",
        default=None,
        help="NAME=DIR holding v1.FORM and v2.FORM (repeatable; default: "
        + ", ".join(DEFAULT_PAIRS)
        + ")",
    )
    ap.add_argument("--corpus", type=Path, default=None, help="same as --pair 1=DIR")
    ap.add_argument("--forms", default="ext4,raw.sqfs,tar")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help=f"subset of {','.join(ALL_TOOLS)}")
    ap.add_argument("--otakit", default=None, help="otakit executable (default: this checkout)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved otakit/zstd -3 rounds")
    ap.add_argument("--timeout", type=float, default=900.0, help="per child, seconds")
    ap.add_argument(
        "--hdiffpatch-python", default=str(DEFAULT_HDP) if DEFAULT_HDP.exists() else None
    )
    ap.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="JSON of an earlier run (repeatable): its rows fill tools and tables not run now",
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results-round2.md")
    args = ap.parse_args()
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = set(args.tools) - set(ALL_TOOLS)
    if unknown:
        ap.error(f"unknown tools {sorted(unknown)}: expected some of {','.join(ALL_TOOLS)}")
    pairs = [
        p.split("=", 1)
        for p in (args.pair or ([f"1={args.corpus}"] if args.corpus else DEFAULT_PAIRS))
    ]
    ocmd = otakit_cmd(args.otakit)
    env = dict(os.environ)
    if ocmd[0] == sys.executable:  # only the fallback imports this checkout by path; an
        env["PYTHONPATH"] = str(REPO)  # executable must import its own worktree's code
    flags = offered_flags(ocmd, env)
    available = tools(ocmd, flags, args.hdiffpatch_python)
    skipped = [t for t in args.tools if t not in available]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="otakit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    reuse_from, reused, titles = load_reuse(args.reuse)
    run_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = [
        f"Run: {run_at}. Machine: {machine()}.",
        "",
        f"otakit measured: {otakit_commit(args.otakit)}; `delta create` offers "
        f"{', '.join(sorted(flags)) or 'neither --max nor --format'}.",
    ]
    if skipped:
        head.append(
            f"Not run (not offered by this executable or no HDiffPatch): {', '.join(skipped)}."
        )
    if reuse_from:
        head.append(
            f"Rows of tools or tables not run now are reused from {', '.join(reuse_from)}"
            " (their times are from that run)."
        )
    head.append("")
    results: dict[str, list[Row]] = {}

    def order(rows: list[Row]) -> list[Row]:
        return sorted(
            rows, key=lambda r: ALL_TOOLS.index(k) if (k := row_key(r)) in ALL_TOOLS else 99
        )

    def write() -> None:
        forms = ["ext4", "raw.sqfs", "tar"]
        labels = sorted(
            {*results, *reused},
            key=lambda x: (forms.index(f) if (f := x.rsplit(" ", 1)[-1]) in forms else 99, x),
        )
        every = {x: results.get(x) or order(reused[x]) for x in labels}
        parts = [table(titles.get(x, x), every[x]) for x in labels]
        top = head if results else [f"Nothing run: rendered from {', '.join(reuse_from)}.", ""]
        text = "\n".join([*top, headline(every), "", *parts])
        args.out.write_text(text)
        doc = {
            "run": run_at,
            "otakit": otakit_commit(args.otakit),
            "titles": titles,
            "results": {k: [asdict(r) for r in v] for k, v in every.items()},
        }
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))

    for form in args.forms.split(","):
        for name, d in pairs:
            label = f"pair {name} · {form}"
            base, new = Path(d) / f"v1.{form}", Path(d) / f"v2.{form}"
            if not base.exists() or not new.exists():
                log(f"== {label}: missing {base} or {new}, skipped")
                continue
            log(f"== {label} ({base.stat().st_size >> 20} MiB → {new.stat().st_size >> 20} MiB)")
            rows = run_form(base, new, work, args, label, available, env)
            have = {row_key(r) for r in rows}
            for old in reused.get(label, []):
                if row_key(old) not in have:
                    rows.append(old)
            results[label] = order(rows)
            titles[label] = (
                f"{label}: {base.stat().st_size >> 20} MiB v1 → {new.stat().st_size >> 20} MiB v2"
            )
            write()
    write()
    print(args.out.read_text())
    log(f"written to {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
