"""Key configuration: which keys may sign each top-level role, and where their private halves live.

Keys are referenced, never copied (DESIGN.md "Keys and roles"): each entry pairs a public key
with a securesystemslib signer URI (``file2:``, ``envvar:``, ``hsm:``, ``awskms:`` ...;
``envvar:`` is ours, see ``repo.envvar_signer``). The private key is resolved only when
something is about to be signed, through ``Signer.from_priv_key_uri``; secrets such as a
PKCS#11 PIN come from the environment or a prompt, never from the command line, so they do
not end up in shell history or process lists.

File format (``keys.json``)::

    {
      "otakit_keys": 1,
      "roles": {
        "root":      {"threshold": 2, "keys": [{"public": KEY, "uri": "file2:root-1.pem"}, ...]},
        "targets":   {"threshold": 1, "keys": [...]},
        "snapshot":  {"threshold": 1, "keys": [...]},
        "timestamp": {"threshold": 1, "keys": [...]}
      }
    }

``KEY`` is a securesystemslib key dict (``keytype``, ``scheme``, ``keyval``) with an optional
``keyid``; when given it must equal the TUF default key id (sha256 of the canonical key dict),
so a reviewer can match the configuration against root metadata by eye. A key entry may name
``secret_env``: the environment variable holding its one secret (an HSM PIN, or the
passphrase of an encrypted PEM key).

Errors say what to do and fall in the family the fix belongs to: a malformed configuration
is a ``UsageError`` (edit the file), a private key or secret that cannot be obtained here
(missing file, unset variable, no or wrong passphrase) a ``LocalError``, and a private key
that is not the configured public key's other half a ``KeyConfigError`` (security).

Relative ``file2:`` paths are resolved against the configuration file's directory, so a key
directory can be moved as a whole.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from securesystemslib.formats import encode_canonical
from securesystemslib.signer import (  # type: ignore[attr-defined]
    SIGNER_FOR_URI_SCHEME,
    Key,
    Signer,
)

from repo.envvar_signer import pem_signer
from repo.envvar_signer import register as _register_envvar
from repo.errors import KeyConfigError, LocalError, OtakitError, UsageError
from repo.roles import TOP_LEVEL_ROLES

_register_envvar()

FORMAT_VERSION = 1
#: What ``secret_env`` (and every ``--…-env NAME`` option) may name: a variable, never a value.
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}\Z")
_MAX_KEYS_PER_ROLE = 64


def default_keyid(key_dict: Mapping[str, Any]) -> str:
    """TUF's default key id: sha256 of the canonical JSON of keytype, scheme and keyval."""
    core = {k: key_dict[k] for k in ("keytype", "scheme", "keyval")}
    canonical = encode_canonical(core)
    assert isinstance(canonical, str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRef:
    """One public key and the URI of its private half (absolute for ``file2:``)."""

    public: Key
    uri: str
    secret_env: str | None = None

    @property
    def keyid(self) -> str:
        return str(self.public.keyid)


@dataclass(frozen=True)
class RoleKeys:
    """The keys of one role and how many of them must sign (each key counted once)."""

    threshold: int
    keys: tuple[KeyRef, ...]

    @property
    def keyids(self) -> frozenset[str]:
        return frozenset(k.keyid for k in self.keys)


@dataclass(frozen=True)
class KeyConfig:
    """A parsed key configuration for the four top-level roles."""

    source: Path
    roles: Mapping[str, RoleKeys]

    def role(self, name: str) -> RoleKeys:
        try:
            return self.roles[name]
        except KeyError:
            raise UsageError(
                f"{self.source}: expected role {name!r}, found only {sorted(self.roles)}"
            ) from None


def load_key_config(path: Path) -> KeyConfig:
    """Read and strictly parse a key configuration file."""
    data = _read_json(
        path, "key configuration", "pass --keys pointing at a keys.json (see docs/REPOSITORY.md)"
    )
    return parse_key_config(data, path)


def _read_json(path: Path, what: str, hint: str) -> Any:
    """A key file's JSON: unreadable is local (fix the path), malformed is usage (fix it)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise LocalError(f"cannot read {what} {path}: {e.strerror or e}", hint=hint) from e
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: expected JSON, found a syntax error: {e}") from e


def parse_key_config(data: Any, source: Path) -> KeyConfig:
    """Parse the decoded JSON of a key configuration; ``source`` anchors relative paths."""
    where = str(source)
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a JSON object, found {type(data).__name__}")
    _only_keys(data, {"otakit_keys", "roles"}, where)
    if data.get("otakit_keys") != FORMAT_VERSION:
        raise UsageError(
            f'{where}: expected "otakit_keys": {FORMAT_VERSION}, found {data.get("otakit_keys")!r}'
        )
    roles_raw = data.get("roles")
    if not isinstance(roles_raw, dict):
        raise UsageError(f"{where}: 'roles' must be an object, found {roles_raw!r}")
    missing = [r for r in TOP_LEVEL_ROLES if r not in roles_raw]
    extra = sorted(set(roles_raw) - set(TOP_LEVEL_ROLES))
    if missing or extra:
        raise UsageError(
            f"{where}: expected roles {list(TOP_LEVEL_ROLES)}, "
            f"missing {missing}, unexpected {extra}"
        )
    base_dir = source.parent.resolve()
    roles = {
        name: _parse_role(roles_raw[name], f"{where}: roles.{name}", base_dir)
        for name in TOP_LEVEL_ROLES
    }
    return KeyConfig(source=source, roles=roles)


def _parse_role(data: Any, where: str, base_dir: Path) -> RoleKeys:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected an object, found {type(data).__name__}")
    _only_keys(data, {"threshold", "keys"}, where)
    keys_raw = data.get("keys")
    if not isinstance(keys_raw, list) or not (0 < len(keys_raw) <= _MAX_KEYS_PER_ROLE):
        raise UsageError(
            f"{where}.keys: expected a list of 1..{_MAX_KEYS_PER_ROLE} keys, found {keys_raw!r}"
        )
    keys = tuple(_parse_key(k, f"{where}.keys[{i}]", base_dir) for i, k in enumerate(keys_raw))
    seen: set[str] = set()
    for k in keys:
        if k.keyid in seen:
            raise UsageError(
                f"{where}: key {k.keyid[:16]} is listed twice; each key counts once "
                "toward the threshold, so a duplicate would only hide a missing key"
            )
        seen.add(k.keyid)
    threshold = data.get("threshold")
    if (
        not isinstance(threshold, int)
        or isinstance(threshold, bool)
        or not (1 <= threshold <= len(keys))
    ):
        raise UsageError(
            f"{where}.threshold: expected an integer in 1..{len(keys)} (the number of keys), "
            f"found {threshold!r}"
        )
    return RoleKeys(threshold=threshold, keys=keys)


def _parse_key(data: Any, where: str, base_dir: Path) -> KeyRef:
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected an object, found {type(data).__name__}")
    _only_keys(data, {"public", "uri", "secret_env"}, where)
    public_raw = data.get("public")
    if not isinstance(public_raw, dict):
        raise UsageError(f"{where}.public: expected a key object, found {public_raw!r}")
    for field in ("keytype", "scheme", "keyval"):
        if field not in public_raw:
            raise UsageError(f"{where}.public: missing {field!r}")
    computed = default_keyid(public_raw)
    given = public_raw.get("keyid", computed)
    if given != computed:
        raise UsageError(
            f"{where}.public.keyid: expected {computed} (sha256 of the canonical key), "
            f"found {given!r}"
        )
    body = {k: v for k, v in public_raw.items() if k != "keyid"}
    try:
        public = Key.from_dict(computed, body)
    except Exception as e:  # securesystemslib raises several types for bad key dicts
        raise UsageError(f"{where}.public: not a valid public key: {e}") from e
    uri = data.get("uri")
    if not isinstance(uri, str) or ":" not in uri:
        raise UsageError(
            f"{where}.uri: expected a signer URI such as 'file2:root-1.pem' or 'hsm:2', "
            f"found {uri!r}"
        )
    secret_env = data.get("secret_env")
    if secret_env is not None and (
        not isinstance(secret_env, str) or not ENV_NAME_RE.match(secret_env)
    ):
        raise UsageError(
            f"{where}.secret_env: expected an environment variable name, found {secret_env!r}"
        )
    return KeyRef(public=public, uri=_anchor_uri(uri, base_dir, where), secret_env=secret_env)


def _anchor_uri(uri: str, base_dir: Path, where: str) -> str:
    scheme, _, rest = uri.partition(":")
    if scheme != "file2":
        return uri
    if not rest:
        raise UsageError(f"{where}.uri: 'file2:' needs a path, found {uri!r}")
    path = Path(rest)
    return f"file2:{path if path.is_absolute() else base_dir / path}"


def _only_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(data) - allowed
    if extra:
        raise UsageError(f"{where}: unexpected keys {sorted(extra)}, allowed {sorted(allowed)}")


# --- resolving signers -----------------------------------------------------------------------

SECRET_ENV_PREFIX = "OTAKIT_SECRET_"  # noqa: S105 (a name prefix, not a secret)

PromptFn = Callable[[str], str]


class KeySecrets:
    """The secrets handler of one key: its ``secret_env``, then ``OTAKIT_SECRET_<NAME>``, then
    a prompt (only if one is given, i.e. interactive use).

    It remembers where the last secret came from (``source``: a variable's name or "the
    prompt", never the value), so a wrong passphrase or PIN can be reported as "the one in
    ``$NAME``" rather than "the one given".
    """

    def __init__(
        self, key: KeyRef, role: str, env: Mapping[str, str], prompt: PromptFn | None
    ) -> None:
        self._key, self._role, self._env, self._prompt = key, role, env, prompt
        self.source: str | None = None

    def __call__(self, secret: str) -> str:
        key = self._key
        names: list[str] = [key.secret_env] if key.secret_env else []
        names.append(SECRET_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", secret.upper()))
        for name in names:
            value = self._env.get(name)
            if value:
                self.source = f"the environment variable {name}"
                return value
        if self._prompt is not None:
            self.source = "the prompt"
            return self._prompt(
                f"{secret} for {self._role} key {key.keyid[:12]} ({_redact(key.uri)}): "
            )
        raise LocalError(
            f"{self._role} key {key.keyid[:12]} ({_redact(key.uri)}) needs a {secret}: "
            f"expected it in the environment variable {' or '.join(names)}, found none set "
            "(and no terminal to ask on)",
            hint=f"export {names[0]}=... or run on a terminal to be prompted (secrets are "
            "never taken from the command line)",
        )


def secrets_from_env(
    key: KeyRef,
    role: str,
    env: Mapping[str, str],
    prompt: PromptFn | None,
) -> KeySecrets:
    """The secrets handler for ``key`` (see ``KeySecrets``)."""
    return KeySecrets(key, role, env, prompt)


def tty_prompt() -> PromptFn | None:
    """``getpass`` when stdin is a terminal, else ``None`` (a pipeline must use the env)."""
    return getpass.getpass if sys.stdin.isatty() else None


def load_signers(
    config: KeyConfig,
    role: str,
    *,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> list[Signer]:
    """Resolve every key of ``role`` to a signer; fail naming the key that cannot be loaded."""
    env = os.environ if env is None else env
    return [_load_one(key, role, env, prompt) for key in config.role(role).keys]


def load_available_signers(
    config: KeyConfig,
    role: str,
    *,
    env: Mapping[str, str] | None = None,
    prompt: PromptFn | None = None,
) -> tuple[list[Signer], list[str]]:
    """The signers of ``role`` that can be loaded, and why each other one cannot.

    For keys that are *nice to have*: a rotation co-signs with the old online keys when they
    are still at hand, and must still work when one of them is lost.
    """
    env = os.environ if env is None else env
    signers: list[Signer] = []
    problems: list[str] = []
    for key in config.role(role).keys:
        try:
            signers.append(_load_one(key, role, env, prompt))
        except OtakitError as e:
            problems.append(e.message)
    return signers, problems


def _load_one(key: KeyRef, role: str, env: Mapping[str, str], prompt: PromptFn | None) -> Signer:
    what = f"{role} key {key.keyid[:12]}"
    secrets = secrets_from_env(key, role, env, prompt)
    scheme, _, rest = key.uri.partition(":")
    if scheme == "file2":
        try:
            pem = Path(rest).read_bytes()
        except OSError as e:
            raise LocalError(
                f"{what}: expected its private key in {rest}, found "
                f"{'no such file' if isinstance(e, FileNotFoundError) else e.strerror or e}",
                hint="restore the key file (or mount the medium holding it), or fix this "
                "key's uri in the key configuration",
            ) from e
        return pem_signer(pem, key.public, f"{what} ({rest})", secrets)
    if scheme not in SIGNER_FOR_URI_SCHEME:
        raise UsageError(
            f"{what}: unknown signer URI scheme {scheme!r} in {_redact(key.uri)}; expected "
            f"one of {', '.join(sorted(SIGNER_FOR_URI_SCHEME))}",
            hint="fix this key's uri in the key configuration (see docs/REPOSITORY.md)",
        )
    try:
        return Signer.from_priv_key_uri(key.uri, key.public, secrets)
    except OtakitError:
        raise
    except Exception as e:  # every signer backend raises its own types
        if isinstance(e.__cause__, OtakitError):
            raise e.__cause__ from None
        raise KeyConfigError(
            f"cannot load {what} from {_redact(key.uri)}: {e or 'no reason given'}",
            hint="check the URI in the key configuration, that its backend (HSM, KMS) is "
            "reachable, and that the key there is the configured public key's other half",
        ) from e


def _redact(uri: str) -> str:
    """A URI safe to print: scheme and path only, never query values (which may hold PINs)."""
    parsed = urlparse(uri)
    if parsed.query:
        return uri.split("?", 1)[0] + "?…"
    return uri


# --- the keys of one delegated role ----------------------------------------------------------

ROLE_KEYS_FORMAT_VERSION = 1


def load_role_keys(path: Path, role: str) -> KeyConfig:
    """Read the key file of one delegated role (a product's CI keys, ``otakit repo delegate``).

    Format, one role and nothing else, so a product team's file can never name the
    repository's own keys::

        {"otakit_role_keys": 1, "threshold": 1, "keys": [{"public": KEY, "uri": "..."}]}

    Each entry is as in ``keys.json``. Returned as a ``KeyConfig`` holding just ``role``, so
    ``load_signers(config, role)`` resolves its signers like any other role's.
    """
    data = _read_json(
        path,
        "role key file",
        "pass --product-keys pointing at the product's key file (docs/REPOSITORY.md)",
    )
    where = str(path)
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a JSON object, found {type(data).__name__}")
    _only_keys(data, {"otakit_role_keys", "threshold", "keys"}, where)
    if data.get("otakit_role_keys") != ROLE_KEYS_FORMAT_VERSION:
        raise UsageError(
            f'{where}: expected "otakit_role_keys": {ROLE_KEYS_FORMAT_VERSION}, found '
            f"{data.get('otakit_role_keys')!r}"
        )
    body = {k: v for k, v in data.items() if k != "otakit_role_keys"}
    keys = _parse_role(body, where, path.parent.resolve())
    return KeyConfig(source=path, roles={role: keys})


def load_product_keys(specs: Sequence[str]) -> dict[str, KeyConfig]:
    """``PRODUCT=ROLEKEYS`` pairs (``otakit repo prune --product-keys``) read with
    ``load_role_keys``: a command touching several delegated products names each one's file."""
    out: dict[str, KeyConfig] = {}
    for spec in specs:
        product, sep, path = spec.partition("=")
        if not sep or not product or not path:
            raise UsageError(f"--product-keys: expected PRODUCT=ROLEKEYS, found {spec!r}")
        if product in out:
            raise UsageError(f"--product-keys: {product} given twice")
        out[product] = load_role_keys(Path(path), product)
    return out
