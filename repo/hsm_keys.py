"""Register a key that lives on a PKCS#11 token: find it, read its public half, prove it signs.

Signing goes through securesystemslib's ``HSMSigner`` (``hsm:KEYID?label=TOKEN``, see
``repo.keys``), which addresses a key by its ``CKA_ID`` read as an integer, finds it by that
id alone, and signs with ECDSA P-256/P-384 only. People name keys by label, or by an RFC 7512
URI (``pkcs11:token=…;object=…;id=…``), so this module resolves such a name on the token to
the one key ``HSMSigner`` will later find, refuses every case where it would find another one
or none (no such key, several matches, a non-EC key, an id an ``hsm:`` URI cannot spell, no
private half, two keys sharing the id), and signs a challenge on the token with the very
``HSMSigner`` signing will use. The private key never leaves the token; only its public half
and the URI go into ``keys.json``.

The PIN comes from a named environment variable or a prompt. An RFC 7512 URI may carry
``pin-value=``; such a URI is refused, because a URI is typed on a command line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from securesystemslib.signer import HSMSigner, SSlibKey  # type: ignore[attr-defined]

from repo.errors import KeyConfigError, LocalError, UsageError
from repo.keygen import check_env_name
from repo.keys import SECRET_ENV_PREFIX, PromptFn

#: The only RFC 7512 path attributes a key can be selected by here.
_PATH_ATTRS = ("token", "object", "id", "type")
_CHALLENGE = b"otakit keys import-hsm: the token signs with this key"
PIN_DEFAULT_ENV = SECRET_ENV_PREFIX + "PIN"

PinFn = Callable[[], str]


@dataclass(frozen=True)
class TokenKeySpec:
    """Which key on which token: by label and/or id (``None``: not constrained)."""

    token_label: str | None
    key_label: str | None
    key_id: bytes | None

    def describe(self) -> str:
        parts = [f"token {self.token_label!r}" if self.token_label else "the only token"]
        if self.key_label is not None:
            parts.append(f"label {self.key_label!r}")
        if self.key_id is not None:
            parts.append(f"id {self.key_id.hex()}")
        return ", ".join(parts)


def parse_pkcs11_uri(uri: str) -> TokenKeySpec:
    """The subset of RFC 7512 that selects one key: ``token``, ``object``, ``id``, ``type``."""
    if not uri.startswith("pkcs11:"):
        raise UsageError(
            f"--uri: expected a PKCS#11 URI 'pkcs11:token=LABEL;object=LABEL', found a URI "
            f"with scheme {uri.partition(':')[0]!r}"
        )
    path, _, query = uri[len("pkcs11:") :].partition("?")
    for item in filter(None, query.split("&")):
        name = item.partition("=")[0]
        if name in ("pin-value", "pin-source"):
            raise UsageError(
                f"--uri: found a {name} attribute; a PIN is never taken from the command "
                "line (nor its file from a URI)",
                hint="remove it and pass --pin-env NAME, or type the PIN at the prompt",
            )
        if name == "module-path":
            raise UsageError(
                "--uri: found module-path; the module is taken from PYKCS11LIB (signing "
                "reads it from there too)",
                hint="remove module-path and export PYKCS11LIB=PATH",
            )
        raise UsageError(f"--uri: unsupported query attribute {name!r}")
    attrs: dict[str, bytes] = {}
    for item in filter(None, path.split(";")):
        name, eq, value = item.partition("=")
        if not eq or name not in _PATH_ATTRS:
            raise UsageError(
                f"--uri: expected attributes {', '.join(_PATH_ATTRS)}, found {name!r}",
                hint="select the key by token and object (label) and/or id",
            )
        if name in attrs:
            raise UsageError(f"--uri: attribute {name!r} given twice")
        attrs[name] = unquote_to_bytes(value)
    if attrs.get("type", b"public") not in (b"public", b"private"):
        raise UsageError(f"--uri: expected type=public or type=private, found {attrs['type']!r}")
    spec = TokenKeySpec(
        token_label=_text(attrs, "token"),
        key_label=_text(attrs, "object"),
        key_id=attrs.get("id"),
    )
    if spec.key_label is None and spec.key_id is None:
        raise UsageError("--uri: expected object=LABEL or id=%XX naming the key, found neither")
    return spec


def _text(attrs: Mapping[str, bytes], name: str) -> str | None:
    value = attrs.get(name)
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise UsageError(f"--uri: {name} is not UTF-8 text") from None


def spec_from_options(
    uri: str | None, token_label: str | None, key_label: str | None
) -> TokenKeySpec:
    """``--uri``, or ``--token-label`` with ``--key-label``, never both."""
    if uri is not None:
        if token_label is not None or key_label is not None:
            raise UsageError(
                "expected --uri or --token-label/--key-label, found both",
                hint="the URI already names the token and the key",
            )
        return parse_pkcs11_uri(uri)
    if key_label is None:
        raise UsageError(
            "expected the key to import: --uri 'pkcs11:token=T;object=K' or --key-label K "
            "(with --token-label T), found neither"
        )
    return TokenKeySpec(token_label=token_label, key_label=key_label, key_id=None)


def pin_source(pin_env: str | None, env: Mapping[str, str], prompt: PromptFn | None) -> PinFn:
    """The token PIN, read when first needed: ``$pin_env`` (or ``OTAKIT_SECRET_PIN``), else a
    prompt, else an error naming the variable to set."""
    names = [check_env_name(pin_env, "--pin-env")] if pin_env else []
    names.append(PIN_DEFAULT_ENV)

    cache: list[str] = []

    def read() -> str:
        if not cache:
            cache.append(_read())
        return cache[0]

    def _read() -> str:
        for name in names:
            if env.get(name):
                return env[name]
        if prompt is not None:
            return prompt("token user PIN: ")
        raise LocalError(
            f"the token needs its user PIN: expected it in {' or '.join(names)}, found none "
            "set (and no terminal to ask on)",
            hint=f"export {names[0]}=... or run on a terminal (a PIN is never an argument)",
        )

    return read


@dataclass(frozen=True)
class ImportedKey:
    """A token key that signs, and how the key configuration refers to it."""

    uri: str
    public: SSlibKey
    token_label: str
    key_label: str | None
    key_id_hex: str
    pin_env: str | None

    @property
    def keyid(self) -> str:
        return str(self.public.keyid)

    def entry(self) -> dict[str, Any]:
        """A ``keys.json`` key entry (docs/REPOSITORY.md)."""
        out: dict[str, Any] = {
            "public": {"keyid": self.keyid, **self.public.to_dict()},
            "uri": self.uri,
        }
        if self.pin_env:
            out["secret_env"] = self.pin_env
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "keyid": self.keyid,
            "token": self.token_label,
            "key_label": self.key_label,
            "key_id": self.key_id_hex,
            "public": self.entry()["public"],
            "entry": self.entry(),
        }


def import_hsm_key(spec: TokenKeySpec, *, pin: PinFn, pin_env: str | None) -> ImportedKey:
    """Find ``spec``'s key on its token (module: ``$PYKCS11LIB``), check that ``HSMSigner``
    will find exactly it, and sign a challenge with it there."""
    try:
        import pkcs11
        from pkcs11 import Attribute, KeyType, ObjectClass, TokenFlag
        from pkcs11 import exceptions as p11e
    except ImportError:  # an optional dependency (the ``hsm`` extra)
        raise LocalError(
            "expected PKCS#11 support (python-pkcs11), found it not installed",
            hint="pip install 'otakit[hsm]'",
        ) from None
    module = os.environ.get("PYKCS11LIB")
    if not module:
        raise LocalError(
            "expected the PKCS#11 module in the environment variable PYKCS11LIB, found it not set",
            hint="export PYKCS11LIB=/path/to/your-vendor-pkcs11.so (signing needs it too)",
        )
    where = spec.describe()
    try:
        lib = pkcs11.lib(module)
        # initialised tokens only, as HSMSigner looks (a module may list empty slots' tokens)
        token = lib.get_token(token_label=spec.token_label, token_flags=TokenFlag.TOKEN_INITIALIZED)
    except p11e.NoSuchToken:
        raise LocalError(
            f"expected a PKCS#11 token ({where}), found none; tokens there: "
            f"{_token_labels(lib, TokenFlag.TOKEN_INITIALIZED)}",
            hint="plug in / initialise the token, or fix --token-label",
        ) from None
    except p11e.MultipleTokensReturned:
        raise UsageError(
            "expected one PKCS#11 token, found several: "
            f"{_token_labels(lib, TokenFlag.TOKEN_INITIALIZED)}",
            hint="name one with --token-label (or token= in --uri)",
        ) from None
    except (OSError, RuntimeError) as e:
        raise LocalError(f"cannot use the PKCS#11 module {module}: {e}") from e
    label = str(token.label)
    try:
        with token.open(user_pin=pin()) as session:
            hsm_keyid = _resolve(session, spec, where, Attribute, KeyType, ObjectClass)
    except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange):
        raise LocalError(
            f"token {label!r} refused the PIN given (wrong PIN)",
            hint="check the variable named by --pin-env (or OTAKIT_SECRET_PIN); tokens lock "
            "after a few wrong PINs",
        ) from None
    except p11e.PinLocked:
        raise LocalError(f"token {label!r}: the user PIN is locked") from None
    except p11e.PKCS11Error as e:  # the token went away, refused a session, ...
        raise LocalError(
            f"token {label!r}: the PKCS#11 module reported {type(e).__name__} {e}".rstrip()
        ) from e
    try:
        uri, public = HSMSigner.import_(hsm_keyid, label, lambda _secret: pin())
        signer = HSMSigner.from_priv_key_uri(uri, public, lambda _secret: pin())
        public.verify_signature(signer.sign(_CHALLENGE), _CHALLENGE)
    except Exception as e:  # a token that signs with another key, or does not sign at all
        raise KeyConfigError(
            f"token {label!r} key id {hsm_keyid:x}: a signature made on the token does not "
            f"verify with its public key: {e}",
        ) from e
    return ImportedKey(
        uri=uri,
        public=public,
        token_label=label,
        key_label=spec.key_label,
        key_id_hex=_id_hex(hsm_keyid),
        pin_env=pin_env,
    )


def _resolve(
    session: Any, spec: TokenKeySpec, where: str, Attribute: Any, KeyType: Any, ObjectClass: Any
) -> int:
    """The ``hsm:`` key id of the one public key ``spec`` names, after checking that
    ``HSMSigner`` (which looks up by id alone) finds that key and its private half."""
    match: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PUBLIC_KEY}
    if spec.key_label is not None:
        match[Attribute.LABEL] = spec.key_label
    if spec.key_id is not None:
        match[Attribute.ID] = spec.key_id
    found = list(session.get_objects(match))
    if len(found) != 1:
        present = [
            f"{o[Attribute.LABEL]!r} (id {bytes(o[Attribute.ID]).hex() or 'none'})"
            for o in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        ]
        raise UsageError(
            f"expected one public key for {where}, found {len(found)}; public keys on the "
            f"token: {', '.join(present) or 'none'}",
            hint="name the key by a unique label or by id",
        )
    (pub,) = found
    if pub[Attribute.KEY_TYPE] != KeyType.EC:
        raise UsageError(
            f"{where}: expected an EC (P-256/P-384) key, found a {pub[Attribute.KEY_TYPE].name} "
            "key; hsm: signing is ECDSA only",
            hint="generate an EC key on the token (pkcs11-tool --keypairgen --key-type "
            "EC:prime256v1)",
        )
    key_id = bytes(pub[Attribute.ID])
    hsm_keyid = int.from_bytes(key_id, "big")
    if not key_id or hsm_keyid.to_bytes((hsm_keyid.bit_length() + 7) // 8, "big") != key_id:
        raise UsageError(
            f"{where}: its CKA_ID {key_id.hex() or '(empty)'} cannot be written as an hsm: "
            "key id (a non-empty id without leading zero bytes)",
            hint="give the key pair such an id (e.g. pkcs11-tool --id 01 ... re-created)",
        )
    for cls, what in ((ObjectClass.PUBLIC_KEY, "EC public"), (ObjectClass.PRIVATE_KEY, "private")):
        same_id = list(
            session.get_objects(
                {Attribute.CLASS: cls, Attribute.KEY_TYPE: KeyType.EC, Attribute.ID: key_id}
            )
        )
        if len(same_id) != 1:
            raise UsageError(
                f"{where}: expected one {what} key with id {key_id.hex()}, found "
                f"{len(same_id)}; hsm: URIs select by id, so the id must be unique",
                hint="give each key pair on the token its own id",
            )
    return hsm_keyid


def _id_hex(hsm_keyid: int) -> str:
    return hsm_keyid.to_bytes((hsm_keyid.bit_length() + 7) // 8, "big").hex()


def _token_labels(lib: Any, flags: Any) -> str:
    try:
        labels = [str(t.label) for t in lib.get_tokens(token_flags=flags)]
    except Exception:  # listing is only for the message
        return "(cannot list)"
    return ", ".join(repr(x) for x in labels) or "none"
