"""Catalog benchmark: one release and one device refresh at 1k / 10k / 100k targets.

    python bench/catalog_bench.py [--sizes 1000,10000,100000] [--bins 8] [--head 3]

Two layouts of the same catalog, built and measured in the same run:

* **flat**: every target in the top-level ``targets.json`` (otakit before delegations);
* **delegated**: 100 products, each its own targets role (``otakit repo delegate``) listing
  its newest ``--head`` versions, older versions in ``--bins`` TAP 15 hash bins.

The catalog is synthetic: 100 products, versions of one full and up to three deltas each,
entries with otakit's real ``custom`` metadata (validated by the device's own parser) and
fake hashes; there are no image bytes (the four targets of the measured release are tiny
stand-in files, so storing them costs nothing). Keys are in-memory ed25519.

Measured per size and layout:

* **release**: one new version (full + 3 deltas) of product ``p000`` through the real
  ``Transaction`` (lock, verified load of the published state, routing, the product's full
  catalog read as ``otakit release`` does for version checks and delta bases, staging,
  signing, crash-safe publish, verified re-load). Signing (the private-key operations) is
  timed separately and reported apart; files and bytes written are counted in ``metadata/``.
* **device refresh**: a device of product ``p000`` that refreshed before the release
  refreshes again through ``TufClient`` (our path, delegation search included) and must find
  the new version: metadata bytes downloaded and time.
* **python-tuf anchor**: python-tuf's own ``Updater`` on the same repository, primed the
  same way, then ``refresh()`` + ``get_targetinfo(new full image path)``.

The flat layout at 100k exceeds two of otakit's bounds (the publisher reads at most 64 MiB
of one metadata file; the device's ``targets_max_length`` is 16 MiB); the bench raises both
for the flat layout only, so that it can be measured at all, and says so in the table.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from securesystemslib.signer import CryptoSigner, Key, Signature, Signer  # noqa: E402
from tuf.api import exceptions as tuf_exc  # noqa: E402
from tuf.api.metadata import Delegations, TargetFile, Targets  # noqa: E402
from tuf.ngclient import Updater  # noqa: E402

import repo.state  # noqa: E402
from repo.delegation import (  # noqa: E402
    HEAD_FIELD,
    DelegationSpec,
    StagedRole,
    delegate_edit,
    published_targets,
    sign_roles,
    snapshot_meta,
    split_head,
)
from repo.keys import KeyConfig, KeyRef, RoleKeys  # noqa: E402
from repo.publish import SignedRelease, publish  # noqa: E402
from repo.repository import (  # noqa: E402
    Expiries,
    init,
    next_targets,
    open_transaction,
    stage_chain,
)
from repo.roles import TOP_LEVEL_ROLES  # noqa: E402
from repo.signing import sign_chain  # noqa: E402
from repo.state import load_state  # noqa: E402
from verifier.artifact import CUSTOM_KEY, SCHEMA_VERSION, ImageVersion  # noqa: E402
from verifier.device import init_device  # noqa: E402
from verifier.effects import RealDisk  # noqa: E402
from verifier.state import DeviceConfig, StatePaths  # noqa: E402
from verifier.tuf.client import TufClient, TufLimits  # noqa: E402
from verifier.tuf.fetcher import OtaFetcher  # noqa: E402

PRODUCTS = 100
DELTAS = 3
DEVICE_PRODUCT = "p000"
BASE = "http://bench.test/"


# --- synthetic catalog ----------------------------------------------------------------------


def _entry(product: str, version: int, kind: str, base: int, sha: str) -> TargetFile:
    h = hashlib.sha256(f"{product}/{version}/{kind}/{base}".encode()).hexdigest()
    data: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "product": product,
        "hardware": ["board-x"],
        "version": f"{version}.0",
        "kind": kind,
        "compression": "zstd" if kind == "full" else "otakit-delta",
        "image": {"length": 1 << 30, "sha256": h},
        "image_type": "ext4",
    }
    name = "full.img.zst"
    if kind == "delta":
        data["base"] = {"version": f"{base}.0", "length": 1 << 30, "sha256": h[::-1]}
        data["delta_header"] = {"length": 4096, "sha256": h}
        name = f"delta-from-{base}.0.otd"
    return TargetFile(
        length=300 << 20,
        hashes={"sha256": sha or h},
        path=f"{product}/{version}.0/{name}",
        unrecognized_fields={"custom": {CUSTOM_KEY: data}},
    )


def _version_entries(product: str, version: int) -> list[tuple[str, int]]:
    return [("full", 0)] + [("delta", version - d) for d in range(1, DELTAS + 1) if version > d]


def catalog(product: str, count: int) -> tuple[dict[str, TargetFile], int]:
    """``count`` targets of ``product`` (versions 1.0, 2.0, …) and the last version number."""
    out: dict[str, TargetFile] = {}
    version = 0
    while len(out) < count:
        version += 1
        for kind, base in _version_entries(product, version):
            if len(out) < count:
                tf = _entry(product, version, kind, base, "")
                out[tf.path] = tf
    return out, version


# --- keys that time their signing -----------------------------------------------------------


class TimedSigner(Signer):
    """An in-memory key whose private-key operations are timed (signing is reported apart)."""

    spent = 0.0

    def __init__(self) -> None:
        self._inner = CryptoSigner.generate_ed25519()

    @property
    def public_key(self) -> Key:
        return self._inner.public_key

    def sign(self, payload: bytes) -> Signature:
        t = time.perf_counter()
        try:
            return self._inner.sign(payload)
        finally:
            TimedSigner.spent += time.perf_counter() - t

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Key, secrets_handler: Any = None
    ) -> Signer:
        raise NotImplementedError


def _role_keys(signer: Signer) -> RoleKeys:
    return RoleKeys(1, (KeyRef(signer.public_key, "bench:in-memory"),))


# --- a fetcher over the repository directory, counting bytes --------------------------------


class DirFetcher(OtaFetcher):
    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = repo_dir
        self.bytes = 0
        self.files: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        rel = url.removeprefix(BASE).removeprefix("file://")
        path = self.repo_dir / rel
        if not path.is_file():
            raise tuf_exc.DownloadHTTPError(f"not found: {url}", 404)
        data = path.read_bytes()
        self.bytes += len(data)
        self.files.append(rel)
        return iter([data])


# --- building the two layouts ---------------------------------------------------------------


@dataclass
class Bench:
    repo: Path
    signers: dict[str, list[Signer]]
    catalogs: dict[str, tuple[dict[str, TargetFile], int]]
    delegated: bool


NOW = datetime.now(UTC).replace(microsecond=0)


def build(workdir: Path, size: int, *, delegated: bool, bins: int, head: int) -> Bench:
    signers: dict[str, list[Signer]] = {r: [TimedSigner()] for r in TOP_LEVEL_ROLES}
    keyconf = KeyConfig(Path("bench"), {r: _role_keys(signers[r][0]) for r in TOP_LEVEL_ROLES})
    repo_dir = workdir / ("delegated" if delegated else "flat")
    init(repo_dir, keyconf, NOW, signers=signers)
    state = load_state(repo_dir)
    exp = Expiries()
    products = [f"p{i:03d}" for i in range(PRODUCTS)]
    per = size // PRODUCTS
    catalogs = {p: catalog(p, per) for p in products}
    if not delegated:
        everything = {k: v for p in products for k, v in catalogs[p][0].items()}
        top = next_targets(state, NOW, exp, everything)
        chain = sign_chain(stage_chain(state, top, NOW, exp), signers, [state.root.signed])
        publish(repo_dir, SignedRelease((), chain.targets, chain.snapshot, chain.timestamp))
        return Bench(repo_dir, signers, catalogs, False)
    top = next_targets(state, NOW, exp)
    staged: list[StagedRole] = []
    for p in products:
        signers[p] = [TimedSigner()]
        spec = DelegationSpec(p, _role_keys(signers[p][0]), bins=bins, head=head)
        top = delegate_edit(spec)(top)
    expires = exp.expires("targets", NOW)
    for p in products:
        spec = DelegationSpec(p, _role_keys(signers[p][0]), bins=bins, head=head)
        sr = spec.succinct()
        kept, moved = split_head(catalogs[p][0], head) if sr else (catalogs[p][0], {})
        role = Targets(
            version=1,
            expires=expires,
            targets=kept,
            delegations=None
            if sr is None
            else Delegations(keys={k.keyid: k.public for k in spec.keys.keys}, succinct_roles=sr),
            unrecognized_fields={HEAD_FIELD: head},
        )
        staged.append(StagedRole(p, p, role, top))
        for name in sr.get_roles() if sr else ():
            entries = {k: v for k, v in moved.items() if sr.get_role_for_target(k) == name}
            staged.append(
                StagedRole(name, p, Targets(1, expires=expires, targets=entries), role, True)
            )
    signed = sign_roles(staged, signers)
    bin_names = frozenset(s.name for s in staged if s.compact)
    chain_in = stage_chain(state, top, NOW, exp)
    chain_in.snapshot.meta.update(snapshot_meta(signed, bin_names))
    chain = sign_chain(chain_in, signers, [state.root.signed])
    publish(
        repo_dir,
        SignedRelease((), chain.targets, chain.snapshot, chain.timestamp, delegated=tuple(signed)),
    )
    return Bench(repo_dir, signers, catalogs, True)


# --- the measurements -----------------------------------------------------------------------


@dataclass
class Release:
    seconds: float
    signing: float
    files: int
    bytes: int
    new_path: str


def _listing(d: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in d.iterdir() if p.is_file()}


def release(b: Bench, workdir: Path) -> Release:
    product = DEVICE_PRODUCT
    version = b.catalogs[product][1] + 1
    src = workdir / "src"
    src.mkdir(exist_ok=True)
    blobs = []
    for kind, base in _version_entries(product, version):
        content = f"stand-in for {product} {version} {kind} {base}\n".encode()
        sha = hashlib.sha256(content).hexdigest()
        tf = _entry(product, version, kind, base, sha)
        tf.length = len(content)
        path = src / tf.path.replace("/", "_")
        path.write_bytes(content)
        blobs.append((tf, path))
    mdir = b.repo / "metadata"
    before = _listing(mdir)
    signers = (
        b.signers
        if not b.delegated
        else {
            "snapshot": b.signers["snapshot"],
            "timestamp": b.signers["timestamp"],
            product: b.signers[product],
        }
    )
    TimedSigner.spent = 0.0
    t = time.perf_counter()
    with open_transaction(b.repo) as tx:
        published_targets(tx.state, product)  # what `otakit release` reads (versions, bases)
        for tf, path in blobs:
            tx.add_target(tf, path)
        tx.commit(signers, NOW)
    seconds = time.perf_counter() - t
    after = _listing(mdir)
    changed = [n for n, v in after.items() if before.get(n) != v]
    return Release(
        seconds,
        TimedSigner.spent,
        len(changed),
        sum(after[n][0] for n in changed),
        blobs[0][0].path,
    )


@dataclass
class Refresh:
    bytes: int
    seconds: float
    found: bool
    files: int


def make_device(workdir: Path, b: Bench) -> StatePaths:
    state = workdir / "device"
    slot_a, slot_b = workdir / "slot-a", workdir / "slot-b"
    slot_a.write_bytes(bytes(4096))  # the device's running image (not used: no update)
    slot_b.write_bytes(b"")
    config = DeviceConfig(BASE, DEVICE_PRODUCT, "board-x", slot_a, slot_b)
    root = (b.repo / "metadata" / "1.root.json").read_bytes()
    init_device(state, RealDisk(), config, root=root, installed_version=ImageVersion.parse("1.0"))
    return StatePaths(state)


def device_refresh(paths: StatePaths, b: Bench, new_path: str | None) -> Refresh:
    fetcher = DirFetcher(b.repo)
    limits = TufLimits() if b.delegated else TufLimits(targets_max_length=256 << 20)
    t = time.perf_counter()
    with TufClient(
        paths,
        BASE + "metadata/",
        BASE + "targets/",
        RealDisk(),
        now=NOW,
        fetcher=fetcher,
        limits=limits,
    ) as c:
        found = any(x.path == new_path for x in c.refresh(DEVICE_PRODUCT))
    return Refresh(fetcher.bytes, time.perf_counter() - t, found, len(fetcher.files))


def tuf_refresh(cache: Path, b: Bench, path: str) -> Refresh:
    (cache / "targets").mkdir(parents=True, exist_ok=True)
    fetcher = DirFetcher(b.repo)
    t = time.perf_counter()
    from tuf.ngclient import UpdaterConfig

    u = Updater(
        str(cache),
        BASE + "metadata/",
        str(cache / "targets"),
        BASE + "targets/",
        fetcher,
        UpdaterConfig(targets_max_length=256 << 20),
        bootstrap=(b.repo / "metadata" / "1.root.json").read_bytes(),
    )
    u.refresh()
    found = u.get_targetinfo(path) is not None
    return Refresh(fetcher.bytes, time.perf_counter() - t, found, len(fetcher.files))


def run_case(workdir: Path, size: int, delegated: bool, bins: int, head: int) -> dict[str, Any]:
    t = time.perf_counter()
    b = build(workdir, size, delegated=delegated, bins=bins, head=head)
    built = time.perf_counter() - t
    paths = make_device(workdir, b)
    old_path = next(iter(b.catalogs[DEVICE_PRODUCT][0]))
    first = device_refresh(paths, b, None)
    tuf_refresh(workdir / "tuf", b, old_path)  # the anchor primed the same way
    rel = release(b, workdir)
    dev = device_refresh(paths, b, rel.new_path)
    anchor = tuf_refresh(workdir / "tuf", b, rel.new_path)
    assert dev.found and anchor.found, (dev, anchor)
    snap = max(
        (p for p in (b.repo / "metadata").glob("*.snapshot.json")),
        key=lambda p: int(p.name.split(".")[0]),
    )
    return {
        "size": size,
        "layout": "delegated" if delegated else "flat",
        "build_s": built,
        "release": rel,
        "first": first,
        "device": dev,
        "anchor": anchor,
        "snapshot_bytes": snap.stat().st_size,
    }


def table(rows: list[dict[str, Any]], bins: int, head: int) -> str:
    out = [
        f"catalog: 100 products, full + up to 3 deltas per version; delegated: head {head}, "
        f"{bins} bins per product",
        "",
        "| targets | layout | release files | release bytes | release s (excl. signing) "
        "| signing s | device refresh bytes | device s | python-tuf bytes | python-tuf s "
        "| snapshot bytes | first device refresh bytes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel, dev, anc = r["release"], r["device"], r["anchor"]
        out.append(
            f"| {r['size']:,} | {r['layout']} | {rel.files} | {rel.bytes:,} | "
            f"{rel.seconds - rel.signing:.3f} | {rel.signing:.3f} | {dev.bytes:,} | "
            f"{dev.seconds:.3f} | {anc.bytes:,} | {anc.seconds:.3f} | {r['snapshot_bytes']:,} | "
            f"{r['first'].bytes:,} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--bins", type=int, default=8)
    ap.add_argument("--head", type=int, default=3)
    args = ap.parse_args(argv)
    # the flat layout at 100k exceeds the publisher's 64 MiB read bound (module docstring)
    repo.state._MAX_METADATA = 512 << 20
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for delegated in (False, True):
            with tempfile.TemporaryDirectory(prefix="otakit-catalog-") as tmp:
                rows.append(run_case(Path(tmp), size, delegated, args.bins, args.head))
                print(f"done: {size} {'delegated' if delegated else 'flat'}", file=sys.stderr)
    print(table(rows, args.bins, args.head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
