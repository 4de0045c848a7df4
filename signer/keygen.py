"""Generate the public demo keys: ed25519 ``file2:`` keys for every role and a keys.json.

These keys are for demos and tests only; their private halves are committed in
``keys-example/`` and therefore public. They are *derived*, not random: the private seed of
``<role>-<n>.pem`` is ``sha256("otakit public demo key/<role>/<n>")``, so every demo key set
anyone generates is the same one, its ids are the ones in ``verifier.demokeys.DEMO_KEY_IDS``,
and every command that meets one of them can say so. Real deployments reference offline or
HSM keys (see docs/REPOSITORY.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

from repo.errors import LocalError
from repo.keys import FORMAT_VERSION, KeyConfig, load_key_config

#: role -> (number of keys, threshold)
DEMO_LAYOUT: Mapping[str, tuple[int, int]] = {
    "root": (2, 2),
    "targets": (1, 1),
    "snapshot": (1, 1),
    "timestamp": (1, 1),
}
KEYS_FILE = "keys.json"
#: The public string every demo key is derived from (see the module docstring).
DEMO_SEED = "otakit public demo key"

#: (role, index from 1) -> the private key for that slot of ``DEMO_LAYOUT``
KeyFactory = Callable[[str, int], Ed25519PrivateKey]


def demo_key(role: str, index: int) -> Ed25519PrivateKey:
    """The demo key ``<role>-<index>``: ed25519 with seed sha256(DEMO_SEED/role/index)."""
    seed = hashlib.sha256(f"{DEMO_SEED}/{role}/{index}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def generate_demo_keys(directory: Path, *, overwrite: bool = False) -> KeyConfig:
    """Write the demo keys (``<role>-<n>.pem``) and their ``keys.json`` into ``directory``."""
    return generate_key_set(directory, demo_key, overwrite=overwrite)


def generate_key_set(
    directory: Path, make_key: KeyFactory, *, overwrite: bool = False
) -> KeyConfig:
    """Write ``DEMO_LAYOUT``'s keys, each from ``make_key``, and a ``keys.json`` naming them.

    Tests pass a random factory to get a key set that is *not* the demo one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    conf_path = directory / KEYS_FILE
    if conf_path.exists() and not overwrite:
        raise LocalError(
            f"{conf_path}: already exists", hint="pass --force to replace the demo keys"
        )
    roles: dict[str, Any] = {}
    for role, (count, threshold) in DEMO_LAYOUT.items():
        entries = []
        for i in range(1, count + 1):
            signer = CryptoSigner(make_key(role, i))
            name = f"{role}-{i}.pem"
            _write(directory / name, signer.private_bytes, mode=0o600)
            public = {"keyid": signer.public_key.keyid, **signer.public_key.to_dict()}
            entries.append({"public": public, "uri": f"file2:{name}"})
        roles[role] = {"threshold": threshold, "keys": entries}
    doc = {"otakit_keys": FORMAT_VERSION, "roles": roles}
    _write(conf_path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    return load_key_config(conf_path)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
