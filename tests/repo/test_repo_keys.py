"""Key configuration: strict parsing, keys by reference, secrets never from argv."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from repo.errors import KeyConfigError, LocalError, UsageError
from repo.keys import (
    KeyConfig,
    load_key_config,
    load_signers,
    parse_key_config,
    secrets_from_env,
)


def _doc(keys: KeyConfig) -> dict[str, Any]:
    return json.loads(keys.source.read_text())


def test_demo_config_loads_and_every_key_signs(keys: KeyConfig) -> None:
    assert keys.role("root").threshold == 2 and len(keys.role("root").keys) == 2
    for role in ("root", "targets", "snapshot", "timestamp"):
        for signer in load_signers(keys, role):
            sig = signer.sign(b"payload")
            signer.public_key.verify_signature(sig, b"payload")


def test_relative_file2_uris_resolve_against_the_config_directory(
    keys: KeyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = tmp_path / "elsewhere" / "keys"
    shutil.copytree(keys.source.parent, moved)
    monkeypatch.chdir(tmp_path)  # a cwd unrelated to the key directory
    conf = load_key_config(Path("elsewhere/keys/keys.json"))
    uri = conf.role("targets").keys[0].uri
    assert uri == f"file2:{moved.resolve()}/targets-1.pem"
    assert len(load_signers(conf, "targets")) == 1


def _mutate(keys: KeyConfig, fn: Any) -> Any:
    doc = copy.deepcopy(_doc(keys))
    fn(doc)
    return doc


def _set(path: list[Any], value: Any) -> Any:
    def fn(doc: Any) -> None:
        for p in path[:-1]:
            doc = doc[p]
        if value is _DELETE:
            del doc[path[-1]]
        else:
            doc[path[-1]] = value

    return fn


_DELETE = object()
T0 = ["roles", "targets"]
K0 = [*T0, "keys", 0]

BAD_CONFIGS = {
    "roles not an object": (_set(["roles"], []), "'roles' must be an object"),
    "unknown format version": (_set(["otakit_keys"], 2), '"otakit_keys": 1'),
    "missing role": (_set(["roles", "snapshot"], _DELETE), "missing ['snapshot']"),
    "unexpected role": (_set(["roles", "bins"], {}), "unexpected ['bins']"),
    "unexpected field": (_set([*T0, "thresh"], 1), "unexpected keys ['thresh']"),
    "threshold zero": (_set([*T0, "threshold"], 0), "threshold: expected an integer in 1..1"),
    "threshold above key count": (_set([*T0, "threshold"], 2), "found 2"),
    "threshold is a bool": (_set([*T0, "threshold"], True), "found True"),
    "no keys": (_set([*T0, "keys"], []), "expected a list of 1..64 keys"),
    "keyid does not match key": (_set([*K0, "public", "keyid"], "ab" * 32), "keyid: expected"),
    "public key missing keyval": (_set([*K0, "public", "keyval"], _DELETE), "missing 'keyval'"),
    "uri missing": (_set([*K0, "uri"], _DELETE), "uri: expected a signer URI"),
    "file2 without a path": (_set([*K0, "uri"], "file2:"), "'file2:' needs a path"),
    "secret_env not an env name": (_set([*K0, "secret_env"], "pin; rm"), "secret_env"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configuration_is_refused_with_a_clear_error(keys: KeyConfig, case: str) -> None:
    fn, expected = BAD_CONFIGS[case]
    with pytest.raises(UsageError) as exc:  # exit 2: fix the file
        parse_key_config(_mutate(keys, fn), keys.source)
    assert expected in exc.value.message
    assert exc.value.exit_code == 2


def test_a_key_listed_twice_is_refused(keys: KeyConfig) -> None:
    doc = _doc(keys)
    doc["roles"]["root"]["keys"][1] = doc["roles"]["root"]["keys"][0]
    with pytest.raises(UsageError, match="listed twice"):
        parse_key_config(doc, keys.source)


def test_a_document_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected a JSON object, found list"):
        parse_key_config([], tmp_path / "keys.json")


def test_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="cannot read key configuration"):
        load_key_config(tmp_path / "missing.json")
    bad = tmp_path / "keys.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="expected JSON"):
        load_key_config(bad)


def test_a_private_key_that_does_not_match_its_public_key_is_refused(keys: KeyConfig) -> None:
    doc = _doc(keys)
    # targets' public key, snapshot's private key file
    doc["roles"]["targets"]["keys"][0]["uri"] = "file2:snapshot-1.pem"
    conf = parse_key_config(doc, keys.source)
    targets_id = keys.role("targets").keys[0].keyid[:12]
    snapshot_id = keys.role("snapshot").keys[0].keyid[:12]
    with pytest.raises(KeyConfigError) as exc:  # security (exit 3): the wrong key
        load_signers(conf, "targets")
    assert exc.value.exit_code == 3
    assert exc.value.message == (
        f"targets key {targets_id} ({keys.source.parent.resolve()}/snapshot-1.pem): expected "
        f"the private half of the configured public key {targets_id}, found the private half "
        f"of key {snapshot_id}"
    )
    assert "Mismatch" not in exc.value.diagnostic()


def test_missing_private_key_file_names_the_key(keys: KeyConfig) -> None:
    doc = _doc(keys)
    doc["roles"]["targets"]["keys"][0]["uri"] = "file2:nope.pem"
    conf = parse_key_config(doc, keys.source)
    with pytest.raises(LocalError) as exc:  # exit 5: restore the file, not a security alarm
        load_signers(conf, "targets")
    assert exc.value.exit_code == 5
    assert re.fullmatch(
        r"targets key [0-9a-f]{12}: expected its private key in /\S+/nope\.pem, found no such "
        r"file",
        exc.value.message,
    ), exc.value.message
    assert "restore the key file" in (exc.value.hint or "")


def test_secrets_come_from_env_then_prompt_and_never_silently_empty(keys: KeyConfig) -> None:
    key = keys.role("targets").keys[0]
    handler = secrets_from_env(key, "targets", {"OTAKIT_SECRET_PIN": "1234"}, None)
    assert handler("pin") == "1234"
    prompts: list[str] = []
    handler = secrets_from_env(key, "targets", {}, lambda p: prompts.append(p) or "9999")
    assert handler("pin") == "9999"
    assert "targets key" in prompts[0]
    with pytest.raises(LocalError, match="OTAKIT_SECRET_PIN"):
        secrets_from_env(key, "targets", {}, None)("pin")


def test_per_key_secret_env_takes_precedence(keys: KeyConfig) -> None:
    doc = _doc(keys)
    doc["roles"]["targets"]["keys"][0]["secret_env"] = "HSM_TARGETS_PIN"
    key = parse_key_config(doc, keys.source).role("targets").keys[0]
    env = {"HSM_TARGETS_PIN": "a", "OTAKIT_SECRET_PIN": "b"}
    assert secrets_from_env(key, "targets", env, None)("pin") == "a"


def test_an_unknown_signer_scheme_names_the_uri(keys: KeyConfig) -> None:
    doc = _doc(keys)
    doc["roles"]["timestamp"]["keys"][0]["uri"] = "nosuchkms:projects/x/keys/y"
    conf = parse_key_config(doc, keys.source)
    with pytest.raises(UsageError, match="unknown signer URI scheme 'nosuchkms' in nosuchkms:pro"):
        load_signers(conf, "timestamp", env={})


def test_uri_query_values_are_not_printed(keys: KeyConfig) -> None:
    doc = _doc(keys)
    doc["roles"]["timestamp"]["keys"][0]["uri"] = "nosuchkms:k?pin-value=hunter2"
    conf = parse_key_config(doc, keys.source)
    with pytest.raises(UsageError) as exc:
        load_signers(conf, "timestamp", env={})
    assert "hunter2" not in exc.value.diagnostic()


def test_envvar_uris_read_the_private_key_from_the_environment(
    keys: KeyConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _doc(keys)
    pem = (keys.source.parent / "timestamp-1.pem").read_text()
    doc["roles"]["timestamp"]["keys"][0]["uri"] = "envvar:OTAKIT_TEST_TS_KEY"
    conf = parse_key_config(doc, keys.source)
    monkeypatch.delenv("OTAKIT_TEST_TS_KEY", raising=False)
    with pytest.raises(LocalError, match="environment variable OTAKIT_TEST_TS_KEY, found it not"):
        load_signers(conf, "timestamp")
    monkeypatch.setenv("OTAKIT_TEST_TS_KEY", pem)
    (signer,) = load_signers(conf, "timestamp")
    signer.public_key.verify_signature(signer.sign(b"x"), b"x")
    # a key that does not match its public half is refused
    monkeypatch.setenv("OTAKIT_TEST_TS_KEY", (keys.source.parent / "root-1.pem").read_text())
    with pytest.raises(KeyConfigError, match="expected the private half of the configured"):
        load_signers(conf, "timestamp")


# --- PEM keys: encrypted, unparsable, wrong passphrase ----------------------------------------

PASS_ENV = "OTAKIT_TEST_TARGETS_PASS"


def _encrypted_targets(keys: KeyConfig, tmp_path: Path, passphrase: bytes) -> KeyConfig:
    """The demo configuration with the targets key re-written as a passphrase-protected PEM."""
    plain = (keys.source.parent / "targets-1.pem").read_bytes()
    key = serialization.load_pem_private_key(plain, None)
    (tmp_path / "targets-enc.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
    )
    doc = _doc(keys)
    doc["roles"]["targets"]["keys"][0]["uri"] = f"file2:{tmp_path / 'targets-enc.pem'}"
    doc["roles"]["targets"]["keys"][0]["secret_env"] = PASS_ENV
    return parse_key_config(doc, keys.source)


def test_an_encrypted_pem_key_signs_with_the_passphrase_from_its_secret_env(
    keys: KeyConfig, tmp_path: Path
) -> None:
    conf = _encrypted_targets(keys, tmp_path, b"correct horse")
    (signer,) = load_signers(conf, "targets", env={PASS_ENV: "correct horse"})
    signer.public_key.verify_signature(signer.sign(b"x"), b"x")
    assert signer.public_key.keyid == keys.role("targets").keys[0].keyid


def test_an_encrypted_pem_key_asks_on_a_terminal(keys: KeyConfig, tmp_path: Path) -> None:
    conf = _encrypted_targets(keys, tmp_path, b"correct horse")
    prompts: list[str] = []
    (signer,) = load_signers(
        conf, "targets", env={}, prompt=lambda p: prompts.append(p) or "correct horse"
    )
    assert prompts and prompts[0].startswith("passphrase for targets key ")
    signer.public_key.verify_signature(signer.sign(b"x"), b"x")


def test_an_encrypted_pem_key_without_passphrase_or_terminal_names_the_variable(
    keys: KeyConfig, tmp_path: Path
) -> None:
    conf = _encrypted_targets(keys, tmp_path, b"correct horse")
    with pytest.raises(LocalError) as exc:
        load_signers(conf, "targets", env={}, prompt=None)
    msg = exc.value.diagnostic()
    assert "needs a passphrase" in msg
    assert f"{PASS_ENV} or OTAKIT_SECRET_PASSPHRASE" in msg
    assert f"export {PASS_ENV}=" in msg
    assert "Password" not in msg and "TypeError" not in msg


def test_a_wrong_passphrase_is_said_in_plain_words(keys: KeyConfig, tmp_path: Path) -> None:
    conf = _encrypted_targets(keys, tmp_path, b"correct horse")
    with pytest.raises(LocalError, match="did not decrypt with the passphrase given: wrong") as e:
        load_signers(conf, "targets", env={PASS_ENV: "battery staple"})
    assert "ValueError" not in e.value.diagnostic()
    assert "battery staple" not in e.value.diagnostic()


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "found an empty file"),
        (b"not a key at all\n", "found 17 bytes that are not PEM"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PUBLIC KEY"),
    ],
)
def test_a_file_that_is_not_a_pem_private_key_is_named(
    keys: KeyConfig, tmp_path: Path, content: bytes, found: str
) -> None:
    (tmp_path / "bad.pem").write_bytes(content)
    doc = _doc(keys)
    doc["roles"]["targets"]["keys"][0]["uri"] = f"file2:{tmp_path / 'bad.pem'}"
    conf = parse_key_config(doc, keys.source)
    with pytest.raises(LocalError) as exc:
        load_signers(conf, "targets")
    assert "expected a PEM private key" in exc.value.message
    assert found in exc.value.message
    assert "Unable to load PEM" not in exc.value.diagnostic()
