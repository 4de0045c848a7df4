"""An in-memory TUF repository that is also the device's fetcher.

Built directly with ``tuf.api.metadata`` (consistent snapshots, hash-prefixed target names, as
otakit publishes), so device tests need no server and can count and shape every request:
serve altered or longer target bytes, break a download half-way, refuse Range requests,
sign with a wrong key, let metadata expire or roll a version back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib import parse

import zstandard
from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from verifier.artifact import ArtifactInfo, ImageRef, ImageVersion, target_path
from verifier.tuf.fetcher import OtaFetcher

BASE = "http://repo.test/"
ROLES = ("root", "targets", "snapshot", "timestamp")


def image_ref(data: bytes) -> ImageRef:
    return ImageRef(len(data), hashlib.sha256(data).hexdigest())


def full_info(
    image: bytes,
    version: str,
    *,
    product: str = "edge-gw",
    hardware: tuple[str, ...] = ("rpi4",),
    allow_downgrade: bool = False,
    signed_image: ImageRef | None = None,
) -> ArtifactInfo:
    return ArtifactInfo(
        product=product,
        hardware=hardware,
        version=ImageVersion.parse(version),
        kind="full",
        compression="zstd",
        image=signed_image or image_ref(image),
        allow_downgrade=allow_downgrade,
    )


def compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


@dataclass
class RepoSim(OtaFetcher):
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    signers: dict[str, CryptoSigner] = field(default_factory=dict)
    #: served files by URL path below BASE ("metadata/1.root.json", "targets/x/<h>.y")
    files: dict[str, bytes] = field(default_factory=dict)
    #: every request: (url path, start offset)
    requests: list[tuple[str, int]] = field(default_factory=list)
    #: requests answered with an HTTP error (url path)
    refused: list[str] = field(default_factory=list)
    range_ok: bool = True
    targets_offline: bool = False
    #: break the next target download after this many bytes (then clear)
    break_after: int | None = None
    root: Metadata[Root] = field(init=False)
    targets: Metadata[Targets] = field(init=False)
    snapshot: Metadata[Snapshot] = field(init=False)
    timestamp: Metadata[Timestamp] = field(init=False)

    def __post_init__(self) -> None:
        exp = self.now + timedelta(days=30)
        self.signers = {r: CryptoSigner.generate_ed25519() for r in ROLES}
        self.root = Metadata(Root(expires=exp, consistent_snapshot=True))
        for role, s in self.signers.items():
            self.root.signed.add_key(s.public_key, role)
        self.targets = Metadata(Targets(expires=exp))
        self.snapshot = Metadata(Snapshot(expires=exp))
        self.timestamp = Metadata(Timestamp(expires=exp))
        self.root.sign(self.signers["root"])
        self.files["metadata/1.root.json"] = self.root.to_bytes()
        self.publish(bump_targets=False)

    # --- repository side ---------------------------------------------------------------------

    @property
    def root_bytes(self) -> bytes:
        return self.files["metadata/1.root.json"]

    def add_target(self, path: str, data: bytes, custom: dict[str, object]) -> TargetFile:
        tf = TargetFile.from_data(path, data, ["sha256"])
        tf.unrecognized_fields["custom"] = custom
        self.targets.signed.targets[path] = tf
        dirname, sep, base = path.rpartition("/")
        self.files[f"targets/{dirname}{sep}{tf.hashes['sha256']}.{base}"] = data
        return tf

    def add_artifact(self, info: ArtifactInfo, artifact: bytes) -> TargetFile:
        return self.add_target(target_path(info), artifact, info.to_custom())

    def add_full(self, image: bytes, version: str, **kw: object) -> TargetFile:
        return self.add_artifact(full_info(image, version, **kw), compress(image))  # type: ignore[arg-type]

    def publish(
        self,
        *,
        bump_targets: bool = True,
        targets_signer: CryptoSigner | None = None,
        timestamp_expires: datetime | None = None,
        snapshot_version: int | None = None,
    ) -> None:
        """Sign and serve new targets/snapshot/timestamp in TUF order."""
        if bump_targets:
            self.targets.signed.version += 1
        self.targets.signatures.clear()
        self.targets.sign(targets_signer or self.signers["targets"])
        tv = self.targets.signed.version
        self.files[f"metadata/{tv}.targets.json"] = self.targets.to_bytes()
        self.snapshot.signed.meta["targets.json"] = MetaFile(tv)
        self.snapshot.signed.version += 1
        self.snapshot.signatures.clear()
        self.snapshot.sign(self.signers["snapshot"])
        sv = self.snapshot.signed.version
        self.files[f"metadata/{sv}.snapshot.json"] = self.snapshot.to_bytes()
        self.timestamp.signed.snapshot_meta = MetaFile(snapshot_version or sv)
        self.timestamp.signed.version += 1
        if timestamp_expires is not None:
            self.timestamp.signed.expires = timestamp_expires
        self.timestamp.signatures.clear()
        self.timestamp.sign(self.signers["timestamp"])
        self.files["metadata/timestamp.json"] = self.timestamp.to_bytes()

    def rotate_root(self) -> None:
        """Root version N+1 replaces the timestamp key (a routine online-key rotation)."""
        old = self.signers["timestamp"]
        self.root.signed.revoke_key(old.public_key.keyid, "timestamp")
        new = CryptoSigner.generate_ed25519()
        self.root.signed.add_key(new.public_key, "timestamp")
        self.signers["timestamp"] = new
        self.root.signed.version += 1
        self.root.signatures.clear()
        self.root.sign(self.signers["root"])
        self.files[f"metadata/{self.root.signed.version}.root.json"] = self.root.to_bytes()

    def target_key(self, path: str) -> str:
        tf = self.targets.signed.targets[path]
        dirname, sep, base = path.rpartition("/")
        return f"targets/{dirname}{sep}{tf.hashes['sha256']}.{base}"

    def target_requests(self) -> list[tuple[str, int]]:
        return [r for r in self.requests if r[0].startswith("targets/")]

    # --- fetcher side ------------------------------------------------------------------------

    def _lookup(self, url: str) -> tuple[str, bytes]:
        if not url.startswith(BASE):
            raise tuf_exc.DownloadHTTPError(f"unexpected host in {url}", 404)
        key = parse.unquote(url[len(BASE) :])
        if key.startswith("targets/") and self.targets_offline:
            raise tuf_exc.DownloadHTTPError(f"{url}: 503", 503)
        data = self.files.get(key)
        if data is None:
            self.refused.append(key)
            raise tuf_exc.DownloadHTTPError(f"{url}: 404", 404)
        return key, data

    def _chunks(self, key: str, data: bytes) -> Iterator[bytes]:
        limit = self.break_after if key.startswith("targets/") else None
        if limit is not None:
            self.break_after = None
        sent = 0
        for i in range(0, len(data), 64 * 1024):
            chunk = data[i : i + 64 * 1024]
            if limit is not None and sent + len(chunk) > limit:
                yield chunk[: limit - sent]
                raise tuf_exc.DownloadError("connection reset by simulated peer")
            sent += len(chunk)
            yield chunk

    def _fetch(self, url: str) -> Iterator[bytes]:
        key, data = self._lookup(url)
        self.requests.append((key, 0))
        return self._chunks(key, data)

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        key, data = self._lookup(url)
        start = offset if self.range_ok and 0 < offset < len(data) else 0
        self.requests.append((key, start))
        return start, self._chunks(key, data[start:])
