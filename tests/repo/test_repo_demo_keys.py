"""The public demo keys: derived from a public seed (so always recognisable), and loud on
every publisher command that signs with them or verifies a root that lists them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Root

from repo.demo_warnings import demo_key_warnings
from repo.keys import KeyConfig, load_key_config
from repo.repository import load_role_signers
from repo.roles import TOP_LEVEL_ROLES
from signer.cli import main
from signer.keygen import generate_demo_keys, generate_key_set
from verifier.demokeys import DEMO_KEY_IDS

KEYS_EXAMPLE = Path(__file__).resolve().parents[2] / "keys-example"


def random_key(_role: str, _index: int) -> Ed25519PrivateKey:
    """A key factory for key sets that must *not* be the demo keys."""
    return Ed25519PrivateKey.generate()


def _ids(conf: KeyConfig) -> dict[str, str]:
    return {k.keyid: role for role in TOP_LEVEL_ROLES for k in conf.role(role).keys}


def test_keys_example_is_exactly_the_known_demo_key_set() -> None:
    assert _ids(load_key_config(KEYS_EXAMPLE / "keys.json")) == DEMO_KEY_IDS


def test_generate_demo_reproduces_keys_example_byte_for_byte(tmp_path: Path) -> None:
    conf = generate_demo_keys(tmp_path / "k")
    assert _ids(conf) == DEMO_KEY_IDS
    for f in [*sorted(KEYS_EXAMPLE.glob("*.pem")), KEYS_EXAMPLE / "keys.json"]:
        assert (tmp_path / "k" / f.name).read_bytes() == f.read_bytes(), f.name


def test_the_derivation_is_the_documented_one() -> None:
    """sha256("otakit public demo key/<role>/<n>") is the ed25519 seed (keys-example/README)."""
    seed = hashlib.sha256(b"otakit public demo key/root/1").digest()
    signer = CryptoSigner(Ed25519PrivateKey.from_private_bytes(seed))
    assert DEMO_KEY_IDS[signer.public_key.keyid] == "root"
    assert signer.private_bytes == (KEYS_EXAMPLE / "root-1.pem").read_bytes()


def test_a_random_key_set_is_not_taken_for_demo_keys(tmp_path: Path) -> None:
    conf = generate_key_set(tmp_path, random_key)
    assert not set(_ids(conf)) & set(DEMO_KEY_IDS)
    signers = load_role_signers(conf, TOP_LEVEL_ROLES)
    assert demo_key_warnings(signers=[signers]) == ()


def test_warnings_name_roles_and_do_not_repeat_keys_the_root_already_lists(
    tmp_path: Path,
) -> None:
    demo = load_key_config(KEYS_EXAMPLE / "keys.json")
    signers = load_role_signers(demo, ("targets",))
    root = Root()
    for s in load_role_signers(demo, ("root",))["root"]:
        root.add_key(s.public_key, "root")
    w_root, w_sign = demo_key_warnings(root=root, repo="/srv/r", signers=[signers])
    assert w_root.roles == ("root",) and len(w_root.keyids) == 2
    assert w_root.message().startswith("repository /srv/r (root v1) uses PUBLIC demo keys")
    assert w_sign.roles == ("targets",) and w_sign.to_json()["kind"] == "demo-keys"
    (only_root,) = demo_key_warnings(root=root, signers=[load_role_signers(demo, ("root",))])
    assert only_root.subject == "root v1"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    _, err = capsys.readouterr()
    assert exc.value.code in (0, None), err
    return err


def _demo_lines(err: str) -> int:
    """What the user sees: one 'otakit: WARNING:' line per demo-key warning on stderr."""
    return sum(
        ln.startswith("otakit: WARNING: ") and "PUBLIC demo keys" in ln for ln in err.splitlines()
    )


COMMANDS = (
    "repo init", "release", "repo list", "repo status", "repo refresh", "rotate-root",
    "rollout status", "rollout halt",
)  # fmt: skip


def _warned_per_command(
    keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> dict[str, int]:
    repo = str(tmp_path / "repo")
    img = tmp_path / "img"
    img.write_bytes(os.urandom(50_000) + bytes(200_000))
    k = str(keys)
    argvs = {
        "repo init": ["repo", "init", repo, "--keys", k],
        "release": [
            "release",
            repo,
            str(img),
            "--keys",
            k,
            "--product",
            "p",
            "--version",
            "1",
            "--deltas",
            "0",
            "--image-type",
            "raw",
        ],
        "repo list": ["repo", "list", repo],
        "repo status": ["repo", "status", repo],
        "repo refresh": ["repo", "refresh", repo, "--keys", k],
        "rotate-root": ["repo", "rotate-root", repo, "--old-keys", k, "--new-keys", k],
        "rollout status": ["rollout", "status", repo, "p", "1"],
        "rollout halt": ["rollout", "halt", repo, "p", "1", "--keys", k],
    }
    counts = {name: _demo_lines(_cli(capsys, *argvs[name])) for name in COMMANDS}
    # every use, not once per process; and under --json the warning is in the result too
    with pytest.raises(SystemExit):
        main(["--json", *argvs["repo status"]])
    out, err = capsys.readouterr()
    counts["repo status again"] = _demo_lines(err)
    counts["json"] = sum("PUBLIC demo keys" in str(w) for w in json.loads(out).get("warnings", []))
    return counts


def test_every_publisher_command_warns_on_demo_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    counts = _warned_per_command(KEYS_EXAMPLE / "keys.json", tmp_path, capsys, caplog)
    assert all(n >= 1 for n in counts.values()), counts


def test_no_publisher_command_warns_on_other_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    conf = generate_key_set(tmp_path / "keys", random_key)
    counts = _warned_per_command(conf.source, tmp_path, capsys, caplog)
    assert counts == dict.fromkeys([*COMMANDS, "repo status again", "json"], 0)
    assert json.loads(conf.source.read_text())["otakit_keys"] == 1
