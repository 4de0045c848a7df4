"""Test helpers for delegations: product key files and synthetic otakit targets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import TargetFile

from repo.keys import KeyConfig, load_role_keys
from verifier.artifact import CUSTOM_KEY, SCHEMA_VERSION


def product_key_file(directory: Path, product: str, seed: str, threshold: int = 1) -> Path:
    """A role key file for ``product`` with one key per character of ``seed`` (``threshold``
    of them), each derived from the seed so a test run is reproducible."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, ch in enumerate(seed):
        sk = Ed25519PrivateKey.from_private_bytes(
            hashlib.sha256(f"test product key/{product}/{ch}/{i}".encode()).digest()
        )
        signer = CryptoSigner(sk)
        pem = directory / f"{product}-{ch}{i}.pem"
        pem.write_bytes(signer.private_bytes)
        public = {"keyid": signer.public_key.keyid, **signer.public_key.to_dict()}
        entries.append({"public": public, "uri": f"file2:{pem.name}"})
    path = directory / f"{product}-{seed}.json"
    doc = {"otakit_role_keys": 1, "threshold": threshold, "keys": entries}
    path.write_text(json.dumps(doc, indent=2))
    return path


def product_keys(directory: Path, product: str, seed: str) -> KeyConfig:
    return load_role_keys(product_key_file(directory, product, seed), product)


def fake_target(product: str, version: str, kind: str = "full", base: str = "1.0") -> TargetFile:
    """A synthetic otakit target entry (fake hashes; no bytes behind it)."""
    h = hashlib.sha256(f"{product}/{version}/{kind}/{base}".encode()).hexdigest()
    data: dict[str, object] = {
        "schema": SCHEMA_VERSION,
        "product": product,
        "hardware": ["generic"],
        "version": version,
        "kind": kind,
        "compression": "zstd" if kind == "full" else "otakit-delta",
        "image": {"length": 1 << 30, "sha256": h},
    }
    name = "full.img.zst"
    if kind == "delta":
        data["base"] = {"version": base, "length": 1 << 30, "sha256": h[::-1]}
        data["delta_header"] = {"length": 4096, "sha256": h}
        name = f"delta-from-{base}.otd"
    return TargetFile(
        length=1 << 28,
        hashes={"sha256": h},
        path=f"{product}/{version}/{name}",
        unrecognized_fields={"custom": {CUSTOM_KEY: data}},
    )


def blob_target(
    directory: Path, product: str, version: str, kind: str = "full", base: str = "1.0"
) -> tuple[TargetFile, Path]:
    """A synthetic otakit target with real bytes behind it (for a ``Transaction``)."""
    tf = fake_target(product, version, kind, base)
    content = f"bytes of {tf.path}\n".encode() * 8
    src = directory / tf.path.replace("/", "_")
    directory.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    real = TargetFile.from_data(tf.path, content, ["sha256"])
    real.unrecognized_fields["custom"] = tf.unrecognized_fields["custom"]
    return real, src
