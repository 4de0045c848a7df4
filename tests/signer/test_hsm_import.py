"""``otakit keys import-hsm``: a key generated on a (Soft)HSM token that never leaves it.

The key pair is generated *on* a fresh SoftHSM2 token (sensitive, never extractable), found
by its label or an RFC 7512 URI, pasted into ``keys.json`` as printed, and then signs
``otakit repo init`` and ``otakit release``; the published metadata verifies. Every way an
import could register the wrong key or leak the PIN is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from repo.keys import KeyConfig
from repo.nginx import nginx_serving
from repo.state import load_state
from tests.cli.helpers_cli import command, env, run
from tests.signer.test_hsm import PIN, SOFTHSM_LIBS, _need

pytestmark = pytest.mark.integration

TOKEN = "otakit-ceremony"
PIN_ENV = "OTAKIT_TEST_TOKEN_PIN"

#: Run in a child process (a PKCS#11 module is initialised once per process, with the
#: SOFTHSM2_CONF of that moment): generate key pairs on the token, report their attributes.
_MAKE_KEYS = """
import json, os, sys
import pkcs11
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters

token = pkcs11.lib(os.environ["PYKCS11LIB"]).get_token(token_label=sys.argv[1])
never_leaves = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
report = {}
with token.open(rw=True, user_pin=sys.argv[2]) as s:
    ec = s.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
        local=True,
    )
    for label, key_id in (("targets-2026", b"\\x11"), ("twin-a", b"\\x33"), ("twin-b", b"\\x33")):
        _, priv = ec.generate_keypair(
            store=True, label=label, id=key_id, private_template=never_leaves
        )
        report[label] = {
            "sensitive": priv[Attribute.SENSITIVE],
            "extractable": priv[Attribute.EXTRACTABLE],
            "never_extractable": priv[Attribute.NEVER_EXTRACTABLE],
            "local": priv[Attribute.LOCAL],
        }
    s.generate_keypair(
        KeyType.RSA, 2048, store=True, label="rsa-key", id=b"\\x22",
        private_template=never_leaves,
    )
print(json.dumps(report))
"""


@pytest.fixture
def token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_tool: Callable[[str], str]
) -> dict[str, Any]:
    """A fresh SoftHSM2 token holding EC keys generated on it; returns their attributes."""
    softhsm_util = require_tool("softhsm2-util")
    module = next((p for p in SOFTHSM_LIBS if os.path.exists(p)), None)
    _need(module is not None, "libsofthsm2.so")
    assert module is not None
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv("PYKCS11LIB", module)
    subprocess.run(
        [softhsm_util, "--init-token", "--free", "--label", TOKEN,
         "--so-pin", "12345678", "--pin", PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    made = subprocess.run(
        [sys.executable, "-c", _MAKE_KEYS, TOKEN, PIN],
        check=True, capture_output=True, text=True, env={**os.environ},
    )  # fmt: skip
    report: dict[str, Any] = json.loads(made.stdout)
    return report


def _cli(*argv: str, pin: str | None = PIN) -> subprocess.CompletedProcess[str]:
    extra = {PIN_ENV: pin} if pin is not None else {}
    return subprocess.run(
        command("otakit", *argv),
        capture_output=True,
        text=True,
        env={**env(), **extra},
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _import(*argv: str, pin: str | None = PIN) -> subprocess.CompletedProcess[str]:
    return _cli("keys", "import-hsm", *argv, "--pin-env", PIN_ENV, "--json", pin=pin)


def test_a_key_generated_on_the_token_signs_init_and_release_and_the_metadata_verifies(
    token: dict[str, Any], keys: KeyConfig, tmp_path: Path, require_tool: Callable[[str], str]
) -> None:
    assert token["targets-2026"] == {
        "sensitive": True, "extractable": False, "never_extractable": True, "local": True,
    }  # fmt: skip
    r = _import("--token-label", TOKEN, "--key-label", "targets-2026")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["uri"] == f"hsm:17?label={TOKEN}" and doc["key_id"] == "11"
    entry = doc["entry"]
    assert entry == {"public": doc["public"], "uri": doc["uri"], "secret_env": PIN_ENV}
    assert entry["public"]["scheme"] == "ecdsa-sha2-nistp256"
    assert PIN not in r.stdout + r.stderr

    conf_doc = json.loads(keys.source.read_text())
    for role in conf_doc["roles"].values():
        for k in role["keys"]:
            k["uri"] = "file2:" + str(keys.source.parent / k["uri"].removeprefix("file2:"))
    conf_doc["roles"]["targets"]["keys"] = [entry]  # pasted as printed
    conf = tmp_path / "keys.json"
    conf.write_text(json.dumps(conf_doc))

    repo, img = tmp_path / "repo", tmp_path / "img"
    img.write_bytes(os.urandom(4096) * 4)
    for argv in (
        ("repo", "init", str(repo), "--keys", str(conf)),
        ("release", str(repo), str(img), "--keys", str(conf), "--product", "edge-gw",
         "--version", "1.0", "--image-type", "raw", "--deltas", "0"),
    ):  # fmt: skip
        r = _cli(*argv)
        assert r.returncode == 0, r.stderr
        assert PIN not in r.stdout + r.stderr
    state = load_state(repo)  # every signature verified from root v1
    assert state.targets.signed.version == 2
    for name in ("1.targets.json", "2.targets.json"):
        signed = json.loads((repo / "metadata" / name).read_text())
        assert [s["keyid"] for s in signed["signatures"]] == [doc["keyid"]]

    # a real device follows: on 1.0, it installs a 2.0 whose targets only the token signed
    img2 = tmp_path / "img2"
    img2.write_bytes(os.urandom(4096) * 4)
    r = _cli(
        "release", str(repo), str(img2), "--keys", str(conf), "--product", "edge-gw",
        "--version", "2.0", "--image-type", "raw",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    slot_a, slot_b, dev = tmp_path / "a.img", tmp_path / "b.img", str(tmp_path / "device")
    shutil.copyfile(img, slot_a)
    slot_b.write_bytes(bytes(slot_a.stat().st_size))
    with nginx_serving(require_tool("nginx"), repo, tmp_path / "nginx") as url:
        init = run(
            "otakit-device", "--state", dev, "init", "--repo-url", url,
            "--root", str(repo / "metadata" / "1.root.json"), "--product", "edge-gw",
            "--slot-a", str(slot_a), "--slot-b", str(slot_b), "--installed-version", "1.0",
        )  # fmt: skip
        assert init.returncode == 0, init.stderr
        up = run("otakit-device", "--state", dev, "update")
        assert up.returncode == 0, up.stderr
    assert slot_b.read_bytes() == img2.read_bytes()


def test_an_rfc7512_uri_names_the_same_key(token: dict[str, Any]) -> None:
    by_label = json.loads(_import("--token-label", TOKEN, "--key-label", "targets-2026").stdout)
    for uri in (
        f"pkcs11:token={TOKEN};object=targets-2026",
        f"pkcs11:token={TOKEN};id=%11;type=public",
        "pkcs11:object=targets-2026;type=private",  # the only token
    ):
        r = _import("--uri", uri)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["entry"] == by_label["entry"], uri


def test_a_wrong_pin_is_refused_and_never_shown(token: dict[str, Any]) -> None:
    r = _import("--token-label", TOKEN, "--key-label", "targets-2026", pin="000999")
    assert r.returncode == 5
    err = json.loads(r.stdout)["error"]
    assert "refused the PIN given (wrong PIN)" in err["message"]
    assert "000999" not in r.stdout + r.stderr


def test_no_pin_and_no_terminal_names_the_variable(token: dict[str, Any]) -> None:
    r = _import("--token-label", TOKEN, "--key-label", "targets-2026", pin=None)
    assert r.returncode == 5
    err = json.loads(r.stdout)["error"]
    assert f"expected it in {PIN_ENV} or OTAKIT_SECRET_PIN" in err["message"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--token-label", TOKEN, "--key-label", "nope"), "found 0; public keys on the token"),
        (("--token-label", "no-such-token", "--key-label", "targets-2026"), "found none"),
        (("--token-label", TOKEN, "--key-label", "rsa-key"), "expected an EC (P-256/P-384) key"),
        (("--token-label", TOKEN, "--key-label", "twin-a"), "expected one EC public key with id"),
    ],
    ids=["no-such-label", "no-such-token", "rsa-key", "id-shared-by-two-keys"],
)
def test_a_key_hsm_signing_would_not_find_is_refused(
    token: dict[str, Any], argv: tuple[str, ...], says: str
) -> None:
    r = _import(*argv)
    assert r.returncode in (2, 5), r.stderr
    assert says in json.loads(r.stdout)["error"]["message"]
    assert PIN not in r.stdout + r.stderr


def test_the_module_comes_from_pykcs11lib(
    token: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYKCS11LIB")
    r = _import("--token-label", TOKEN, "--key-label", "targets-2026")
    assert r.returncode == 5 and "PYKCS11LIB" in json.loads(r.stdout)["error"]["message"]


# --- the URI and the options, before any token is opened -----------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--uri", "pkcs11:token=t;object=k?pin-value=271828"), "a PIN is never taken"),
        (("--uri", "pkcs11:token=t;object=k?pin-source=file:/p"), "a PIN is never taken"),
        (("--uri", "pkcs11:token=t;object=k?module-path=/x.so"), "PYKCS11LIB"),
        (("--uri", "pkcs11:token=t;serial=42;object=k"), "found 'serial'"),
        (("--uri", "pkcs11:token=t"), "found neither"),
        (("--uri", "pkcs11:object=k;type=cert"), "expected type=public or type=private"),
        (("--uri", "hsm:2"), "expected a PKCS#11 URI"),
        (("--uri", "pkcs11:object=k", "--key-label", "k"), "found both"),
        (("--token-label", "t"), "found neither"),
        (("--key-label", "k", "--pin-env", "271828 secret"), "NAME of an environment variable"),
    ],
)
def test_bad_requests_are_refused_before_the_token_is_touched(
    argv: tuple[str, ...], says: str
) -> None:
    r = _cli("keys", "import-hsm", *argv, "--json")
    assert r.returncode == 2, r.stderr
    assert says in json.loads(r.stdout)["error"]["message"]
    assert "271828" not in r.stdout + r.stderr  # a PIN typed into the URI is not repeated
