"""``otakit fleet simulate``: a fleet of real devices updating from one nginx, with faults.

Evidence for the promise about fleets: every simulated device is the device's own code
(``verifier.update.update``, the file boot backend's trial and fallback, ``mark_good``), with
its own state directory and file-backed slots, against a real repository served by nginx on
loopback. Devices run as threads (a process start costs more than a small update on a
2-core machine); the power-cut devices run their first update as a real ``otakit-device``
process killed with SIGKILL part-way, then go on from what it left on disk.

Injected faults, each on its own share of devices chosen from the seed:

* ``connection-cut``: the device talks through a proxy that resets connections mid-response
  (the fetcher resumes some in place; the rest fail the cycle, which the device reruns);
* ``power-cut``: its first update is SIGKILLed at a random moment;
* ``health-check``: its new image fails the post-boot health check, so it never commits and
  the boot backend falls back once the trial's tries run out;
* ``offline``: it comes online only after the rest of the fleet is done.

A share of devices starts on an older version that no delta was published for, so the run
mixes delta and full downloads. The outcome per device is checked, not assumed: ``on_new``
is the new version booted and committed with the running slot hashing to its signed hash,
``rolled_back`` is the starting version booted and committed with the new one recorded as
failed, and everything else is ``on_neither`` (must be zero). The repository is signed with
throwaway demo keys made for the run.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from repo.errors import LocalError, UsageError
from repo.nginx import Served, nginx_serving, served_requests
from repo.repository import init as repo_init
from signer.delta.release import delta_builder
from signer.demo import health_check
from signer.demo_image import DemoImageSpec, build_image
from signer.fleet.config import SimConfig
from signer.fleet.proxy import cutting_proxy
from signer.fleet.results import FleetSummary, Sample
from signer.keygen import generate_demo_keys
from signer.release import release
from verifier.artifact import ImageVersion
from verifier.bootctl.file import FileBootControl
from verifier.device import Device, init_device, mark_good
from verifier.effects import RealDisk
from verifier.errors import NothingToDoError, OtakitError, TransportError
from verifier.report import status, verify_installed
from verifier.state import DeviceConfig
from verifier.update import UpdateOptions, update

PRODUCT = "sim-gateway"
HARDWARE = "sim-board"
OLD, NEW, OLDER = "1.0", "2.0", "0.9"
_ATTEMPTS = 12
_TRIES = 2

Say = Callable[[str], None]


@dataclass
class _Device:
    index: int
    base: str
    fault: str | None
    state: str = ""
    outcome: str = ""
    reason: str = ""
    kind: str = ""
    failures: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class SimRun:
    summary: FleetSummary
    outcomes: dict[str, int]
    devices_by_fault: dict[str, int]
    delta_downloads: int
    full_downloads: int
    metadata_bytes: int
    workdir: Path


def simulate(
    config: SimConfig, workdir: Path | None = None, *, nginx: str | None = None, say: Say = print
) -> SimRun:
    """Publish 0.9, 1.0, 2.0; run the fleet from its start versions to 2.0; check every device."""
    nginx = nginx or shutil.which("nginx") or _sbin("nginx")
    if nginx is None:
        raise LocalError(
            "the fleet simulator serves the repository with nginx, and none is installed",
            hint="install nginx (Debian: apt-get install nginx-light)",
        )
    workdir = workdir or Path(tempfile.mkdtemp(prefix="otakit-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    now = datetime.now(UTC)
    repo_dir, images, sizes = _publish(config, workdir, now, say)
    fleet = _assign(config, rng)
    say(
        f"[fleet] {config.devices} devices ({sum(d.base == OLDER for d in fleet)} on {OLDER}, "
        f"no delta for them), faults: "
        + ", ".join(
            f"{k} {n}" for k, n in sorted(Counter(d.fault for d in fleet if d.fault).items())
        )
    )
    events: list[tuple[float, int, str]] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def mark(dev: _Device, label: str) -> None:
        with lock:
            dev.state = label
            events.append((time.monotonic() - t0, dev.index, label))

    for d in fleet:
        events.append((0.0, d.index, d.base))
        d.state = d.base
    nginx_dir = workdir / "nginx"
    with (
        _quiet_device_logs(),
        nginx_serving(nginx, repo_dir, nginx_dir) as url,
        cutting_proxy(
            urlsplit(url).port or 80, config.cut_rate, random.Random(config.seed + 1)
        ) as (proxy, cut),
    ):
        setup = _DeviceSetup(workdir / "devices", repo_dir, images, url, proxy)
        online = [d for d in fleet if d.fault != "offline"]
        late = [d for d in fleet if d.fault == "offline"]
        with ThreadPoolExecutor(config.workers, thread_name_prefix="device") as pool:
            for batch in (online, late):
                list(pool.map(lambda d: _run_device(setup, d, config, mark), batch))
        wall = time.monotonic() - t0
    served = served_requests(nginx_dir)
    start_wall = time.time() - (time.monotonic() - t0)
    target_bytes = sum(r.body_bytes for r in served if r.path.startswith("/targets/"))
    metadata_bytes = sum(r.body_bytes for r in served if r.path.startswith("/metadata/"))
    outcomes = Counter(d.outcome for d in fleet)
    # what the fleet had to fetch at least: a delta for each device on 1.0, the full image
    # for each on 0.9 (no delta from it was published)
    bound = sum(sizes["delta"] if d.base == OLD else sizes["full"] for d in fleet)
    summary = FleetSummary(
        devices=config.devices,
        new_version=NEW,
        old_version=OLD,
        on_new=outcomes["on_new"],
        rolled_back=outcomes["rolled_back"],
        on_neither=config.devices - outcomes["on_new"] - outcomes["rolled_back"],
        rollback_reasons=dict(Counter(d.reason for d in fleet if d.outcome == "rolled_back")),
        failures_by_kind={
            **({"connection-cut (injected resets)": cut.cut} if cut.cut else {}),
            **dict(sum((d.failures for d in fleet), Counter())),
        },
        bytes_served=target_bytes,
        bytes_all_full=sizes["full"] * config.devices,
        bytes_bound=bound,
        wall_s=wall,
        samples=_samples(events, served, start_wall, wall, config.sample_every),
    )
    say(
        f"[fleet] done in {wall:.1f} s: {summary.on_new} on {NEW}, {summary.rolled_back} rolled "
        f"back, {summary.on_neither} on neither; {cut.cut} of {cut.connections} proxied "
        "connections cut"
    )
    return SimRun(
        summary,
        dict(outcomes),
        dict(Counter(d.fault or "none" for d in fleet)),
        sum(d.kind == "delta" for d in fleet),
        sum(d.kind == "full" for d in fleet),
        metadata_bytes,
        workdir,
    )


@contextmanager
def _quiet_device_logs() -> Iterator[None]:
    """Hundreds of devices would repeat the same warnings (demo keys, retries) on stderr;
    their outcomes are in the report instead."""
    loggers = [logging.getLogger(n) for n in ("otakit", "tuf", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _sbin(name: str) -> str | None:
    for d in ("/usr/sbin", "/sbin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    return None


def _publish(
    config: SimConfig, workdir: Path, now: datetime, say: Say
) -> tuple[Path, dict[str, Path], dict[str, int]]:
    keyconf = generate_demo_keys(workdir / "keys")
    repo_dir = workdir / "repository"
    repo_init(repo_dir, keyconf, now)
    images: dict[str, Path] = {}
    (workdir / "images").mkdir(exist_ok=True)
    for n, version in enumerate((OLDER, OLD, NEW)):
        spec = DemoImageSpec(version=n + 1, files=config.files, size=config.image_size)
        path = workdir / "images" / f"{version}.img"
        try:
            path.write_bytes(build_image(spec))
        except ValueError as e:
            raise UsageError(f"image size: {e}; use a larger image or fewer files") from e
        images[version] = path
    sizes: dict[str, int] = {}
    for version in (OLDER, OLD, NEW):
        # one delta, from the version just before: devices on 0.9 need the full image
        r = release(
            repo_dir, keyconf, PRODUCT, version, images[version], [HARDWARE], now,
            extra_builder=delta_builder(max_bases=1),
        )  # fmt: skip
        for a in r.artifacts:
            if version == NEW:
                sizes[a.info.kind] = a.length
    say(
        f"[publisher] released {OLDER}, {OLD}, {NEW} ({config.image_size >> 20} MiB images); "
        f"{NEW}: full {sizes['full']} bytes, delta from {OLD} {sizes['delta']} bytes"
    )
    return repo_dir, images, sizes


def _assign(config: SimConfig, rng: random.Random) -> list[_Device]:
    order = list(range(config.devices))
    rng.shuffle(order)
    faults: dict[int, str] = {}
    pos = 0
    for kind, share in config.faults:
        n = round(share * config.devices)
        for i in order[pos : pos + n]:
            faults[i] = kind
        pos += n
    older = set(rng.sample(range(config.devices), round(config.no_base * config.devices)))
    return [_Device(i, OLDER if i in older else OLD, faults.get(i)) for i in range(config.devices)]


@dataclass(frozen=True)
class _DeviceSetup:
    root: Path
    repo_dir: Path
    images: dict[str, Path]
    url: str
    proxy_url: str


def _run_device(
    setup: _DeviceSetup, d: _Device, config: SimConfig, mark: Callable[[_Device, str], None]
) -> None:
    """One device's whole story; never raises (a crash of the harness is an outcome too)."""
    try:
        dev = _init(setup, d)
        mark(d, "updating")
        _update(dev, d, config)
        _boot_and_check(dev, d)
        _judge(dev, d)
    except OtakitError as e:
        d.outcome, d.reason = "error", f"{e.kind()}: {e.message}"
    except Exception as e:
        d.outcome, d.reason = "error", f"harness: {type(e).__name__}: {e}"
    mark(d, {"on_new": NEW, "rolled_back": d.base}.get(d.outcome, "failed"))


def _init(setup: _DeviceSetup, d: _Device) -> Device:
    home = setup.root / f"{d.index:05d}"
    home.mkdir(parents=True)
    slot_a, slot_b = home / "slot-a.img", home / "slot-b.img"
    shutil.copyfile(setup.images[d.base], slot_a)
    with slot_b.open("wb") as f:
        f.truncate(slot_a.stat().st_size)
    url = setup.proxy_url if d.fault == "connection-cut" else setup.url
    config = DeviceConfig(url, PRODUCT, HARDWARE, slot_a, slot_b, "file", (), _TRIES)
    return init_device(
        home / "state",
        RealDisk(),
        config,
        root=(setup.repo_dir / "metadata" / "1.root.json").read_bytes(),
        installed_version=ImageVersion.parse(d.base),
    )


def _update(dev: Device, d: _Device, config: SimConfig) -> None:
    rng = random.Random(config.seed * 7919 + d.index)
    if d.fault == "power-cut" and _killed_update(dev.paths.root, rng):
        d.failures["power-cut"] += 1
    for _ in range(_ATTEMPTS):
        try:
            result = update(
                dev,
                datetime.now(UTC),
                options=UpdateOptions(ignore_backoff=True),
                rand=random.Random(d.index).random,
            )
        except NothingToDoError:
            # the killed process may have armed the slot already (it got that far): a trial
            # is set for the next boot (``in_trial`` would only be true after that boot)
            if dev.boot.read().trial is not None:
                d.kind = d.kind or "resumed"
                return
            raise
        except TransportError:
            d.failures["update cycle failed: transport"] += 1
            continue
        d.kind = result.kind if result.kind in ("full", "delta") else "resumed"
        return
    raise LocalError(f"device {d.index}: no update after {_ATTEMPTS} attempts")


def _killed_update(state: Path, rng: random.Random) -> bool:
    """Run ``otakit-device update`` as a process and SIGKILL it part-way; True if it died."""
    argv = [
        sys.executable, "-c", "import verifier.entry as e; e.main()",
        "--state", str(state), "update", "--now",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.3, 1.5))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def _boot_and_check(dev: Device, d: _Device) -> None:
    """Reboot into the trial; commit when healthy, else reboot until the backend falls back."""
    boot = dev.boot
    if not isinstance(boot, FileBootControl):
        raise LocalError("the simulator's devices use the file boot backend")
    st = boot.boot()
    healthy = d.fault != "health-check" and health_check(dev.config.slot_path(st.booted))
    if healthy:
        mark_good(dev, datetime.now(UTC))
        return
    d.failures["health-check"] += 1
    for _ in range(_TRIES + 1):
        if not st.in_trial:
            break
        st = boot.boot()


def _judge(dev: Device, d: _Device) -> None:
    st = status(dev, datetime.now(UTC))
    rec = st.journal.slot(st.boot.booted)
    running = str(rec.version) if rec is not None else "?"
    drift = verify_installed(dev)
    committed = not st.boot.in_trial
    if not committed or not drift.ok:
        d.outcome = "neither"
        d.reason = f"running {running}, in trial {st.boot.in_trial}, hash matches {drift.ok}"
    elif running == NEW:
        d.outcome = "on_new"
    elif running == d.base and st.journal.last_failure is not None:
        d.outcome = "rolled_back"
        d.reason = st.journal.last_failure.reason.split(":")[0]
    else:
        d.outcome, d.reason = "neither", f"running {running}"


def _samples(
    events: list[tuple[float, int, str]],
    served: list[Served],
    start_wall: float,
    wall: float,
    every: float,
) -> tuple[Sample, ...]:
    events = sorted(events)
    state: dict[int, str] = {}
    out = []
    i, j, served_bytes = 0, 0, 0
    targets = sorted(
        (r.at - start_wall, r.body_bytes) for r in served if r.path.startswith("/targets/")
    )
    steps = max(1, int(wall / every) + 1)
    for k in range(steps + 1):
        t = min(wall, k * every)
        while i < len(events) and events[i][0] <= t:
            state[events[i][1]] = events[i][2]
            i += 1
        while j < len(targets) and targets[j][0] <= t:
            served_bytes += targets[j][1]
            j += 1
        if k == steps:
            served_bytes += sum(b for _, b in targets[j:])
        out.append(Sample(t, dict(Counter(state.values())), served_bytes))
    return tuple(out)
