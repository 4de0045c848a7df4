"""One named test per TUF attack, against the real device CLI, nginx and a hostile proxy.

The attacks are those the TUF specification names (its "Security" section). Each test drives
``otakit-device update`` (a subprocess, as on a device) through ``hostile.HostileProxy`` in
front of nginx serving a repository made by the publisher CLI, and asserts two things:

* the clear error: the exit code of the right family (docs/CLI.md) and the JSON error object
  saying what was refused;
* nothing lost: the running slot's bytes, the boot state and the bytes of every file of the
  device's trusted metadata directory are what they were before the attack.

Forged metadata is signed with the repository's real keys (``keys-example``) wherever the
attack assumes a compromised key, and with keys the repository never granted where it does
not, so each test shows exactly which check stops it.

Devices come from two templates made once per module: one that trusts the 1.0 metadata
(``ERA_1``) and one that already trusts the 2.0 metadata but has not installed 2.0 yet
(``ERA_2``, so that an attack on the targets themselves legitimately changes no metadata).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from repo.keys import load_key_config, load_signers
from repo.nginx import nginx_serving
from signer.demo_image import DemoImageSpec, build_image
from tests.cli.helpers_cli import DEMO_KEYS, command, env
from tests.conftest import require
from tests.e2e.hostile import Drip, Endless, Fail, HostileProxy, Replace, hostile_proxy

pytestmark = pytest.mark.integration

PRODUCT = "edge-gw"
HW = "board-x"
ERA_1, ERA_2 = "trusts-1.0", "trusts-2.0"

#: A short deadline for the slow-retrieval tests (``update --download-deadline`` and
#: ``--cycle-deadline``, issue 9). Before those options exist nothing bounds a download: the
#: tests then run without them and hang until SLOW_LINK_KILL_AFTER, which is the hole itself.
SLOW_LINK_DEADLINE_S = 3
SLOW_LINK_KILL_AFTER = 9.0

#: A device clock set back (the clock-floor hole): the test launcher sets the process's
#: clock, as a dead RTC battery or a hostile NTP answer would.
CLOCK_SHIM = """\
import datetime as _dt, os as _os
_Real = _dt.datetime
_at = _Real.fromisoformat(_os.environ["OTAKIT_TEST_CLOCK"])
_t0 = _Real.now(_dt.timezone.utc)
class _Clock(_Real):
    @classmethod
    def now(cls, tz=None):
        moved = _at + (_Real.now(_dt.timezone.utc) - _t0)
        return cls.fromtimestamp(moved.timestamp(), tz)
    @classmethod
    def utcnow(cls):
        return cls.now(_dt.timezone.utc).replace(tzinfo=None)
_dt.datetime = _Clock
"""


# --- the repository ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """Releases 1.0 then 2.0 (2.0 with a delta), with the repository as it was after each."""

    dir: Path
    repo_v1: Path
    repo_v2: Path

    def meta(self, repo: Path, name: str) -> bytes:
        return (repo / "metadata" / name).read_bytes()

    def timestamp(self, repo: Path) -> Metadata[Timestamp]:
        return Metadata[Timestamp].from_bytes(self.meta(repo, "timestamp.json"))

    def snapshot(self, repo: Path) -> Metadata[Snapshot]:
        version = self.timestamp(repo).signed.snapshot_meta.version
        return Metadata[Snapshot].from_bytes(self.meta(repo, f"{version}.snapshot.json"))

    def targets_version(self, repo: Path) -> int:
        return self.snapshot(repo).signed.meta["targets.json"].version

    def artifacts(self, version: str) -> list[Path]:
        return sorted((self.repo_v2 / "targets" / PRODUCT / version).iterdir())


@functools.cache
def update_options() -> frozenset[str]:
    """The options ``otakit-device update`` has (some arrive with issue 9's fixes)."""
    proc = subprocess.run(
        command("otakit-device", "update", "--help"), capture_output=True, text=True, env=env()
    )
    return frozenset(re.findall(r"--[a-z][a-z-]+", proc.stdout))


def deadline_args() -> tuple[str, ...]:
    have = update_options()
    return tuple(
        arg
        for opt in ("--download-deadline", "--cycle-deadline")
        if opt in have
        for arg in (opt, str(SLOW_LINK_DEADLINE_S))
    )


def _cli(prog: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        command(prog, *map(str, args)), capture_output=True, text=True, env=env(), timeout=300
    )
    assert proc.returncode == 0, f"{prog} {args}: exit {proc.returncode}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    base = tmp_path_factory.mktemp("attacks")
    repo = base / "repo"
    _cli("otakit", "repo", "init", repo, "--keys", DEMO_KEYS)
    snapshots = []
    for v in (1, 2):
        img = base / f"v{v}.img"
        img.write_bytes(build_image(DemoImageSpec(version=v, files=40, size=2 << 20)))
        _cli(
            "otakit", "release", repo, img, "--keys", DEMO_KEYS, "--product", PRODUCT,
            "--version", f"{v}.0", "--hardware", HW, "--level", "3",
        )  # fmt: skip
        snapshots.append(base / f"repo-v{v}")
        shutil.copytree(repo, snapshots[-1])
    return Published(base, snapshots[0], snapshots[1])


# --- forging metadata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The repository's real signers per role, and keys it never granted (an attacker's)."""

    real: dict[str, list[Signer]]
    rogue: dict[str, Signer]


@pytest.fixture(scope="module")
def keys() -> Keys:
    conf = load_key_config(DEMO_KEYS)
    real = {r: load_signers(conf, r) for r in ("root", "targets", "snapshot", "timestamp")}
    rogue = {r: CryptoSigner.generate_ed25519() for r in real}
    return Keys(real, rogue)


def signed(md: Metadata[Any], signers: list[Signer]) -> bytes:
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    return md.to_bytes()


def soon(hours: float = 24) -> datetime:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(microsecond=0)


def forged_timestamp(
    pub: Published,
    signers: list[Signer],
    *,
    version: int | None = None,
    snapshot: MetaFile | None = None,
    expires: datetime | None = None,
) -> bytes:
    """The current timestamp with the given changes, re-signed by ``signers``."""
    md = pub.timestamp(pub.repo_v2)
    md.signed.version = version if version is not None else md.signed.version + 1
    if snapshot is not None:
        md.signed.snapshot_meta = snapshot
    md.signed.expires = expires or soon()
    return signed(md, signers)


def rogue_repository(pub: Published, keys: Keys, root_signers: list[Signer]) -> dict[str, bytes]:
    """A whole repository an attacker signs with keys of their own, reached through a root 2
    signed by ``root_signers``: path -> bytes to serve."""
    root = Metadata[Root].from_bytes(pub.meta(pub.repo_v2, "1.root.json"))
    root.signed.version = 2
    root.signed.expires = soon(24 * 30)
    for role in ("root", "targets", "snapshot", "timestamp"):
        for keyid in list(root.signed.roles[role].keyids):
            root.signed.revoke_key(keyid, role)
        root.signed.add_key(keys.rogue[role].public_key, role)
        root.signed.roles[role].threshold = 1
    targets = Metadata[Targets].from_bytes(
        pub.meta(pub.repo_v2, f"{pub.targets_version(pub.repo_v2)}.targets.json")
    )
    targets.signed.version += 1
    targets.signed.expires = soon()
    t_bytes = signed(targets, [keys.rogue["targets"]])
    snap = pub.snapshot(pub.repo_v2)
    snap.signed.version += 1
    snap.signed.expires = soon()
    snap.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    s_bytes = signed(snap, [keys.rogue["snapshot"]])
    ts = forged_timestamp(pub, [keys.rogue["timestamp"]], snapshot=MetaFile(snap.signed.version))
    return {
        "/metadata/2.root.json": signed(root, root_signers),
        "/metadata/timestamp.json": ts,
        f"/metadata/{snap.signed.version}.snapshot.json": s_bytes,
        f"/metadata/{targets.signed.version}.targets.json": t_bytes,
    }


# --- the network and the devices ------------------------------------------------------------


@dataclass
class Net:
    proxy: HostileProxy
    serving: Path  # a symlink nginx follows: the repository currently published

    def publish(self, repo: Path) -> None:
        tmp = self.serving.with_name("serving.new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(repo)
        tmp.replace(self.serving)

    def serve(self, files: dict[str, bytes]) -> None:
        for path, body in files.items():
            self.proxy.set(path, Replace(body))


@pytest.fixture(scope="module")
def net(published: Published) -> Iterator[Net]:
    www = published.dir / "www"
    www.mkdir()
    serving = www / "serving"
    serving.symlink_to(published.repo_v1)
    with (
        nginx_serving(require("nginx"), www, published.dir / "nginx") as url,
        hostile_proxy(url + "/serving") as proxy,
    ):
        yield Net(proxy, serving)


@dataclass(frozen=True)
class Device:
    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def slot_a(self) -> Path:
        return self.dir / "slot-a.img"

    def update(
        self,
        *args: str,
        extra_env: dict[str, str] | None = None,
        launcher: str = "",
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        argv = command("otakit-device", "--state", str(self.state), "update", "--json", *args)
        if launcher:
            argv[2] = launcher + argv[2]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**env(), **(extra_env or {})},
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def observed(self) -> dict[str, Any]:
        """What an attack must not change: running slot, boot state, trusted metadata."""
        meta = self.state / "metadata"
        return {
            "slot a": _sha(self.slot_a),
            "boot state": (self.state / "boot.json").read_bytes(),
            "trusted metadata": {
                str(p.relative_to(meta)): p.read_bytes()
                for p in sorted(meta.rglob("*"))
                if p.is_file()
            },
        }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def templates(published: Published, net: Net) -> dict[str, Path]:
    """Device directories to copy from, made once: see the module docstring."""
    dev = Device(published.dir / "device")  # tests copy back to this same absolute path
    dev.dir.mkdir()
    shutil.copyfile(published.dir / "v1.img", dev.slot_a)
    (dev.dir / "slot-b.img").write_bytes(bytes(dev.slot_a.stat().st_size))
    _cli(
        "otakit-device", "--state", dev.state, "init", "--repo-url", net.proxy.url,
        "--root", published.repo_v1 / "metadata" / "1.root.json", "--product", PRODUCT,
        "--hardware", HW, "--slot-a", dev.slot_a, "--slot-b", dev.dir / "slot-b.img",
        "--installed-version", "1.0",
    )  # fmt: skip
    out: dict[str, Path] = {}
    proc = dev.update()
    assert proc.returncode == 0 and "nothing-to-do" in proc.stdout, proc.stderr
    out[ERA_1] = published.dir / "tpl-1"
    shutil.copytree(dev.dir, out[ERA_1], symlinks=True)

    # ERA_2: what a successful update leaves in the state directory (the 2.0 metadata, any
    # other trust the device keeps), with the slots, boot state and journal of ERA_1 put
    # back: a device that trusts 2.0 and has no failed cycle to back off from.
    net.publish(published.repo_v2)
    proc = dev.update()
    assert proc.returncode == 0 and '"done"' in proc.stdout, proc.stderr
    era_1 = out[ERA_1]
    for name in ("slot-b.img", "state/journal.json", "state/boot.json"):
        shutil.copyfile(era_1 / name, dev.dir / name)
    shutil.rmtree(dev.state / "staging", ignore_errors=True)
    if (era_1 / "state" / "staging").exists():
        shutil.copytree(era_1 / "state" / "staging", dev.state / "staging")
    out[ERA_2] = published.dir / "tpl-2"
    shutil.copytree(dev.dir, out[ERA_2], symlinks=True)
    return out


@pytest.fixture
def device(
    templates: dict[str, Path], net: Net, published: Published
) -> Iterator[Callable[[str], Device]]:
    """``device(ERA_x)``: a fresh copy of a template; the repository publishes 2.0."""
    target = published.dir / "device"

    def make(era: str) -> Device:
        shutil.rmtree(target)
        shutil.copytree(templates[era], target, symlinks=True)
        return Device(target)

    net.publish(published.repo_v2)
    net.proxy.clear()
    yield make
    net.proxy.clear()


# --- assertions ---------------------------------------------------------------------------------


def refused(
    proc: subprocess.CompletedProcess[str], family: str, kinds: set[str], says: str
) -> dict[str, Any]:
    """The update failed with the JSON error object of ``family``, one of ``kinds``, whose
    message contains ``says``."""
    assert proc.returncode != 0, f"the attack was not refused:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and "error" in lines[-1], proc.stdout + proc.stderr
    error: dict[str, Any] = lines[-1]["error"]
    assert (error["family"], error["code"]) == (family, proc.returncode), json.dumps(error)
    assert error["kind"] in kinds, json.dumps(error)
    assert says in error["message"], json.dumps(error)
    return error


def installs_genuine_2_0(dev: Device, net: Net) -> None:
    """Nothing lost: with the attacker gone, the same device installs the real 2.0."""
    net.proxy.clear()
    # the attack made a cycle fail; with issue 9's backoff the next timer run would wait
    proc = dev.update(*(("--now",) if "--now" in update_options() else ()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    assert (done["event"], done["version"]) == ("done", "2.0"), done


SECURITY = "security"
METADATA_KINDS = {
    "metadata",
    "metadata-signature",
    "invalid-metadata",
    "metadata-expired",
    "metadata-rollback",
}


# --- the attacks (TUF specification, "Security") --------------------------------------------------


def test_arbitrary_installation(
    device: Callable[[str], Device], net: Net, published: Published
) -> None:
    """A mirror serves bytes of its own, of the signed lengths, under the 2.0 artifact names."""
    dev = device(ERA_2)
    for path in published.artifacts("2.0"):
        name = path.relative_to(published.repo_v2)
        net.proxy.set(f"/{name}", Replace(os.urandom(path.stat().st_size)))
    before = dev.observed()
    proc = dev.update()
    refused(proc, SECURITY, {"target-verification"}, "as signed")
    assert dev.observed() == before


@pytest.mark.parametrize("where", ["timestamp.json", "target"])
def test_endless_data(device: Callable[[str], Device], net: Net, where: str) -> None:
    """An answer that never ends: metadata bounded by its maximum length, a target by its
    signed length."""
    dev = device(ERA_2)
    if where == "target":
        net.proxy.set("/targets/*", Endless())
        kinds, says = {"target-verification"}, "signed"
    else:
        net.proxy.set("/metadata/timestamp.json", Endless())
        kinds, says = METADATA_KINDS, "maximum allowed length"
    before = dev.observed()
    proc = dev.update(timeout=60)
    refused(proc, SECURITY, kinds, says)
    assert dev.observed() == before


def test_extraneous_dependencies(
    device: Callable[[str], Device], net: Net, published: Published, keys: Keys
) -> None:
    """With the online keys (snapshot, timestamp), an attacker lists one more target (a
    'dependency' the device would fetch) in targets it re-signs with a key root never
    granted to targets: refused before any target is fetched."""
    dev = device(ERA_2)
    targets = Metadata[Targets].from_bytes(
        published.meta(
            published.repo_v2, f"{published.targets_version(published.repo_v2)}.targets.json"
        )
    )
    real = targets.signed.targets[next(iter(targets.signed.targets))]
    extra = type(real).from_dict(real.to_dict(), "edge-gw/2.0/extra-dependency.img.zst")
    targets.signed.targets[extra.path] = extra
    targets.signed.version += 1
    t_bytes = signed(targets, keys.real["snapshot"])  # a real key, but not a targets key
    snap = published.snapshot(published.repo_v2)
    snap.signed.version += 1
    snap.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    s_bytes = signed(snap, keys.real["snapshot"])
    ts = forged_timestamp(published, keys.real["timestamp"], snapshot=MetaFile(snap.signed.version))
    net.serve({
        "/metadata/timestamp.json": ts,
        f"/metadata/{snap.signed.version}.snapshot.json": s_bytes,
        f"/metadata/{targets.signed.version}.targets.json": t_bytes,
    })  # fmt: skip
    before = dev.observed()
    proc = dev.update()
    refused(proc, SECURITY, METADATA_KINDS, "targets was signed by 0/1")
    assert dev.observed() == before
    assert not [p for p in net.proxy.requests if p.startswith("/targets/")], net.proxy.requests


def test_fast_forward(
    device: Callable[[str], Device], net: Net, published: Published, keys: Keys
) -> None:
    """With the timestamp key, an attacker pushes the versions far ahead (timestamp and the
    snapshot it names at 1,000,000) so that every genuine version later looks like a
    rollback. The snapshot is not signed by the snapshot key: the refresh fails, no part of
    the fast-forwarded set is kept, and the genuine next versions are still accepted."""
    dev = device(ERA_2)
    far = 1_000_000
    snap = published.snapshot(published.repo_v2)
    snap.signed.version = far
    net.serve({
        "/metadata/timestamp.json": forged_timestamp(
            published, keys.real["timestamp"], version=far, snapshot=MetaFile(far)
        ),
        f"/metadata/{far}.snapshot.json": signed(snap, keys.real["timestamp"]),
    })  # fmt: skip
    before = dev.observed()
    proc = dev.update()
    refused(proc, SECURITY, METADATA_KINDS, "snapshot was signed by 0/1")
    assert dev.observed() == before
    installs_genuine_2_0(dev, net)


@pytest.mark.parametrize(
    "clock",
    [
        "real",
        "set-back",
    ],
)
def test_indefinite_freeze(
    device: Callable[[str], Device], net: Net, published: Published, keys: Keys, clock: str
) -> None:
    """The attacker replays a genuine timestamp that has expired (frozen: the device never
    hears of newer releases). Refused on a correct clock; a clock set back to 2020 must not
    revive it: the device has seen later times than its expiry."""
    dev = device(ERA_2)
    current = published.timestamp(published.repo_v2).signed.snapshot_meta
    frozen = forged_timestamp(
        published,
        keys.real["timestamp"],
        snapshot=current,
        expires=(datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0),
    )
    net.serve({"/metadata/timestamp.json": frozen})
    before = dev.observed()
    if clock == "real":
        proc = dev.update()
    else:
        proc = dev.update(
            launcher=CLOCK_SHIM, extra_env={"OTAKIT_TEST_CLOCK": "2020-01-01T00:00:00+00:00"}
        )
    refused(proc, SECURITY, METADATA_KINDS, "expired")
    assert dev.observed() == before


@pytest.mark.parametrize("mirror_root", [True, False], ids=["with-its-own-root", "under-our-root"])
def test_malicious_mirrors(
    device: Callable[[str], Device],
    net: Net,
    published: Published,
    keys: Keys,
    mirror_root: bool,
) -> None:
    """A mirror serves a complete repository of its own: timestamp, snapshot and targets
    signed by its keys, reached through a root 2 naming them (or under the device's root).
    The pinned root's keys never granted those keys: refused before any target is fetched,
    and the device still updates from an honest mirror afterwards."""
    dev = device(ERA_1)
    files = rogue_repository(published, keys, [keys.rogue["root"]])
    if not mirror_root:
        del files["/metadata/2.root.json"]
    net.serve(files)
    before = dev.observed()
    proc = dev.update()
    says = "root was signed by 0/2" if mirror_root else "timestamp was signed by 0/1"
    refused(proc, SECURITY, METADATA_KINDS, says)
    assert dev.observed() == before
    assert not [p for p in net.proxy.requests if p.startswith("/targets/")]
    if mirror_root:
        installs_genuine_2_0(dev, net)


@pytest.mark.parametrize("role", ["targets", "snapshot"])
def test_mix_and_match(
    device: Callable[[str], Device], net: Net, published: Published, role: str
) -> None:
    """The current metadata with one file from an older release served under the current
    name (each file genuinely signed, the set never published together)."""
    dev = device(ERA_1)
    v1, v2 = published.repo_v1, published.repo_v2
    if role == "targets":
        old, new = published.targets_version(v1), published.targets_version(v2)
    else:
        old = published.timestamp(v1).signed.snapshot_meta.version
        new = published.timestamp(v2).signed.snapshot_meta.version
    assert old < new
    net.serve({f"/metadata/{new}.{role}.json": published.meta(v1, f"{old}.{role}.json")})
    before = dev.observed()
    proc = dev.update()
    # the file differs from the length and hashes its referrer signed (python-tuf's
    # LengthOrHashMismatchError, mapped to the download kind)
    error = refused(proc, SECURITY, {*METADATA_KINDS, "target-verification"}, "length")
    # regression (issue 9's note): the message names the file that differs
    assert f"{new}.{role}.json from the repository" in error["message"], error
    assert dev.observed() == before


@pytest.mark.parametrize("what", ["timestamp", "snapshot"])
def test_rollback(
    device: Callable[[str], Device], net: Net, published: Published, keys: Keys, what: str
) -> None:
    """Older metadata than the device has trusted: the 1.0 timestamp replayed, or (with the
    timestamp key) a new timestamp naming the 1.0 snapshot."""
    dev = device(ERA_2)
    if what == "timestamp":
        body = published.meta(published.repo_v1, "timestamp.json")
    else:
        old = published.timestamp(published.repo_v1).signed.snapshot_meta
        body = forged_timestamp(published, keys.real["timestamp"], snapshot=old)
    net.serve({"/metadata/timestamp.json": body})
    before = dev.observed()
    proc = dev.update()
    refused(proc, SECURITY, METADATA_KINDS, f"{what} version")
    assert dev.observed() == before


@pytest.mark.parametrize("where", ["/metadata/timestamp.json", "/targets/*"])
def test_slow_retrieval(device: Callable[[str], Device], net: Net, where: str) -> None:
    """A server that drips one byte every half second: each gap is far below the socket
    timeout, so only an overall deadline ends the download. The device must give up with a
    transport error (retry later) within its deadline, changing nothing."""
    dev = device(ERA_2)
    net.proxy.set(where, Drip(interval=0.5, chunk=1))
    before = dev.observed()
    try:
        proc = dev.update(*deadline_args(), timeout=SLOW_LINK_KILL_AFTER)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"update still running {SLOW_LINK_KILL_AFTER:g} s into a drip on {where} "
            f"(deadline {SLOW_LINK_DEADLINE_S} s): nothing bounds a slow download"
        )
    refused(proc, "transport", {"transport"}, "")
    assert dev.observed() == before


def test_key_compromise_below_threshold(
    device: Callable[[str], Device], net: Net, published: Published, keys: Keys
) -> None:
    """The attacker holds one of the two root keys (threshold 2): a root 2 naming their keys,
    signed by that real key and their own, is one signature short of root 1's threshold."""
    dev = device(ERA_1)
    compromised = keys.real["root"][0]
    net.serve(rogue_repository(published, keys, [compromised, keys.rogue["root"]]))
    before = dev.observed()
    proc = dev.update()
    refused(proc, SECURITY, METADATA_KINDS, "root was signed by 1/2")
    assert dev.observed() == before
    assert not [p for p in net.proxy.requests if p.startswith("/targets/")]


def test_wrong_software_installation(
    device: Callable[[str], Device], net: Net, published: Published
) -> None:
    """Genuine, signed software, but not what was asked for: the 1.0 full image served for
    every 2.0 artifact."""
    dev = device(ERA_2)
    (v1_full,) = [p for p in published.artifacts("1.0") if p.name.endswith(".img.zst")]
    net.proxy.set("/targets/edge-gw/2.0/*", Replace(v1_full.read_bytes()))
    before = dev.observed()
    proc = dev.update()
    refused(proc, SECURITY, {"target-verification"}, "as signed")
    assert dev.observed() == before


def test_the_hostile_proxy_does_what_each_rule_says(net: Net, published: Published) -> None:
    """The attacker's tool itself: each rule changes the answer the way its name says."""
    import http.client

    from tests.e2e.hostile import Truncate, WrongLength

    net.publish(published.repo_v2)
    real = published.meta(published.repo_v2, "timestamp.json")
    path = "/metadata/timestamp.json"
    port = int(net.proxy.url.rsplit(":", 1)[1])

    def get() -> tuple[int, str | None, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            try:
                body = resp.read()
            except http.client.IncompleteRead as e:
                body = e.partial
            return resp.status, resp.getheader("Content-Length"), body
        finally:
            conn.close()

    try:
        assert get() == (200, str(len(real)), real)
        for rule, expected in [
            (Replace(b"forged"), (200, "6", b"forged")),
            (Fail(503), (503, None, None)),
            (Truncate(10), (200, str(len(real)), real[:10])),
            (WrongLength(5), (200, "5", real[:5])),
        ]:
            net.proxy.clear()
            net.proxy.set(path, rule)
            status, length, body = get()
            assert status == expected[0], rule
            if expected[1] is not None:
                assert (length, body) == expected[1:], rule
        net.proxy.clear()
        net.proxy.set(path, Endless(fill=b"x" * 1024))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") is None
        assert len(resp.read(1 << 20)) == 1 << 20  # more than any real file, and still going
        conn.close()
        assert net.proxy.requests == [path]  # the log restarts with each clear()
    finally:
        net.proxy.clear()
