"""The device side's footprint against RAUC, measured in the same run (issue 13).

    python bench/device_bench.py [--corpus DIR] [--runs N] [--python PY] [--baseline-venv DIR]
                                  [--no-update]

Builds a device-only install (tools/install-device.sh: requirements/device.lock + the otakit
wheel, no pip), publishes the 600 MiB ext4 pair with the full install (this interpreter's
``otakit``), serves it with nginx and measures, printing one Markdown table:

* site-packages of the device install and of the full install (this interpreter's venv);
* ``otakit-device --help`` and ``status --json`` wall time (median of N interleaved runs) and
  peak RSS, next to ``rauc --help`` / ``rauc status`` (Debian's rauc, same run), and ratios;
* ``update`` peak RSS, staged and stream, of the 600 MiB pair (a delta from v1 to v2);
* the zipapp form (``python -m zipapp`` of the otakit packages) run by the device venv;
* ``-X importtime``: the top modules ``status --json`` imports.

``--baseline-venv`` adds the same rows for an older install (e.g. the typer CLI before issue
13), measured in the same interleaved loop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipapp
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repo.nginx import nginx_serving  # noqa: E402

PRODUCT, HW = "edge-gw", "bench"
KEYS = ROOT / "keys-example" / "keys.json"


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure(
    argv: Sequence[str | Path], env: dict[str, str] | None = None
) -> tuple[float, int, int, float]:
    """(wall seconds, peak RSS KiB, exit code, CPU seconds user + system) of one run under
    /usr/bin/time -v."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    code = re.search(r"Exit status: (\d+)", proc.stderr)
    cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr)
    exit_code = int(code[1]) if code else proc.returncode
    return wall, int(m[1]) if m else -1, exit_code, sum(map(float, cpu))


def device_install(target: Path, python: Path) -> Path:
    """A fresh device install of this tree (never a stale one from an earlier run), made
    with ``python``: give it the interpreter the device image ships (a distro Python; a
    pyenv build measured 15-25 % slower on the same code)."""
    shutil.rmtree(target, ignore_errors=True)
    env = {**os.environ, "PYTHON": str(python)}
    script = ROOT / "tools" / "install-device.sh"
    subprocess.run([str(script), str(target)], env=env, check=True)
    return target


def cli(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    module = "signer.cli" if name == "otakit" else "verifier.cli"
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def publish(work: Path, v1: Path, v2: Path) -> Path:
    repo = work / "repo"
    if (repo / "metadata" / "timestamp.json").exists():
        return repo
    cli("otakit", "repo", "init", repo, "--keys", KEYS)
    for version, image in (("1.0", v1), ("2.0", v2)):
        cli("otakit", "release", repo, image, "--keys", KEYS, "--product", PRODUCT,
            "--hardware", HW, "--version", version)  # fmt: skip
    return repo


def new_device(
    otakit_device: Path,
    work: Path,
    name: str,
    url: str,
    repo: Path,
    v1: Path,
    version: str = "1.0",
) -> Path:
    state, a, b = work / name, work / f"{name}-a.img", work / f"{name}-b.img"
    shutil.rmtree(state, ignore_errors=True)
    shutil.copyfile(v1, a)
    with b.open("wb") as f:
        f.truncate(a.stat().st_size)
    subprocess.run(
        [otakit_device, "--state", state, "init", "--repo-url", url,
         "--root", repo / "metadata" / "1.root.json", "--product", PRODUCT, "--hardware", HW,
         "--slot-a", a, "--slot-b", b, "--installed-version", version],
        check=True, capture_output=True,
    )  # fmt: skip
    return state


def interleaved(
    cases: dict[str, list[str | Path]], runs: int
) -> dict[str, tuple[float, int, float]]:
    """Median wall, max peak RSS and median CPU seconds of each case, the cases taking
    turns (one load for all). CPU time is the figure a loaded machine disturbs least."""
    walls: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    rss: dict[str, int] = dict.fromkeys(cases, 0)
    for _ in range(runs):
        for name, argv in cases.items():
            wall, kib, _code, cpu = measure(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
            rss[name] = max(rss[name], kib)
    return {k: (statistics.median(walls[k]), rss[k], statistics.median(cpus[k])) for k in cases}


def importtime(python: Path, args: Sequence[str | Path], top: int = 12) -> list[tuple[str, int]]:
    proc = subprocess.run(
        [python, "-X", "importtime", "-m", "verifier.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and not m[3].strip(" ")[1:]:  # top-level imports only (one space of indent)
            rows.append((m[4], int(m[2])))
    rows = [r for r in rows if len(r[0]) > 0]
    return sorted(rows, key=lambda r: -r[1])[:top]


def make_zipapp(work: Path) -> Path:
    """The otakit packages as one file, run by a Python that has the device dependencies."""
    src = work / "zipapp-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "verifier", src / "verifier", ignore=ignore)
    target = work / "otakit-device.pyz"
    zipapp.create_archive(src, target, interpreter="/usr/bin/env python3",
                          main="verifier.entry:main", compressed=True)  # fmt: skip
    return target


@contextmanager
def served(repo: Path, work: Path) -> Iterator[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with nginx_serving(nginx, repo, work / "nginx") as url:
        yield url


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/imagediff-corpus"))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "otakit-devbench")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--python", type=Path, default=Path("/usr/bin/python3"),
                    help="interpreter of the device install (default: the distro's)")  # fmt: skip
    ap.add_argument("--baseline-venv", type=Path, help="an older install to measure alongside")
    ap.add_argument("--no-update", action="store_true", help="skip the 600 MiB update runs")
    a = ap.parse_args()
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    v1, v2 = a.corpus / "v1.ext4", a.corpus / "v2.ext4"

    dev = device_install(work / "device-venv", a.python)
    dev_cli, dev_py = dev / "bin" / "otakit-device", dev / "bin" / "python"
    full = Path(sys.prefix)
    rauc = shutil.which("rauc")
    repo = publish(work, v1, v2)
    out: list[str] = []
    with served(repo, work) as url:
        # status as a fleet's monitoring sees it: v2 running, the metadata refreshed by a
        # cycle that found nothing to do (which leaves status its memo), and the same device
        # with the memo unusable (the first status after damage or a restore verifies)
        state = new_device(dev_cli, work, "dev", url, repo, v2, "2.0")
        cold = new_device(dev_cli, work, "dev-cold", url, repo, v2, "2.0")
        for st in (state, cold):
            subprocess.run([dev_cli, "--state", st, "update"], check=True, capture_output=True)
        memo = cold / "trusted-candidates.json"
        memo.unlink(missing_ok=True)
        memo.mkdir()  # neither readable as a memo nor replaceable: every run verifies
        cases: dict[str, list[str | Path]] = {
            "otakit-device --help": [dev_cli, "--help"],
            "otakit-device status --json": [dev_cli, "--state", state, "status", "--json"],
            "status --json, memo unusable": [dev_cli, "--state", cold, "status", "--json"],
        }
        if a.baseline_venv:
            base = a.baseline_venv / "bin" / "otakit-device"
            cases["baseline --help"] = [base, "--help"]
            cases["baseline status --json"] = [base, "--state", state, "status", "--json"]
        if rauc:
            cases["rauc --help"] = [rauc, "--help"]
            cases["rauc status"] = [rauc, "status"]  # no D-Bus service here: answers and fails
        pyz = make_zipapp(work)
        cases["zipapp --help"] = [dev_py, pyz, "--help"]
        cases["zipapp status --json"] = [dev_py, pyz, "--state", state, "status", "--json"]
        times = interleaved(cases, a.runs)

        out.append("| measure | value | target | met |\n|---|---|---|---|")
        dev_size = size_of(site_packages(dev))
        out.append(f"| device install site-packages | {dev_size / 1e6:.1f} MB | ≤ 50 MB | "
                   f"{'yes' if dev_size <= 50e6 else 'no'} |")  # fmt: skip
        full_size = size_of(site_packages(full))
        out.append(f"| full install site-packages (this venv: dev tools too) | "
                   f"{full_size / 1e6:.1f} MB | | |")  # fmt: skip
        out.append(f"| zipapp (verifier/ only, deps from the device venv) | "
                   f"{pyz.stat().st_size / 1e3:.0f} kB | | |")  # fmt: skip
        targets = {"otakit-device --help": (0.1, None), "otakit-device status --json": (0.15, 25)}
        for name, (wall, kib, cpu) in times.items():
            t_wall, t_rss = targets.get(name, (None, None))
            target = " and ".join(
                x for x in (t_wall and f"≤ {t_wall} s", t_rss and f"≤ {t_rss} MB") if x
            )
            met = ""
            if target:
                ok = (t_wall is None or wall <= t_wall) and (t_rss is None or kib / 1024 <= t_rss)
                met = "yes" if ok else "no"
            out.append(f"| {name}: wall (median of {a.runs}), CPU, peak RSS | "
                       f"{wall * 1000:.0f} ms, {cpu * 1000:.0f} ms, "
                       f"{kib / 1024:.1f} MiB | {target} | {met} |")  # fmt: skip
        if rauc:
            for ours, theirs in (("otakit-device --help", "rauc --help"),
                                 ("otakit-device status --json", "rauc status")):  # fmt: skip
                (w1, r1, c1), (w2, r2, c2) = times[ours], times[theirs]
                out.append(f"| ratio {ours} / {theirs} | wall ×{w1 / w2:.1f}, "
                           f"CPU ×{c1 / max(c2, 1e-3):.1f}, RSS ×{r1 / r2:.1f} | | |")  # fmt: skip
        if not a.no_update:
            for mode in ("staged", "stream"):
                st = new_device(dev_cli, work, f"upd-{mode}", url, repo, v1)
                wall, kib, code, _cpu = measure(
                    [dev_cli, "--state", st, "update", "--mode", mode, "--json"]
                )
                ok = code == 0 and kib / 1024 <= 64
                out.append(f"| update 600 MiB ext4 pair, {mode}: peak RSS (wall) | "
                           f"{kib / 1024:.1f} MiB ({wall:.1f} s, exit {code}) | ≤ 64 MiB | "
                           f"{'yes' if ok else 'no'} |")  # fmt: skip
                for p in (st.parent / f"upd-{mode}-a.img", st.parent / f"upd-{mode}-b.img"):
                    p.unlink(missing_ok=True)
        top = importtime(dev_py, ["--state", state, "status", "--json"])
    print("\n".join(out))
    print("\n`-X importtime` of `status --json` (device venv), top-level modules, cumulative:\n")
    print("| module | ms |\n|---|---|")
    for name, us in top:
        print(f"| {name} | {us / 1000:.1f} |")
    print(json.dumps({"device_site_packages": dev_size, "full_site_packages": full_size}))


if __name__ == "__main__":
    main()
