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

Scenarios (``SimConfig.scenario``) add the fleet controls, each a real signed change to the
repository the devices read, on a simulated clock (devices check at each wave's opening; the
time is passed to the device code, nothing waits for hours):

* ``update``: 2.0 for the whole fleet at once (or in ``SimConfig.waves``);
* ``halt``: 2.0 in waves, and its image fails the health check on *every* device: the first
  wave's devices roll back, report, and ``otakit rollout gate`` (``repo.rollout.gate``) halts
  the release from those reports; no later device starts it;
* ``recall``: 2.0 in waves; once the first wave runs it, ``otakit rollout recall`` brings
  each of those devices back to the image in its other slot (no download), and no later
  device starts it.

A share of devices starts on an older version that no delta was published for, so the run
mixes delta and full downloads. The outcome per device is checked, not assumed: ``on_new``
is the new version booted and committed with the running slot hashing to its signed hash,
``rolled_back`` is the starting version booted and committed with the new one recorded as
failed, ``recalled`` is an older version again after a recall, ``not_started`` is an older
version with 2.0 never attempted (held back by waves, a halt or a recall; a device on 0.9
takes 1.0 meanwhile, the newest release it may start), and
everything else is ``on_neither`` (must be zero). The repository is signed with
throwaway demo keys made for the run.
"""

from __future__ import annotations

import json
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from repo.errors import LocalError, UsageError
from repo.fleet_reports import store_report
from repo.keys import KeyConfig
from repo.nginx import Served, nginx_serving, served_requests
from repo.repository import init as repo_init
from repo.rollout import Publisher, gate, recall
from repo.rollout_spec import parse_waves
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
from verifier.device_report import device_report
from verifier.effects import RealDisk
from verifier.errors import NothingToDoError, OtakitError, TransportError
from verifier.report import status, verify_installed
from verifier.rollout import RolloutPolicy
from verifier.state import DeviceConfig
from verifier.update import UpdateOptions, UpdateResult, update

PRODUCT = "sim-gateway"
HARDWARE = "sim-board"
OLD, NEW, OLDER = "1.0", "2.0", "0.9"
_ATTEMPTS = 12
_TRIES = 2
#: the gate of the ``halt`` scenario: more than this share of the devices that tried 2.0
#: failed on it
GATE_RATE = 0.5

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
    #: it started 2.0 (a slot written or resumed for it)
    attempted: bool = False
    #: a recall moved it (switch back, or an install of a good version)
    recalled: bool = False
    #: how: "switch" (the other slot's image, nothing downloaded) or "install"
    recall_kind: str = ""
    dev: Device | None = None


@dataclass(frozen=True)
class _Round:
    """All devices (of ``who``) run one cycle at ``at`` after the start, on the simulated
    clock; then the operator's ``action`` (if any) is signed into the repository."""

    at: timedelta
    who: str  # "online" or "all"
    action: str | None = None


@dataclass(frozen=True)
class SimRun:
    summary: FleetSummary
    outcomes: dict[str, int]
    devices_by_fault: dict[str, int]
    delta_downloads: int
    full_downloads: int
    metadata_bytes: int
    workdir: Path
    scenario: str = "update"
    #: what the scenario's operator action signed ("" for none), and what followed it
    action: str = ""
    #: targets bytes served after the action, by version ({"2.0": 0}: nobody fetched the
    #: halted or recalled release; a device from 0.9 may still take 1.0)
    bytes_after_action: dict[str, int] = field(default_factory=dict)
    #: how the recalled devices went back: "switch" (no download) or "install" -> devices
    recall_kinds: dict[str, int] = field(default_factory=dict)


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
    waves = config.waves or _SCENARIO_WAVES.get(config.scenario)
    policy = None if waves is None else parse_waves(waves, now.replace(microsecond=0))
    repo_dir, keyconf, images, sizes = _publish(config, workdir, now, waves, say)
    fleet = _assign(config, rng)
    rounds = _rounds(config, policy)
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
        setup = _DeviceSetup(
            workdir / "devices", repo_dir, images, url, proxy, config.seed, workdir / "reports"
        )
        setup.reports.mkdir(parents=True, exist_ok=True)
        action, action_at = "", None
        with ThreadPoolExecutor(config.workers, thread_name_prefix="device") as pool:
            list(pool.map(lambda d: _start_device(setup, d), fleet))
            for r in rounds:
                at = now + r.at
                who = [
                    d
                    for d in fleet
                    if d.dev is not None and (r.who == "all" or d.fault != "offline")
                ]
                list(pool.map(lambda d, at=at: _run_round(setup, d, config, at, mark), who))
                if r.action is not None:
                    action = _act(r.action, setup, keyconf, fleet, at, say)
                    action_at = time.time()
            list(pool.map(lambda d: _finish(d), fleet))
        wall = time.monotonic() - t0
    served = served_requests(nginx_dir)
    start_wall = time.time() - (time.monotonic() - t0)
    target_bytes = sum(r.body_bytes for r in served if r.path.startswith("/targets/"))
    metadata_bytes = sum(r.body_bytes for r in served if r.path.startswith("/metadata/"))
    outcomes = Counter(d.outcome for d in fleet)
    # what the fleet had to fetch at least: a delta for each device on 1.0 that started 2.0,
    # the full image for each on 0.9 (no delta from it was published)
    bound = sum(sizes["delta"] if d.base == OLD else sizes["full"] for d in fleet if d.attempted)
    after: Counter[str] = Counter()
    if action_at is not None:
        for req in served:
            if req.path.startswith("/targets/") and req.at > action_at:
                after[req.path.split("/")[3]] += req.body_bytes  # /targets/PRODUCT/VERSION/…
    summary = FleetSummary(
        devices=config.devices,
        new_version=NEW,
        old_version=OLD,
        on_new=outcomes["on_new"],
        rolled_back=outcomes["rolled_back"],
        on_neither=config.devices
        - sum(outcomes[k] for k in ("on_new", "rolled_back", "recalled", "not_started")),
        recalled=outcomes["recalled"],
        not_started=outcomes["not_started"],
        rollback_reasons=dict(Counter(d.reason for d in fleet if d.outcome == "rolled_back")),
        failures_by_kind={
            **({"connection-cut (injected resets)": cut.cut} if cut.cut else {}),
            **dict(sum((d.failures for d in fleet), Counter())),
        },
        bytes_served=target_bytes,
        bytes_all_full=sizes["full"] * sum(d.attempted for d in fleet),
        bytes_bound=bound,
        wall_s=wall,
        samples=_samples(events, served, start_wall, wall, config.sample_every),
    )
    say(
        f"[fleet] done in {wall:.1f} s: {summary.on_new} on {NEW}, {summary.rolled_back} rolled "
        f"back, {summary.recalled} recalled, {summary.not_started} never started {NEW}, "
        f"{summary.on_neither} on neither; {cut.cut} of {cut.connections} proxied "
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
        config.scenario,
        action,
        dict(after),
        dict(Counter(d.recall_kind for d in fleet if d.recalled)),
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


#: the waves a scenario releases 2.0 in, unless ``SimConfig.waves`` says otherwise
_SCENARIO_WAVES = {"halt": "10%@0,100%@1h", "recall": "25%@0,100%@1h"}


def _rounds(config: SimConfig, policy: RolloutPolicy | None) -> list[_Round]:
    """A cycle at each wave's opening (one at the start without waves), the scenario's
    action after the first, and a last one for everyone, the late devices included."""
    action = {"halt": "gate", "recall": "recall"}.get(config.scenario)
    opens = sorted({w.after for w in policy.waves}) if policy else [timedelta(0)]
    rounds = [
        _Round(at + timedelta(seconds=1), "online", action if i == 0 else None)
        for i, at in enumerate(opens)
    ]
    return [*rounds, _Round(opens[-1] + timedelta(minutes=10), "all")]


def _publish(
    config: SimConfig, workdir: Path, now: datetime, waves: str | None, say: Say
) -> tuple[Path, KeyConfig, dict[str, Path], dict[str, int]]:
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
            waves=waves if version == NEW else None,
            rollout_start=now.replace(microsecond=0) if waves and version == NEW else None,
        )  # fmt: skip
        for a in r.artifacts:
            if version == NEW:
                sizes[a.info.kind] = a.length
    say(
        f"[publisher] released {OLDER}, {OLD}, {NEW} ({config.image_size >> 20} MiB images); "
        f"{NEW}: full {sizes['full']} bytes, delta from {OLD} {sizes['delta']} bytes"
    )
    return repo_dir, keyconf, images, sizes


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
    seed: int
    reports: Path


def _guarded(d: _Device, work: Callable[[], None]) -> None:
    """Run one step of a device's story; never raises (a harness crash is an outcome)."""
    if d.outcome == "error":
        return
    try:
        work()
    except OtakitError as e:
        d.outcome, d.reason = "error", f"{e.kind()}: {e.message}"
    except Exception as e:
        d.outcome, d.reason = "error", f"harness: {type(e).__name__}: {e}"


def _start_device(setup: _DeviceSetup, d: _Device) -> None:
    def work() -> None:
        d.dev = _init(setup, d)

    _guarded(d, work)


def _run_round(
    setup: _DeviceSetup,
    d: _Device,
    config: SimConfig,
    now: datetime,
    mark: Callable[[_Device, str], None],
) -> None:
    """One check of the device at ``now``: update if it may, then boot, health check,
    commit; its report goes to the reports directory (what ``fleet collect`` keeps)."""

    def work() -> None:
        dev = d.dev
        assert dev is not None
        mark(d, "updating")
        result = _update(dev, d, config, now)
        if result is not None:
            if result.recall is not None or result.kind == "switch":
                d.recalled = True
                d.recall_kind = "switch" if result.kind == "switch" else "install"
            elif result.version == ImageVersion.parse(NEW):
                d.attempted = True
            _boot_and_check(dev, d, config)
        body = json.dumps(device_report(dev, now, device_id=f"sim-{d.index:05d}").data)
        store_report(setup.reports, body.encode())

    _guarded(d, work)
    mark(d, _label(d))


def _label(d: _Device) -> str:
    """What the versions chart shows for the device now: the version it booted."""
    if d.outcome == "error" or d.dev is None:
        return "failed"
    rec = d.dev.journal().slot(d.dev.boot.read().booted)
    return str(rec.version) if rec is not None else "failed"


def _finish(d: _Device) -> None:
    def work() -> None:
        assert d.dev is not None
        _judge(d.dev, d)

    _guarded(d, work)


def _act(
    action: str,
    setup: _DeviceSetup,
    keyconf: KeyConfig,
    fleet: list[_Device],
    now: datetime,
    say: Say,
) -> str:
    """The operator's signed change after the first wave (real publisher code)."""
    pub = Publisher(keyconf)
    at = max(now, datetime.now(UTC))  # never before the release, whatever the sim clock
    if action == "gate":
        g = gate(
            setup.repo_dir, PRODUCT, NEW, setup.reports, at, pub,
            max_failure_rate=GATE_RATE, min_reports=1,
        )  # fmt: skip
        say(f"[operator] otakit rollout gate: {g.text()}")
        return "halted by the gate" if g.tripped else "gate not tripped"
    if action == "recall":
        recall(setup.repo_dir, PRODUCT, NEW, "simulated recall after the first wave", at, pub)
        moved = sum(d.attempted for d in fleet)
        say(f"[operator] otakit rollout recall {PRODUCT} {NEW} ({moved} devices run it)")
        return "recalled"
    raise UsageError(f"scenario action: expected 'gate' or 'recall', found {action!r}")


def _init(setup: _DeviceSetup, d: _Device) -> Device:
    home = setup.root / f"{d.index:05d}"
    home.mkdir(parents=True)
    slot_a, slot_b = home / "slot-a.img", home / "slot-b.img"
    shutil.copyfile(setup.images[d.base], slot_a)
    with slot_b.open("wb") as f:
        f.truncate(slot_a.stat().st_size)
    url = setup.proxy_url if d.fault == "connection-cut" else setup.url
    config = DeviceConfig(url, PRODUCT, HARDWARE, slot_a, slot_b, "file", (), _TRIES)
    seeds = random.Random(setup.seed * 104729 + d.index)  # the fleet's places, from the seed
    return init_device(
        home / "state",
        RealDisk(),
        config,
        root=(setup.repo_dir / "metadata" / "1.root.json").read_bytes(),
        installed_version=ImageVersion.parse(d.base),
        token=seeds.randbytes,
    )


def _update(dev: Device, d: _Device, config: SimConfig, now: datetime) -> UpdateResult | None:
    """One check: the update it made (None: nothing to do: waves, halt, nothing newer)."""
    rng = random.Random(config.seed * 7919 + d.index)
    if (
        d.fault == "power-cut"
        and not d.failures["power-cut"]
        and _killed_update(dev.paths.root, rng)
    ):
        d.failures["power-cut"] += 1
    for _ in range(_ATTEMPTS):
        try:
            result = update(
                dev,
                now,
                options=UpdateOptions(ignore_backoff=True),
                rand=random.Random(d.index).random,
            )
        except NothingToDoError:
            # the killed process may have armed the slot already (it got that far): a trial
            # is set for the next boot (``in_trial`` would only be true after that boot)
            if dev.boot.read().trial is not None:
                d.kind = d.kind or "resumed"
                d.attempted = True
                _boot_and_check(dev, d, config)
            return None
        except TransportError:
            d.failures["update cycle failed: transport"] += 1
            continue
        if result.kind in ("full", "delta"):
            d.kind = result.kind
        elif result.kind != "switch":
            d.kind = "resumed"
        return result
    raise LocalError(f"device {d.index}: no update after {_ATTEMPTS} attempts")


def _killed_update(state: Path, rng: random.Random) -> bool:
    """Run ``otakit-device update`` as a process and SIGKILL it part-way; True if it died."""
    argv = [
        sys.executable, "-c", "import verifier.entry as e; e.main()",
        "--state", str(state), "update",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the device CLI starts in ~0.2 s and a simulated update takes well under a second: a
    # moment later than that finds the process gone and retries the cut on the next round
    time.sleep(rng.uniform(0.05, 0.8))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def _boot_and_check(dev: Device, d: _Device, config: SimConfig) -> None:
    """Reboot into the trial; commit when healthy, else reboot until the backend falls back.

    2.0 fails its health check on the devices with that fault, and on every device in the
    ``halt`` scenario (a bad release); an image a recall switched back to is healthy."""
    boot = dev.boot
    if not isinstance(boot, FileBootControl):
        raise LocalError("the simulator's devices use the file boot backend")
    st = boot.boot()
    rec = dev.journal().slot(st.booted)
    on_new = rec is not None and rec.version == ImageVersion.parse(NEW)
    bad = on_new and (d.fault == "health-check" or config.scenario == "halt")
    healthy = not bad and health_check(dev.config.slot_path(st.booted))
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
    elif running in (OLDER, OLD) and d.recalled:
        d.outcome = "recalled"
    elif running in (OLDER, OLD) and d.attempted and st.journal.last_failure is not None:
        # back where it was; a device from 0.9 may then have taken 1.0 (2.0 halted)
        d.outcome = "rolled_back"
        d.reason = st.journal.last_failure.reason.split(":")[0]
    elif running in (OLDER, OLD) and not d.attempted:
        # held back from 2.0 (waves, halt, recall); a device on 0.9 may have taken 1.0,
        # the newest release it was allowed to start
        d.outcome = "not_started"
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
