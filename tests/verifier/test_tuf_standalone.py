"""``otakit-device tuf``, end to end: the real CLI in a subprocess against nginx.

Each test builds a repository with python-tuf's Metadata API (``tuf_repo_builder``), serves
it with a real nginx, drives ``init`` / ``refresh`` / ``download`` as the TUF conformance
suite drives a client, and asserts the exit status (0 or 1), the one-line diagnostic, and the
exact listing and bytes of the metadata and target directories after every step.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.metadata import MetaFile

from repo.nginx import nginx_serving
from tests.cli.helpers_cli import run
from tests.conftest import require
from tests.verifier.tuf_repo_builder import TufRepo

TOP_FILES = ["root.json", "snapshot.json", "targets.json", "timestamp.json"]
IMG = b"image bytes in a sub-directory\n" * 100


@dataclass
class Client:
    """One client: its two directories and the served repository."""

    repo: TufRepo
    url: str
    meta: Path
    targets: Path
    log: Path  # nginx's access log: which files were fetched

    def tuf(self, *argv: str, json_out: bool = True) -> subprocess.CompletedProcess[str]:
        opts = [
            "--metadata-url", f"{self.url}/metadata/", "--metadata-dir", str(self.meta),
            "--target-base-url", f"{self.url}/targets/", "--target-dir", str(self.targets),
        ]  # fmt: skip
        return run("otakit-device", *(["--json"] if json_out else []), "tuf", *opts, *argv)

    def init(self) -> subprocess.CompletedProcess[str]:
        return self.tuf("init", str(self.repo.file("1.root.json")))

    def ok(self, *argv: str) -> dict[str, Any]:
        r = self.tuf(*argv)
        assert r.returncode == 0, r.stdout + r.stderr
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def fails(self, *argv: str, says: str) -> dict[str, Any]:
        """Exit 1, one diagnostic line family on stderr (text), one JSON error (--json)."""
        text = self.tuf(*argv, json_out=False)
        assert text.returncode == 1, text.stdout + text.stderr
        assert text.stdout == "" and "Traceback" not in text.stderr, text.stderr
        assert says.lower() in text.stderr.lower(), text.stderr
        r = self.tuf(*argv)
        assert r.returncode == 1, r.stdout + r.stderr
        err: dict[str, Any] = json.loads(r.stdout)["error"]
        assert says.lower() in (err["message"] + " " + (err["hint"] or "")).lower(), err
        return err

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.meta))

    def target_listing(self) -> list[str]:
        return sorted(os.listdir(self.targets)) if self.targets.exists() else []

    def on_disk(self) -> dict[str, bytes]:
        return {n: (self.meta / n).read_bytes() for n in self.listing()}

    def fetched(self, fragment: str) -> int:
        return sum(fragment in line for line in self.log.read_text().splitlines())


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    repo = TufRepo(tmp_path / "repo")
    repo.add_target("images/sub/a.img", IMG)
    repo.publish("targets")
    with nginx_serving(require("nginx"), repo.dir, tmp_path / "nginx") as url:
        yield Client(repo, url, tmp_path / "client" / "metadata", tmp_path / "client" / "targets",
                     tmp_path / "nginx" / "access.log")  # fmt: skip


def _versions(doc: dict[str, Any]) -> dict[str, int]:
    versions: dict[str, int] = doc["versions"]
    return versions


# --- the happy path ---------------------------------------------------------------------------


def test_init_refresh_download_a_target_in_a_sub_directory(client: Client) -> None:
    doc = client.ok("init", str(client.repo.file("1.root.json")))
    assert client.listing() == ["root.json"]
    assert _versions(doc) == {"root": 1}
    assert client.on_disk()["root.json"] == client.repo.served("1.root.json")

    doc = client.ok("refresh")
    assert client.listing() == TOP_FILES
    assert _versions(doc) == {"root": 1, "timestamp": 2, "snapshot": 2, "targets": 2}
    on_disk = client.on_disk()  # the bytes received, unversioned names
    assert on_disk["timestamp.json"] == client.repo.served("timestamp.json")
    assert on_disk["snapshot.json"] == client.repo.served("2.snapshot.json")
    assert on_disk["targets.json"] == client.repo.served("2.targets.json")
    assert client.target_listing() == []

    doc = client.ok("--target-name", "images/sub/a.img", "download")
    assert client.target_listing() == ["images%2Fsub%2Fa.img"]  # one name: no sub-directory
    assert (client.targets / "images%2Fsub%2Fa.img").read_bytes() == IMG
    assert doc["targets"] == [
        {"name": "images/sub/a.img", "file": str(client.targets / "images%2Fsub%2Fa.img"),
         "length": len(IMG), "downloaded": True}
    ]  # fmt: skip
    assert client.listing() == TOP_FILES
    assert client.fetched("/targets/images/sub/") == 1

    # already present and valid: not downloaded again
    doc = client.ok("--target-name", "images/sub/a.img", "download")
    assert doc["targets"][0]["downloaded"] is False
    assert client.fetched("/targets/images/sub/") == 1
    assert client.target_listing() == ["images%2Fsub%2Fa.img"]


def test_text_output_and_a_damaged_target_is_downloaded_again(client: Client) -> None:
    client.init()
    r = client.tuf("--target-name", "images/sub/a.img", "download", json_out=False)
    assert r.returncode == 0 and "images/sub/a.img: downloaded" in r.stdout, r.stderr
    (client.targets / "images%2Fsub%2Fa.img").write_bytes(b"x" * len(IMG))
    client.ok("--target-name", "images/sub/a.img", "download")
    assert (client.targets / "images%2Fsub%2Fa.img").read_bytes() == IMG
    assert client.fetched("/targets/images/sub/") == 2


# --- root rotation ----------------------------------------------------------------------------


def test_rotated_root_is_the_root_on_disk(client: Client) -> None:
    client.init()
    client.ok("refresh")
    client.repo.rotate_root()  # 2.root.json signed by the old key and the new one
    client.repo.publish("targets")
    doc = client.ok("refresh")
    assert client.listing() == TOP_FILES  # no root_history/, no symlink, no temp file
    assert _versions(doc)["root"] == 2
    assert client.on_disk()["root.json"] == client.repo.served("2.root.json")
    assert not (client.meta / "root.json").is_symlink()


def test_root_signed_only_by_the_new_key_is_refused(client: Client) -> None:
    client.init()
    client.ok("refresh")
    before = client.on_disk()
    repo = client.repo
    repo.rotate_root()
    repo.root.signatures.clear()
    repo.root.sign(repo.signers["root"])  # the new key alone: not authorized by root v1
    repo.file("2.root.json").write_bytes(repo.root.to_bytes())
    client.fails("refresh", says="root")
    assert client.on_disk() == before


# --- rollback ---------------------------------------------------------------------------------


def test_rollback_to_an_older_repository_is_refused_and_nothing_changes(
    client: Client, tmp_path: Path
) -> None:
    old = client.repo.save(tmp_path / "old-metadata")
    client.repo.add_target("images/b.img", b"b" * 100)
    client.repo.publish("targets")
    client.init()
    client.ok("refresh")
    before = client.on_disk()
    assert json.loads(before["targets.json"])["signed"]["version"] == 3

    client.repo.restore(old)  # the server (or a mirror) serves the previous repository
    err = client.fails("refresh", says="timestamp")
    assert err["family"] == "security" and err["code"] == 3  # the family is still named
    assert client.on_disk() == before
    assert client.listing() == TOP_FILES


def test_new_snapshot_naming_an_older_targets_keeps_only_the_verified_timestamp(
    client: Client,
) -> None:
    client.init()
    client.ok("refresh")
    before = client.on_disk()
    repo = client.repo
    repo.snapshot.signed.meta["targets.json"] = MetaFile(1)
    repo.publish_snapshot()  # a correctly signed snapshot that rolls targets back to v1
    client.fails("refresh", says="targets")
    after = client.on_disk()
    # TUF 5.4: the new timestamp verified, so it is trusted (and persisted) at once ...
    assert after["timestamp.json"] == repo.served("timestamp.json") != before["timestamp.json"]
    # ... the snapshot that failed is not, and targets is untouched
    assert after["snapshot.json"] == before["snapshot.json"]
    assert after["targets.json"] == before["targets.json"]
    assert client.listing() == TOP_FILES


# --- delegations ------------------------------------------------------------------------------


@pytest.fixture
def delegated(client: Client) -> Client:
    """targets -> a (images/*, images/*/*) -> a/nested (terminating), a/other; targets -> z.

    Pre-order depth first: a, then a/nested; a/nested is terminating, so a/other and z are
    never consulted for a path it covers.
    """
    repo = client.repo
    repo.delegate("targets", "a", ["images/*", "images/*/*"])
    repo.delegate("a", "a/nested", ["images/deep/*"], terminating=True)
    repo.delegate("a", "a/other", ["images/deep/*"])
    repo.delegate("targets", "z", ["images/*/*"])
    repo.add_target("images/deep/b.img", b"from a/nested\n", role="a/nested")
    repo.add_target("images/deep/b.img", b"from z, never used\n", role="z")
    repo.add_target("images/deep/c.img", b"only in a/other\n", role="a/other")
    repo.add_target("images/x.img", b"in a\n", role="a")
    repo.publish()
    client.init()
    return client


def test_a_target_only_in_a_nested_delegated_role(delegated: Client) -> None:
    c = delegated
    c.ok("--target-name", "images/deep/b.img", "download")
    assert (c.targets / "images%2Fdeep%2Fb.img").read_bytes() == b"from a/nested\n"
    # the roles walked, each under its percent-encoded name; z was never consulted
    assert c.listing() == ["a%2Fnested.json", "a.json", *TOP_FILES]
    assert c.on_disk()["a%2Fnested.json"] == c.repo.served("1.a%2Fnested.json")
    assert c.target_listing() == ["images%2Fdeep%2Fb.img"]


def test_terminating_role_ends_the_search(delegated: Client) -> None:
    c = delegated
    err = c.fails("--target-name", "images/deep/c.img", "download", says="images/deep/c.img")
    assert err["kind"] == "usage"
    assert c.listing() == ["a%2Fnested.json", "a.json", *TOP_FILES]  # a/other never fetched
    assert c.fetched("a/other") == 0 and c.fetched("/metadata/1.z.json") == 0
    assert c.target_listing() == []


def test_several_targets_from_several_roles(delegated: Client) -> None:
    c = delegated
    doc = c.ok("--target-name", "images/x.img", "--target-name", "images/sub/a.img", "download")
    assert [t["name"] for t in doc["targets"]] == ["images/x.img", "images/sub/a.img"]
    assert c.target_listing() == ["images%2Fsub%2Fa.img", "images%2Fx.img"]
    assert c.listing() == ["a.json", *TOP_FILES]


def test_delegated_role_signed_by_the_wrong_key_is_refused(delegated: Client) -> None:
    c = delegated
    repo = c.repo
    md = repo.roles["a/nested"]
    md.signatures.clear()
    md.sign(repo.signers["z"])
    repo.file("1.a%2Fnested.json").write_bytes(md.to_bytes())
    c.fails("--target-name", "images/deep/b.img", "download", says="a/nested")
    assert c.listing() == ["a.json", *TOP_FILES]  # what verified is kept, the bad role not
    assert c.target_listing() == []


# --- bad targets, bad input -------------------------------------------------------------------


def test_target_with_wrong_bytes_leaves_nothing(client: Client) -> None:
    client.init()
    tf = client.repo.roles["targets"].signed.targets["images/sub/a.img"]
    client.repo.target_file(tf).write_bytes(b"y" * len(IMG))  # same length, other bytes
    err = client.fails("--target-name", "images/sub/a.img", "download", says="images/sub/a.img")
    assert err["kind"] == "target-verification"
    assert client.target_listing() == []
    assert client.listing() == TOP_FILES


def test_target_name_that_names_a_directory_is_refused(client: Client) -> None:
    client.init()
    client.fails("--target-name", "..", "download", says="file name")
    assert not client.targets.exists()


def test_init_with_a_bad_root_writes_nothing(client: Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad-root.json"
    bad.write_text('{"not": "a root"}')
    client.fails("init", str(bad), says="not a TUF root")
    forged = json.loads(client.repo.served("1.root.json"))
    forged["signed"]["version"] = 7  # the signature no longer matches
    bad.write_text(json.dumps(forged))
    client.fails("init", str(bad), says="signature")
    assert not client.meta.exists() or client.listing() == []


def test_init_twice_is_refused(client: Client) -> None:
    client.init()
    client.fails("init", str(client.repo.file("1.root.json")), says="already holds")
    assert client.listing() == ["root.json"]


def test_refresh_without_init(client: Client) -> None:
    client.meta.mkdir(parents=True)
    client.fails("refresh", says="tuf --metadata-dir")
    assert client.listing() == []


def test_corrupt_trusted_timestamp_is_an_error_not_a_silent_drop(client: Client) -> None:
    client.init()
    client.ok("refresh")
    (client.meta / "timestamp.json").write_text("{}")
    err = client.fails("refresh", says="trusted metadata is corrupt")
    assert err["kind"] == "config"
    assert (client.meta / "timestamp.json").read_text() == "{}"  # left for the operator


def test_unreachable_repository(client: Client) -> None:
    client.init()
    client.url = "http://127.0.0.1:9"
    err = client.fails("refresh", says="connection refused")
    assert err["family"] == "transport"
    assert client.listing() == ["root.json"]


def test_one_key_listed_under_two_ids_is_refused_as_on_the_device(client: Client) -> None:
    """Root v2 lists the timestamp key twice (threshold 2); one signature under both ids.

    python-tuf counts key ids and would accept it. The device refuses such a root before
    python-tuf reads it (``checks.precheck``); so does this client now (it kept root v2 and
    refused only the timestamp before): one verdict for the same bytes.
    """
    client.init()
    client.ok("refresh")
    before = client.on_disk()
    repo = client.repo
    key = repo.signers["timestamp"].public_key
    twin = SSlibKey("f" * 64, key.keytype, key.scheme, key.keyval)
    repo.root.signed.add_key(twin, "timestamp")
    repo.root.signed.roles["timestamp"].threshold = 2
    repo.root.signed.version += 1
    repo.root.signatures.clear()
    repo.root.sign(repo.signers["root"])
    repo.file("2.root.json").write_bytes(repo.root.to_bytes())
    ts = repo.timestamp
    ts.signed.version += 1
    ts.signatures.clear()
    sig = ts.sign(repo.signers["timestamp"])
    ts.signatures[twin.keyid] = Signature(twin.keyid, sig.signature)
    repo.file("timestamp.json").write_bytes(ts.to_bytes())

    err = client.fails("refresh", says="one public key is listed under two key ids")
    assert err["family"] == "security"
    assert client.on_disk() == before  # neither root v2 nor the timestamp is trusted


def test_a_delegation_listing_one_key_under_two_ids_is_refused(delegated: Client) -> None:
    """The same check covers delegations (issue 9's note: the standalone client did not)."""
    c = delegated
    repo = c.repo
    top = repo.roles["targets"]
    assert top.signed.delegations is not None and top.signed.delegations.roles is not None
    key = repo.signers["a"].public_key
    twin = SSlibKey("e" * 64, key.keytype, key.scheme, key.keyval)
    top.signed.add_key(twin, "a")
    top.signed.delegations.roles["a"].threshold = 2
    repo.publish("targets")
    err = c.fails("--target-name", "images/x.img", "download", says="two key ids")
    assert err["family"] == "security"
    assert c.target_listing() == []


def test_rotated_timestamp_keys_drop_the_trusted_timestamp_and_snapshot(client: Client) -> None:
    """TUF 5.3.11: a new root that rotates the timestamp key deletes the trusted timestamp
    and snapshot (the way out of a fast-forward); here the repository has not re-signed its
    timestamp with the new key yet, so the refresh fails and neither stays behind."""
    client.init()
    client.ok("refresh")
    repo = client.repo
    old = repo.signers["timestamp"]
    new = CryptoSigner.generate_ed25519()
    repo.root.signed.revoke_key(old.public_key.keyid, "timestamp")
    repo.root.signed.add_key(new.public_key, "timestamp")
    repo.root.signed.version += 1
    repo.root.signatures.clear()
    repo.root.sign(repo.signers["root"])
    repo.file("2.root.json").write_bytes(repo.root.to_bytes())
    client.fails("refresh", says="timestamp")
    assert client.listing() == ["root.json", "targets.json"]
    assert client.on_disk()["root.json"] == repo.served("2.root.json")
    # the repository catches up: the next refresh starts from the new keys, no rollback error
    repo.signers["timestamp"] = new
    repo.publish("targets")
    assert _versions(client.ok("refresh"))["root"] == 2
    assert client.listing() == TOP_FILES


def test_one_step_at_a_time_on_a_metadata_directory(client: Client) -> None:
    """A second run while one holds the directory is refused as busy, and no lock file
    appears among the metadata (the directory itself is locked)."""
    import fcntl

    client.init()
    fd = os.open(client.meta, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        err = client.fails("refresh", says="is working on")
        assert err["family"] == "local"
    finally:
        os.close(fd)
    client.ok("refresh")
    assert client.listing() == TOP_FILES
