"""``otakit demo``: the whole product, end to end, on one machine, in a temporary directory.

Publisher, repository server and device are the real code paths, over real HTTP on
127.0.0.1: demo keys → ``repo init`` → release v1.0, v2.0 → serve → a device with two
file-backed slots runs v1.0 → ``update`` (signed delta when one applies) → reboot into the
trial → health check → ``mark-good``. Then the failure path: v3.0 is published but fails its
health check; after the trial's tries run out the device is back on v2.0, remembers why, and
does not install v3.0 again.

The demo verifies its own outcome and raises ``DemoFailedError`` unless the device ends on
v2.0 with the slot that held v1.0 untouched by the v1 → v2 update, and v2.0 untouched by the
failed v3.0 trial.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from repo.errors import DemoFailedError
from repo.keys import KeyConfig
from repo.repository import init as repo_init
from repo.serve import serve_in_thread
from signer.delta.release import delta_builder
from signer.demo_image import DemoImageSpec, build_image
from signer.keygen import generate_demo_keys
from signer.release import ExtraBuilder, release
from verifier.artifact import ImageVersion
from verifier.bootctl.file import FileBootControl
from verifier.device import Device, init_device, mark_good
from verifier.effects import RealDisk
from verifier.errors import NothingToDoError
from verifier.report import status
from verifier.state import DeviceConfig
from verifier.update import UpdateOptions, update

PRODUCT = "demo-gateway"
HARDWARE = "demo-board"
BROKEN_MARKER = "etc/otakit-demo/health-check-fails"

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    update_kind: str
    update_artifact: str
    downloaded_bytes: int
    full_artifact_bytes: int
    final_version: str
    v1_untouched: bool
    rollback_reason: str


def health_check(slot: Path) -> bool:
    """What a health-check unit would do after boot: the new system looks sane.

    Here: the root filesystem (a tar image) reads back and does not carry the marker the
    demo's deliberately broken v3.0 release ships.
    """
    try:
        with tarfile.open(slot, mode="r:") as tar:
            names = set(tar.getnames())
    except (OSError, tarfile.TarError):
        return False
    return "etc/os-release" in names and BROKEN_MARKER not in names


def _broken(image: bytes) -> bytes:
    """v3.0: a copy of the v2.0 tree plus the marker that makes the health check fail."""
    size = len(image)
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(image), mode="r:") as src,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo(BROKEN_MARKER)
        data = b"this release crashes its main service at boot\n"
        info.size, info.mtime = len(data), 1_700_000_000
        dst.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw + bytes(size - len(raw))


def run_demo(workdir: Path | None = None, say: Say = print) -> DemoResult:
    """Run the demo in ``workdir`` (a new temporary directory when None)."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="otakit-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    disk = RealDisk()

    say(f"[publisher] working in {workdir}")
    keyconf = generate_demo_keys(workdir / "keys")
    say("[publisher] generated throwaway demo keys (root 2-of-2, targets, snapshot, timestamp)")
    repo_dir = workdir / "repository"
    repo_init(repo_dir, keyconf, now)
    say(f"[publisher] initialised TUF repository {repo_dir} (consistent snapshots)")

    images = workdir / "images"
    images.mkdir(exist_ok=True)
    v1 = build_image(DemoImageSpec(version=1))
    v2 = build_image(DemoImageSpec(version=2))
    (images / "v1.img").write_bytes(v1)
    (images / "v2.img").write_bytes(v2)
    (images / "v3.img").write_bytes(_broken(v2))
    say(f"[publisher] built demo root filesystem images ({len(v1) >> 20} MiB slot size)")

    builder = delta_builder(max_bases=3)
    for version, image in (("1.0", "v1.img"), ("2.0", "v2.img")):
        r = release(
            repo_dir, keyconf, PRODUCT, version, images / image, [HARDWARE], now,
            extra_builder=builder,
        )  # fmt: skip
        for a in r.artifacts:
            say(f"[publisher] released {a.target_path} ({a.length} bytes, {a.info.kind})")

    url, stop = serve_in_thread(repo_dir)
    say(f"[server] serving the repository at {url}")
    try:
        return _device_part(workdir, url, repo_dir, images, keyconf, builder, now, disk, say)
    finally:
        stop()
        say("[server] stopped")


def _device_part(
    workdir: Path,
    url: str,
    repo_dir: Path,
    images: Path,
    keyconf: KeyConfig,
    builder: ExtraBuilder,
    now: datetime,
    disk: RealDisk,
    say: Say,
) -> DemoResult:
    dev_dir = workdir / "device"
    dev_dir.mkdir(exist_ok=True)
    slot_a, slot_b = dev_dir / "slot-a.img", dev_dir / "slot-b.img"
    slot_a.write_bytes((images / "v1.img").read_bytes())
    slot_b.write_bytes(bytes(slot_a.stat().st_size))
    v1_hash = _sha256(slot_a)
    config = DeviceConfig(url, PRODUCT, HARDWARE, slot_a, slot_b, "file", (), 3)
    dev = init_device(
        dev_dir / "state", disk, config,
        root=(repo_dir / "metadata" / "1.root.json").read_bytes(),
        installed_version=ImageVersion.parse("1.0"),
    )  # fmt: skip
    say("[device] pinned root v1; slot a runs 1.0, slot b is empty")

    def stage_line(stage: str, done: int, total: int) -> None:
        if done == total:
            say(f"[device]   {stage}: {done} / {total} bytes")

    result = update(dev, now, options=UpdateOptions(), progress=stage_line)
    say(f"[device] {result.message()}")
    full_len = _stored_size(repo_dir, f"{PRODUCT}/2.0/full.img.zst")
    downloaded = _stored_size(repo_dir, result.artifact)
    if result.kind == "delta":
        say(
            f"[device] delta saved {full_len - downloaded} bytes "
            f"({downloaded} downloaded instead of the {full_len}-byte full image)"
        )
    v1_untouched = _sha256(slot_a) == v1_hash
    say(f"[device] slot a (running 1.0) untouched during the update: {v1_untouched}")

    boot = _file_boot(dev)
    st = boot.boot()
    say(f"[device] reboot → booted slot {st.booted} (trial, {st.tries_left} tries left)")
    if not health_check(config.slot_path(st.booted)):
        raise DemoFailedError("health check of 2.0 failed; the demo images are wrong")
    say(f"[device] health check passed → {mark_good(dev, now)}")

    # --- the failure path: a release that never comes up healthy -----------------------
    r = release(repo_dir, keyconf, PRODUCT, "3.0", images / "v3.img", [HARDWARE], now,
                extra_builder=builder)  # fmt: skip
    say(f"[publisher] released 3.0 ({', '.join(a.info.kind for a in r.artifacts)}) — it is broken")
    good_slot = st.booted
    good_hash = _sha256(config.slot_path(good_slot))
    result3 = update(dev, now, options=UpdateOptions(), progress=None)
    say(f"[device] {result3.message()}")
    for _ in range(config.tries + 1):
        st = boot.boot()
        healthy = health_check(config.slot_path(st.booted))
        rec = status(dev, now).journal.slot(st.booted)
        say(
            f"[device] reboot → slot {st.booted} ({rec.version if rec else '?'}), "
            f"health check {'passed' if healthy else 'FAILED, not marking good'}, "
            f"tries left {st.tries_left}"
        )
        if st.booted == good_slot and st.trial is None:
            break
    final = status(dev, now)
    failure = final.journal.last_failure
    reason = failure.reason if failure is not None else ""
    say(f"[device] rolled back automatically: {reason}")
    try:
        update(dev, now, options=UpdateOptions(), progress=None)
        retried = True
    except NothingToDoError as e:
        retried = False
        say(f"[device] next update: {e.message}")
    booted_rec = final.journal.slot(final.boot.booted)
    final_version = str(booted_rec.version) if booted_rec else "?"
    checks = {
        "device ends on 2.0": final_version == "2.0" and final.boot.booted == good_slot,
        "slot with 1.0 untouched by the 1.0 → 2.0 update": v1_untouched,
        "slot with 2.0 untouched by the failed 3.0 trial": _sha256(config.slot_path(good_slot))
        == good_hash,
        "failed 3.0 recorded and not retried": bool(reason) and not retried,
    }
    for what, ok in checks.items():
        say(f"[check] {'ok  ' if ok else 'FAIL'} {what}")
    if not all(checks.values()):
        bad = ", ".join(k for k, ok in checks.items() if not ok)
        raise DemoFailedError(f"demo end state is wrong: {bad}")
    return DemoResult(
        workdir=workdir,
        update_kind=result.kind,
        update_artifact=result.artifact,
        downloaded_bytes=downloaded,
        full_artifact_bytes=full_len,
        final_version=final_version,
        v1_untouched=v1_untouched,
        rollback_reason=reason,
    )


def _file_boot(dev: Device) -> FileBootControl:
    if not isinstance(dev.boot, FileBootControl):
        raise DemoFailedError(f"the demo device uses the file backend, found {dev.boot.name}")
    return dev.boot


def _stored_size(repo_dir: Path, target: str) -> int:
    """Size of a published target (stored hash-prefixed: ``<dir>/<sha256>.<name>``)."""
    directory, _, name = target.rpartition("/")
    found = list((repo_dir / "targets" / directory).glob(f"*.{name}"))
    if len(found) != 1:
        raise DemoFailedError(f"expected one stored file for target {target}, found {len(found)}")
    return found[0].stat().st_size


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
