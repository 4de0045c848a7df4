"""The public demo keys of ``keys-example/``, known by key id so every use can be loud.

Their private halves are published in the source tree: anything they sign is signed by
anybody. The device cannot import the publisher, so the ids live here, on the strict side;
a test keeps this list equal to the keys in ``keys-example/keys.json``.
"""

from __future__ import annotations

from collections.abc import Iterable

#: key id -> the role it serves in keys-example/keys.json
DEMO_KEY_IDS: dict[str, str] = {
    "6864bcb13af06f2ba98bb4c457dca9fafda9e1cf7561738592ff31fe3a3bea0a": "root",
    "9d64fd150b3757a701be4569091521d7f9dc7df5a96cc7ee8563a4b4ce3eb1d9": "root",
    "d4792d13cfa9807a8b8fc081c7fd260037be688b44d50d94fd737965e48f0aba": "targets",
    "ea8dd60fad4883d07d457763168f639eb24daa354a7ff9f704246526e7532674": "snapshot",
    "6d17a62ed81f6bcfc2af5a22ee5df385df9006bba20fdaa4d4a90bedc1df2ae7": "timestamp",
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
