"""``otakit release-file``: sign any file as a target (a container bundle, a configuration
archive, a peripheral's firmware) for ``otakit-device fetch``.

Not an image: its ``custom`` must not carry the artifact key (``verifier.artifact.CUSTOM_KEY``),
so a device's image plan never considers it (``verifier.tuf.client.candidate`` skips targets
without that key). It is published in one repository transaction like a release: the role
that owns its path signs it (the top-level targets keys, or a delegated product's keys when
the name falls under the product's paths: ``Transaction`` routes by path), then snapshot and
timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from repo.demo_warnings import warn_demo_keys
from repo.errors import ImageReadError, UsageError
from repo.keys import KeyConfig, PromptFn
from repo.repository import Expiries, open_transaction, release_signers
from verifier import strictjson
from verifier.artifact import CUSTOM_KEY

#: what the device is told this target is (informational; a device never installs it)
KIND_KEY = "otakit_file"


@dataclass(frozen=True)
class ReleasedFile:
    target: str
    length: int
    sha256: str
    role: str
    custom: dict[str, Any]
    targets_version: int
    timestamp_version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "length": self.length,
            "sha256": self.sha256,
            "role": self.role,
            "custom": self.custom,
            "targets_version": self.targets_version,
            "timestamp_version": self.timestamp_version,
        }


def parse_custom(text: str | None) -> dict[str, Any]:
    """``--custom``: a strict JSON object (no duplicate keys), without the image key."""
    if text is None:
        return {}
    doc = strictjson.loads(text.encode(), name="--custom", error=UsageError)
    if not isinstance(doc, dict):
        raise UsageError(f"--custom: expected a JSON object, found {type(doc).__name__}")
    if CUSTOM_KEY in doc:
        raise UsageError(
            f"--custom: the key {CUSTOM_KEY!r} is reserved for images (otakit release); "
            "found it in a file target",
            hint="use another key for your own metadata",
        )
    return doc


def release_file(
    repo_dir: Path,
    keyconf: KeyConfig,
    source: Path,
    name: str,
    custom: Mapping[str, Any],
    now: datetime,
    *,
    product_keys: KeyConfig | None = None,
    expiries: Expiries | None = None,
    prompt: PromptFn | None = None,
) -> ReleasedFile:
    """Publish ``source`` as target ``name`` with ``custom``; returns what was signed."""
    if CUSTOM_KEY in custom:
        raise UsageError(f"custom: the key {CUSTOM_KEY!r} is reserved for images")
    if not source.is_file():
        raise ImageReadError(f"{source}: expected a regular file to publish, found none")
    with open_transaction(repo_dir) as tx:
        role = tx.owner(name)
        signers = release_signers(tx.state, keyconf, role, product_keys, prompt=prompt)
        try:
            tf = TargetFile.from_file(name, str(source), ["sha256"])
        except OSError as e:
            raise ImageReadError(f"cannot read {source}: {e.strerror or e}") from e
        fields = {**dict(custom), KIND_KEY: 1}
        tf.unrecognized_fields["custom"] = fields
        tx.add_target(tf, source)
        state = tx.commit(signers, now, expiries=expiries)
    warn_demo_keys(root=state.root.signed, repo=repo_dir, signers=[signers])
    return ReleasedFile(
        name,
        tf.length,
        tf.hashes["sha256"],
        role,
        fields,
        state.targets.signed.version,
        state.timestamp.signed.version,
    )
