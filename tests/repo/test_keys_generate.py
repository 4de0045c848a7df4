"""``otakit keys generate`` and passphrase-protected key files, as a release team uses them.

Each key type is generated, pasted into a key configuration and signs; an encrypted key made
with a passphrase from a named variable signs ``otakit repo init`` and ``otakit release``;
every way to get it wrong (wrong or missing passphrase, an existing file, a passphrase on the
command line, a short one) is refused with a message that names the key and the variable and
never contains the secret.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from repo.errors import LocalError, UsageError
from repo.keygen import KEY_SCHEMES, generate_key_file, new_passphrase
from repo.keys import KeyConfig, default_keyid, load_signers, parse_key_config
from repo.state import load_state
from tests.cli.helpers_cli import command, env

PASS = "correct horse battery staple"
PASS_ENV = "OTAKIT_TEST_NEWKEY_PASS"


def _cli(*argv: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command("otakit", *argv),
        capture_output=True,
        text=True,
        env={**env(), **(extra_env or {})},
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _with_targets_key(keys: KeyConfig, entry: dict[str, Any], dest: Path) -> Path:
    """The demo configuration with its targets key replaced by ``entry``, written to ``dest``."""
    doc = json.loads(keys.source.read_text())
    for role in doc["roles"].values():
        for k in role["keys"]:
            k["uri"] = "file2:" + str(keys.source.parent / k["uri"].removeprefix("file2:"))
    doc["roles"]["targets"]["keys"] = [entry]
    dest.write_text(json.dumps(doc))
    return dest


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert PASS not in text and PASS.replace(" ", "") not in text, text


# --- each type -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", list(KEY_SCHEMES))
def test_each_type_makes_a_key_file_the_key_configuration_loads_and_signs_with(
    key_type: str, keys: KeyConfig, tmp_path: Path
) -> None:
    key = generate_key_file(tmp_path / f"{key_type}.pem", key_type)
    assert key.public.scheme == KEY_SCHEMES[key_type]
    assert key.keyid == default_keyid(key.public.to_dict())  # the TUF key id
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert key.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    conf_file = _with_targets_key(keys, key.entry(), tmp_path / "keys.json")
    conf = parse_key_config(json.loads(conf_file.read_text()), conf_file)
    (signer,) = load_signers(conf, "targets", env={})
    assert signer.public_key.keyid == key.keyid
    signer.public_key.verify_signature(signer.sign(b"payload"), b"payload")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_rsa_keys_are_3072_bits_unless_asked(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = generate_key_file(tmp_path / "rsa.pem", "rsa-pss")
    assert load_pem_private_key(key.path.read_bytes(), None).key_size == 3072  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="--rsa-bits: expected one of"):
        generate_key_file(tmp_path / "weak.pem", "rsa-pss", rsa_bits=1024)
    assert not (tmp_path / "weak.pem").exists()


def test_an_unknown_type_is_refused(tmp_path: Path) -> None:
    r = _cli("keys", "generate", "--type", "dsa", "--out", str(tmp_path / "k.pem"))
    assert r.returncode == 2 and "expected one of ed25519, ecdsa-p256, rsa-pss" in r.stderr
    assert not (tmp_path / "k.pem").exists()


# --- the file: 0600, written once, never overwritten ----------------------------------------


def test_the_key_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key = generate_key_file(tmp_path / "k.pem", "ed25519")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "root-1.pem"
    existing.write_bytes(b"the only copy of an old key\n")
    r = _cli("keys", "generate", "--out", str(existing), "--json")
    assert r.returncode == 5, r.stderr
    err = json.loads(r.stdout)["error"]
    assert "expected a new file, found one already there" in err["message"]
    assert existing.read_bytes() == b"the only copy of an old key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root-1.pem"]


def test_a_symlink_planted_at_the_name_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pem"
    (tmp_path / "k.pem").symlink_to(target)  # dangling: "new" only if the link were followed
    with pytest.raises(LocalError, match="found one already there"):
        generate_key_file(tmp_path / "k.pem", "ed25519")
    assert not target.exists()


def test_a_missing_directory_is_said(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="expected an existing directory"):
        generate_key_file(tmp_path / "no" / "k.pem", "ed25519")


# --- encrypted keys --------------------------------------------------------------------------


def test_an_encrypted_key_from_a_named_variable_signs_repo_init_and_release(
    keys: KeyConfig, tmp_path: Path
) -> None:
    """Regression (issue 10, "passphrase-protected key files do not load"): the whole path a
    user takes, through the real CLI, with the key file made by ``keys generate``."""
    pem = tmp_path / "targets-1.pem"
    r = _cli(
        "keys", "generate", "--type", "ecdsa-p256", "--out", str(pem),
        "--passphrase-env", PASS_ENV, "--json", extra_env={PASS_ENV: PASS},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    _no_secret(r.stdout, r.stderr, pem.read_text())
    assert doc["encrypted"] is True and doc["entry"]["secret_env"] == PASS_ENV
    assert doc["entry"]["uri"] == f"file2:{pem}"
    assert pem.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    conf = _with_targets_key(keys, doc["entry"], tmp_path / "keys.json")

    repo, img = tmp_path / "repo", tmp_path / "img"
    img.write_bytes(os.urandom(8192))
    outputs = []
    for argv in (
        ("repo", "init", str(repo), "--keys", str(conf)),
        ("release", str(repo), str(img), "--keys", str(conf), "--product", "edge-gw",
         "--version", "1.0", "--image-type", "raw", "--deltas", "0", "--json"),
    ):  # fmt: skip
        r = _cli(*argv, extra_env={PASS_ENV: PASS})
        assert r.returncode == 0, r.stderr
        outputs += [r.stdout, r.stderr]
    _no_secret(*outputs)
    state = load_state(repo)  # every signature verified from root v1
    targets = json.loads((repo / "metadata" / "2.targets.json").read_text())
    assert [s["keyid"] for s in targets["signatures"]] == [doc["keyid"]]
    assert state.targets.signed.version == 2


def _encrypted_conf(keys: KeyConfig, tmp_path: Path) -> Path:
    key = generate_key_file(tmp_path / "t.pem", "ed25519", passphrase=PASS, secret_env=PASS_ENV)
    return _with_targets_key(keys, key.entry(), tmp_path / "keys.json")


def test_a_wrong_passphrase_names_the_key_and_the_variable_never_the_secret(
    keys: KeyConfig, tmp_path: Path
) -> None:
    conf = _encrypted_conf(keys, tmp_path)
    wrong = "tr0ub4dor&3-is-not-it"
    for extra in ((), ("--json",)):
        r = _cli("repo", "init", str(tmp_path / "repo"), "--keys", str(conf), *extra,
                 extra_env={PASS_ENV: wrong})  # fmt: skip
        assert r.returncode == 5, r.stderr
        said = r.stdout + r.stderr
        assert "targets key" in said and "wrong passphrase" in said
        assert f"the environment variable {PASS_ENV}" in said
        assert wrong not in said and "Traceback" not in said
        _no_secret(said)
    assert not (tmp_path / "repo").exists()  # nothing written


def test_a_missing_passphrase_names_the_variable_to_set(keys: KeyConfig, tmp_path: Path) -> None:
    conf = _encrypted_conf(keys, tmp_path)
    r = _cli("repo", "init", str(tmp_path / "repo"), "--keys", str(conf), "--json")
    assert r.returncode == 5
    err = json.loads(r.stdout)["error"]
    assert "needs a passphrase" in err["message"] and PASS_ENV in err["message"]
    assert f"export {PASS_ENV}=" in err["hint"]
    assert not (tmp_path / "repo").exists()


def test_the_encrypted_file_holds_neither_the_passphrase_nor_the_plain_key(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = generate_key_file(tmp_path / "k.pem", "ed25519", passphrase=PASS)
    data = key.path.read_bytes()
    assert PASS.encode() not in data
    with pytest.raises(TypeError):  # encrypted: no key without the passphrase
        load_pem_private_key(data, None)
    with pytest.raises(ValueError):
        load_pem_private_key(data, b"another passphrase!")


# --- the passphrase never travels on argv, and is strong enough ------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("--passphrase", PASS),
        (f"--passphrase={PASS}",),
        ("--password", PASS),
        ("--pin", PASS),
    ],
)
def test_there_is_no_option_that_takes_a_passphrase(argv: tuple[str, ...], tmp_path: Path) -> None:
    r = _cli("keys", "generate", "--out", str(tmp_path / "k.pem"), *argv)
    assert r.returncode == 2 and "No such option" in r.stderr
    assert not (tmp_path / "k.pem").exists()


def test_a_passphrase_given_where_its_variable_name_goes_is_refused_unrepeated(
    tmp_path: Path,
) -> None:
    for extra in ((), ("--json",)):
        r = _cli("keys", "generate", "--out", str(tmp_path / "k.pem"), "--passphrase-env", PASS,
                 *extra)  # fmt: skip
        assert r.returncode == 2
        assert "expected the NAME of an environment variable" in r.stdout + r.stderr
        _no_secret(r.stdout, r.stderr)
    assert not (tmp_path / "k.pem").exists()


def test_an_unset_or_short_passphrase_variable_is_refused(tmp_path: Path) -> None:
    out = str(tmp_path / "k.pem")
    r = _cli("keys", "generate", "--out", out, "--passphrase-env", "OTAKIT_TEST_UNSET_VAR")
    assert r.returncode == 5 and "found it not set or empty" in r.stderr
    r = _cli("keys", "generate", "--out", out, "--passphrase-env", PASS_ENV,
             extra_env={PASS_ENV: "short"})  # fmt: skip
    assert r.returncode == 2 and "expected at least 12 characters, found 5" in r.stderr
    assert "short" not in r.stderr.replace("shorter", "")
    assert not (tmp_path / "k.pem").exists()


def test_one_passphrase_source_and_a_prompt_needs_a_terminal() -> None:
    with pytest.raises(UsageError, match="found both"):
        new_passphrase(env_name=PASS_ENV, ask=True, env={PASS_ENV: PASS}, prompt=None)
    with pytest.raises(UsageError, match="expected a terminal"):
        new_passphrase(env_name=None, ask=True, env={}, prompt=None)
    answers = iter([PASS, PASS + "x"])
    with pytest.raises(UsageError, match="the two passphrases typed differ"):
        new_passphrase(env_name=None, ask=True, env={}, prompt=lambda _p: next(answers))
    assert new_passphrase(env_name=None, ask=True, env={}, prompt=lambda _p: PASS) == PASS
    assert new_passphrase(env_name=None, ask=False, env={}, prompt=None) is None


# --- on a real terminal ----------------------------------------------------------------------


class Terminal:
    """``otakit ARGV`` on a pseudo-terminal (getpass needs one): read what it shows, type."""

    def __init__(self, argv: list[str], extra_env: dict[str, str], cwd: Path) -> None:
        self.out = b""
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader whose controlling terminal is the pty
            os.chdir(cwd)
            os.execve(sys.executable, argv, {**env(), **extra_env})
        self.pid, self.fd = pid, fd

    def read_for(self, seconds: float) -> bytes:
        got, end = b"", time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        self.out += got
        return got

    def wait_for(self, text: bytes, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while text not in self.out and time.monotonic() < end:
            self.read_for(0.2)
        assert text in self.out, self.out.decode(errors="replace")[-2000:]

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def finish(self, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read_for(0.2)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.read_for(0.2)
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(self.out.decode(errors="replace")[-2000:])


def test_passphrase_prompt_asks_twice_on_a_terminal_and_the_key_signs(
    keys: KeyConfig, tmp_path: Path
) -> None:
    out = tmp_path / "k.pem"
    term = Terminal(command("otakit", "keys", "generate", "--out", str(out),
                            "--passphrase-prompt", "--json"), {}, tmp_path)  # fmt: skip
    term.wait_for(b"passphrase for the new key: ")
    term.type(PASS)
    term.wait_for(b"the same passphrase again: ")
    term.type(PASS)
    assert term.finish() == 0
    _no_secret(term.out.decode(errors="replace"))  # not echoed, not printed
    (line,) = [ln for ln in term.out.decode().splitlines() if ln.startswith("{")]
    doc = json.loads(line)
    assert doc["encrypted"] is True and doc["file"] == str(out)
    entry = doc["entry"]
    assert "secret_env" not in entry
    conf_file = _with_targets_key(keys, entry, tmp_path / "keys.json")
    conf = parse_key_config(json.loads(conf_file.read_text()), conf_file)
    (signer,) = load_signers(conf, "targets", env={"OTAKIT_SECRET_PASSPHRASE": PASS})
    signer.public_key.verify_signature(signer.sign(b"x"), b"x")


def test_release_on_a_terminal_shows_the_passphrase_prompt_and_waits_for_it(
    keys: KeyConfig, tmp_path: Path
) -> None:
    """Regression: ``otakit release`` asked for the passphrase *under* its progress bar, which
    redrew over the prompt ten times a second, so the command looked hung on a "compressing"
    bar at 0 % — the passphrase-protected key "did not load". The prompt must be the last
    thing on the terminal until it is answered."""
    conf = _encrypted_conf(keys, tmp_path)
    repo, img = tmp_path / "repo", tmp_path / "img"
    r = _cli("repo", "init", str(repo), "--keys", str(conf), extra_env={PASS_ENV: PASS})
    assert r.returncode == 0, r.stderr
    img.write_bytes(os.urandom(8192))
    term = Terminal(
        command("otakit", "release", str(repo), str(img), "--keys", str(conf), "--product",
                "edge-gw", "--version", "1.0", "--image-type", "raw", "--deltas", "0"),
        {"TERM": "xterm", "COLUMNS": "100"},
        tmp_path,
    )  # fmt: skip
    term.wait_for(b"passphrase for targets key ")
    after = term.read_for(1.5)
    assert after.strip() == b"", f"the prompt was drawn over: {after[:300]!r}"
    term.type(PASS)
    assert term.finish() == 0, term.out.decode(errors="replace")[-2000:]
    assert b"published edge-gw 1.0" in term.out
    _no_secret(term.out.decode(errors="replace"))
    load_state(repo)
