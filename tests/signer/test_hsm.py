"""PKCS#11: the targets role signed by a key that never leaves a (Soft)HSM.

The key is generated on a fresh SoftHSM2 token, referenced from the key configuration by an
``hsm:`` URI with its PIN taken from the environment, and the repository it signs is then
verified by python-tuf's client: keys by reference work end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from repo.keys import KeyConfig, parse_key_config
from repo.repository import init
from signer.release import release
from tests.helpers_repo import NOW, client_view, root_bytes

pytestmark = pytest.mark.integration

SOFTHSM_LIBS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
PIN = "4321"


def _need(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} missing — CI must run every integration test")
    pytest.skip(f"{what} missing")


@pytest.fixture
def softhsm_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_tool: Callable[[str], str]
) -> str:
    """A fresh SoftHSM2 token with an EC P-256 key pair at id 2; returns the module path."""
    softhsm_util = require_tool("softhsm2-util")
    pkcs11_tool = require_tool("pkcs11-tool")
    module = next((p for p in SOFTHSM_LIBS if os.path.exists(p)), None)
    _need(module is not None, "libsofthsm2.so")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        _need(False, "python-pkcs11 (pip install 'securesystemslib[hsm]')")
    assert module is not None
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv("PYKCS11LIB", module)
    subprocess.run(
        [softhsm_util, "--init-token", "--free", "--label", "otakit-test",
         "--so-pin", "12345678", "--pin", PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [pkcs11_tool, "--module", module, "--token-label", "otakit-test", "--login",
         "--pin", PIN, "--keypairgen", "--key-type", "EC:prime256v1", "--id", "02",
         "--label", "targets"],
        check=True, capture_output=True,
    )  # fmt: skip
    return module


def test_targets_signed_on_an_hsm_verify_with_a_tuf_client(
    softhsm_token: str,
    keys: KeyConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from securesystemslib.signer import HSMSigner

    uri, public = HSMSigner.import_(2, "otakit-test", lambda _secret: PIN)
    assert uri.startswith("hsm:2")
    doc = json.loads(keys.source.read_text())
    doc["roles"]["targets"]["keys"] = [
        {"public": public.to_dict(), "uri": uri, "secret_env": "OTAKIT_TEST_HSM_PIN"}
    ]
    conf = parse_key_config(doc, keys.source)
    monkeypatch.setenv("OTAKIT_TEST_HSM_PIN", PIN)

    repo = tmp_path / "repo"
    init(repo, conf, NOW)
    img = tmp_path / "img"
    img.write_bytes(os.urandom(4096) * 16)
    res = release(repo, conf, "edge-gw", "1.0", img, ["rpi4"], NOW, image_type="raw")

    targets = json.loads((repo / "metadata" / "2.targets.json").read_bytes())
    assert [s["keyid"] for s in targets["signatures"]] == [public.keyid]
    view = client_view(repo, tmp_path / "client", root_bytes(repo))
    assert list(view) == [res.artifacts[0].target_path]


def test_a_missing_hsm_pin_is_explained_and_nothing_is_written(
    softhsm_token: str, keys: KeyConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from securesystemslib.signer import HSMSigner

    from repo.errors import LocalError

    uri, public = HSMSigner.import_(2, "otakit-test", lambda _secret: PIN)
    doc = json.loads(keys.source.read_text())
    doc["roles"]["targets"]["keys"] = [{"public": public.to_dict(), "uri": uri}]
    conf = parse_key_config(doc, keys.source)
    monkeypatch.delenv("OTAKIT_SECRET_PIN", raising=False)
    with pytest.raises(LocalError) as exc:
        init(tmp_path / "repo", conf, NOW)
    assert "export OTAKIT_SECRET_PIN=" in exc.value.diagnostic()
    assert not (tmp_path / "repo").exists()
