"""PEM private keys, plain or passphrase-protected, and the ``envvar:NAME`` signer URI.

CI systems hand secrets to jobs as environment variables; ``envvar:NAME`` lets a pipeline
sign (say) timestamp and snapshot without writing the key to disk. securesystemslib 1.6 has
no such scheme, so we register one through its public extension point,
``SIGNER_FOR_URI_SCHEME``. The key material never appears on the command line or in a file;
the URI names only the variable.

``pem_signer`` is the one place a PEM key is decoded (``file2:`` keys, see ``repo.keys``,
and ``envvar:`` keys), so every way a key can be wrong — not a key, encrypted without a
passphrase at hand, the wrong passphrase, another key's private half — gets one plain
message saying what was expected, what was found and what to do.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
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

from repo.errors import KeyConfigError, LocalError, UsageError

SCHEME = "envvar"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


def pem_signer(pem: bytes, public: Key, what: str, secrets: SecretsHandler | None) -> CryptoSigner:
    """A signer over the PEM private key ``pem``, which must be ``public``'s other half.

    An encrypted key's passphrase comes from ``secrets("passphrase")`` (the key's
    ``secret_env``, ``OTAKIT_SECRET_PASSPHRASE`` or a terminal prompt, see
    ``repo.keys.secrets_from_env``). ``what`` names the key in messages.
    """
    if not isinstance(public, SSlibKey):
        raise UsageError(f"{what}: expected a key type PEM files can hold, found {public.keytype}")
    private = _decode(pem, what, secrets)
    try:
        return CryptoSigner(private, public)
    except (ValueError, TypeError):  # another key's half, or another key type altogether
        raise KeyConfigError(
            f"{what}: expected the private half of the configured public key "
            f"{public.keyid[:12]}, found the private half of {_keyid_of(private)}",
            hint="point this key's uri at its own private key file, or put this private "
            "key's public half into the key configuration (and into root, by rotation)",
        ) from None


def _decode(pem: bytes, what: str, secrets: SecretsHandler | None) -> PrivateKeyTypes:
    try:
        return load_pem_private_key(pem, None)
    except TypeError:
        pass  # encrypted: needs a passphrase
    except (ValueError, UnsupportedAlgorithm):
        raise LocalError(
            f"{what}: expected a PEM private key ('-----BEGIN PRIVATE KEY-----' or "
            f"'-----BEGIN ENCRYPTED PRIVATE KEY-----'), found {_describe(pem)}",
            hint="point this key's uri at the private key file (PKCS#8 PEM)",
        ) from None
    if secrets is None:
        raise LocalError(
            f"{what}: the private key is passphrase-protected and no passphrase source is set",
            hint="name the variable holding the passphrase in the key's secret_env",
        )
    passphrase = secrets("passphrase")
    try:
        return load_pem_private_key(pem, passphrase.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # where the passphrase came from (repo.keys.KeySecrets), never the passphrase itself
        source = getattr(secrets, "source", None)
        raise LocalError(
            f"{what}: the private key is passphrase-protected and did not decrypt with the "
            "passphrase given: wrong passphrase" + (f" (it came from {source})" if source else ""),
            hint=f"check the value of {source}"
            if source and source != "the prompt"
            else "check the value of the key's secret_env variable (or OTAKIT_SECRET_"
            "PASSPHRASE), or retype it at the prompt",
        ) from None


def _describe(pem: bytes) -> str:
    first = pem.lstrip().split(b"\n", 1)[0].strip()
    if first.startswith(b"-----BEGIN ") and len(first) < 80:
        return repr(first.decode("ascii", "replace"))
    if not pem.strip():
        return "an empty file"
    return f"{len(pem)} bytes that are not PEM"


def _keyid_of(private: PrivateKeyTypes) -> str:
    try:
        return f"key {SSlibKey.from_crypto(private.public_key()).keyid[:12]}"
    except Exception:  # a key type securesystemslib cannot describe
        return f"a {type(private).__name__.removeprefix('_')} key"


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
            raise UsageError(
                f"expected envvar:<VARIABLE NAME>, found {priv_key_uri!r}",
                hint="fix this key's uri in the key configuration",
            )
        pem = os.environ.get(name)
        if not pem:
            raise LocalError(
                f"key {public_key.keyid[:12]}: expected its PEM private key in the environment "
                f"variable {name}, found it not set or empty",
                hint=f"export {name} in the job that signs (e.g. from the CI secret store)",
            )
        what = f"key {public_key.keyid[:12]} (envvar:{name})"
        return cls(pem_signer(pem.encode(), public_key, what, secrets_handler))


def register() -> None:
    SIGNER_FOR_URI_SCHEME.setdefault(SCHEME, EnvVarSigner)
