"""Generate throwaway demo keys: ed25519 ``file2:`` keys for every role and a keys.json.

These keys are for demos and tests only; their private halves are meant to be committed and
therefore public. Real deployments reference offline or HSM keys (see docs/REPOSITORY.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def generate_demo_keys(directory: Path, *, overwrite: bool = False) -> KeyConfig:
    """Write ``<role>-<n>.pem`` private keys and ``keys.json`` into ``directory``."""
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
            signer = CryptoSigner.generate_ed25519()
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
