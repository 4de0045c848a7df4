"""``envvar:NAME`` signer URIs: a PEM private key held in an environment variable.

CI systems hand secrets to jobs as environment variables; this lets a pipeline sign (say)
timestamp and snapshot without writing the key to disk. securesystemslib 1.6 has no such
scheme, so we register one through its public extension point, ``SIGNER_FOR_URI_SCHEME``.
The key material never appears on the command line or in a file; the URI names only the
variable.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import (  # type: ignore[attr-defined]
    SIGNER_FOR_URI_SCHEME,
    CryptoSigner,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)

SCHEME = "envvar"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class EnvVarSigner(Signer):
    """Resolves ``envvar:NAME`` to a ``CryptoSigner`` over the PEM key in ``$NAME``."""

    def __init__(self, inner: CryptoSigner) -> None:
        self._inner = inner

    @property
    def public_key(self) -> Key:
        return self._inner.public_key

    def sign(self, payload: bytes) -> Signature:
        return self._inner.sign(payload)

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> EnvVarSigner:
        uri = urlparse(priv_key_uri)
        name = uri.path
        if uri.scheme != SCHEME or not _NAME_RE.match(name):
            raise ValueError(f"expected envvar:<VARIABLE NAME>, found {priv_key_uri!r}")
        if not isinstance(public_key, SSlibKey):
            raise ValueError(f"expected an SSlibKey for {priv_key_uri}")
        pem = os.environ.get(name)
        if not pem:
            raise ValueError(f"environment variable {name} is not set or empty")
        private_key = load_pem_private_key(pem.encode(), None)
        return cls(CryptoSigner(private_key, public_key))


def register() -> None:
    SIGNER_FOR_URI_SCHEME.setdefault(SCHEME, EnvVarSigner)
