"""A ceremony signed with a key that never leaves a (Soft)HSM: ``repo sign --key hsm:…``.

The URI names only the private key, so ``repo sign`` finds which listed public key it is by
a signature that verifies (``repo.ceremony.load_key_signer``); the PIN comes from the
variable ``--secret-env`` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from repo.ceremony import publish_file, sign_file, stage_file
from repo.keys import KeyConfig
from tests.helpers_repo import LIVE_CONTENT, LIVE_PATH, NOW, client_view, root_bytes
from tests.repo.test_repo_rotate import mix
from tests.signer.test_hsm import PIN, softhsm_token

__all__ = ["softhsm_token"]
pytestmark = pytest.mark.integration


def test_a_targets_key_moved_onto_an_hsm_through_a_ceremony(
    softhsm_token: str, live: Path, keys: KeyConfig, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from securesystemslib.signer import HSMSigner

    hsm_uri, public = HSMSigner.import_(2, "otakit-test", lambda _secret: PIN)
    targets: dict[str, Any] = {
        "threshold": 1,
        "keys": [{"public": public.to_dict(), "uri": hsm_uri, "secret_env": "TEST_PIN"}],
    }
    new = mix(keys, tmp_path / "new" / "keys.json", targets=targets)
    staged = tmp_path / "change.json"
    stage_file(live, "root", staged, NOW, keys=new)
    for k in keys.role("root").keys:
        sign_file(staged, k.uri)
    monkeypatch.setenv("TEST_PIN", PIN)
    outcome = sign_file(staged, hsm_uri, secret_env="TEST_PIN")
    assert (outcome.keyid, outcome.signed) == (public.keyid, ("targets v3",))
    assert sign_file(staged, hsm_uri, secret_env="TEST_PIN").signed == ()  # idempotent
    result = publish_file(staged, live, [new], NOW)
    assert result.versions["root"] == 2
    assert client_view(live, tmp_path / "client", root_bytes(live)) == {LIVE_PATH: LIVE_CONTENT}
