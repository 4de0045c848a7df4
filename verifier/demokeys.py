"""The public demo keys of ``keys-example/``, known by key id so every use can be loud.

Their private halves are published in the source tree: anything they sign is signed by
anybody. The device cannot import the publisher, so the ids live here, on the strict side;
a test keeps this list equal to the keys in ``keys-example/keys.json``. The keys are
derived from a public seed (``signer.keygen.demo_key``), so ``otakit keys generate-demo``
always produces exactly these ids, wherever it runs.
"""

from __future__ import annotations

from collections.abc import Iterable

#: key id -> the role it serves in keys-example/keys.json
DEMO_KEY_IDS: dict[str, str] = {
    "5ddf34607d7713a106a65504c6b79554ea6c150ca9bb4ce35cb97d4b5914e62d": "root",
    "da1b1b3b7b7f6f4cb90ff5430499ac6bf348836543ced9b43807878e16a172cd": "root",
    "02ff80e41314b89084ae49c399bc9461d54507052636c0be3ec0b43a2b4a1489": "targets",
    "b8f45986223d6f7aa3e653a93d5913c1fa8a05ced659f495cbbe9c7c6e00f48b": "snapshot",
    "0d36bbf6bcb579be4ba430c8623666efff5424e2a1506150bb2a515d035f286e": "timestamp",
}

DEMO_KEY_WARNING = (
    "uses PUBLIC demo keys from keys-example/ (anyone can sign with them); "
    "never use them on a real repository or device"
)


def is_demo_key(keyid: str) -> bool:
    return keyid in DEMO_KEY_IDS


def demo_keys_among(keyids: Iterable[str]) -> list[str]:
    """The demo key ids among ``keyids``, sorted, each once."""
    return sorted({k for k in keyids if k in DEMO_KEY_IDS})
