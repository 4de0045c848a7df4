"""Publication is crash safe: a failure at any write leaves the previous repository valid.

The sweep injects a storage failure at every single effect of a release (file open, write,
fsync, rename, directory fsync, mkdir) and then checks, with python-tuf's own client, that
the repository still verifies and still offers exactly the previous targets (or, once the
final rename of timestamp.json happened, the new ones); a retry then completes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from repo.errors import PublisherBusyError, PublishError, SecurityError, UsageError
from repo.keys import KeyConfig
from repo.publish import publisher_lock
from repo.repository import load_role_signers, open_transaction
from repo.state import load_state
from tests.helpers_repo import NOW, client_view, make_updater, root_bytes
from verifier.effects import Disk, RealDisk, WriteHandle
from verifier.errors import StorageError

A = b"release A " * 1000
B = b"release B " * 2000


class FailingDisk:
    """A real disk that fails its ``fail_at``-th effect (0-based) and counts them all."""

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at
        self.effects: list[str] = []
        self._real: Disk = RealDisk()

    def _effect(self, what: str) -> None:
        if self.fail_at is not None and len(self.effects) == self.fail_at:
            raise StorageError(f"injected failure at {what}")
        self.effects.append(what)

    def open_write(self, path: Path, *, new: bool, truncate: bool = False) -> WriteHandle:
        self._effect(f"open {path.name}")
        handle = self._real.open_write(path, new=new, truncate=truncate)
        disk = self

        class Handle:
            def pwrite(self, data: bytes, offset: int) -> None:
                disk._effect(f"write {path.name}")
                handle.pwrite(data, offset)

            def fsync(self) -> None:
                disk._effect(f"fsync {path.name}")
                handle.fsync()

            def close(self) -> None:
                handle.close()

        return Handle()

    def rename(self, src: Path, dst: Path) -> None:
        self._effect(f"rename {dst.name}")
        self._real.rename(src, dst)

    def unlink(self, path: Path) -> None:
        self._effect(f"unlink {path.name}")
        self._real.unlink(path)

    def fsync_dir(self, path: Path) -> None:
        self._effect(f"fsync dir {path.name}")
        self._real.fsync_dir(path)

    def mkdir(self, path: Path) -> None:
        self._effect(f"mkdir {path.name}")
        self._real.mkdir(path)


def _release(repo: Path, keys: KeyConfig, name: str, data: bytes, disk: Disk | None = None) -> None:
    src = repo.parent / f"{name.replace('/', '_')}.src"
    src.write_bytes(data)
    signers = load_role_signers(keys, ("targets", "snapshot", "timestamp"))
    with open_transaction(repo) as tx:
        tx.add_target(TargetFile.from_data(name, data, ["sha256"]), src)
        tx.commit(signers, NOW, disk=disk)


@pytest.fixture
def released(repo: Path, keys: KeyConfig) -> Path:
    _release(repo, keys, "prod/1/a.img", A)
    return repo


def test_release_is_visible_to_a_tuf_client(released: Path, tmp_path: Path) -> None:
    assert client_view(released, tmp_path / "c", root_bytes(released)) == {"prod/1/a.img": A}
    st = load_state(released)
    assert (st.targets.signed.version, st.snapshot.signed.version) == (2, 2)
    assert st.timestamp.signed.version == 2
    stored = list((released / "targets" / "prod" / "1").iterdir())
    assert [p.name.split(".", 1)[1] for p in stored] == ["a.img"]  # <sha256>.a.img


def test_published_files_are_readable_by_a_web_server_user(released: Path) -> None:
    files = [p for p in released.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) >= 8
    for p in files:
        assert p.stat().st_mode & 0o444 == 0o444, p


def test_a_crash_at_any_write_leaves_the_previous_repository_valid(
    released: Path, keys: KeyConfig, tmp_path: Path
) -> None:
    counting = FailingDisk(None)
    probe = tmp_path / "probe" / "repo"
    shutil.copytree(released, probe)
    _release(probe, keys, "prod/2/b.img", B, disk=counting)
    total = len(counting.effects)
    ts_rename = counting.effects.index("rename timestamp.json")
    assert total > 15, counting.effects  # blob + 3 metadata files, each temp/fsync/rename

    # a client that has already seen the previous state keeps its cache across the sweep
    seen = tmp_path / "seen-client"
    client_view(released, seen, root_bytes(released))

    for k in range(total):
        work = tmp_path / f"crash-{k}" / "repo"
        shutil.copytree(released, work)
        with pytest.raises(PublishError) as exc:
            _release(work, keys, "prod/2/b.img", B, disk=FailingDisk(k))
        assert "previously published repository is intact" in exc.value.diagnostic()
        expected = {"prod/1/a.img": A}
        if k > ts_rename:  # only the final directory fsync can fail after the commit point
            expected["prod/2/b.img"] = B
        assert client_view(work, tmp_path / f"fresh-{k}", root_bytes(work)) == expected, (
            counting.effects[k]
        )
        cont = tmp_path / f"cont-{k}"
        shutil.copytree(seen, cont)
        make_updater(work, cont, root_bytes(work)).refresh()
        if k <= ts_rename:  # a retry completes on top of the orphans the crash left
            _release(work, keys, "prod/2/b.img", B)
            got = client_view(work, tmp_path / f"retry-{k}", root_bytes(work))
            assert got == {"prod/1/a.img": A, "prod/2/b.img": B}


def test_targets_are_written_before_metadata_and_timestamp_last(
    released: Path, keys: KeyConfig
) -> None:
    disk = FailingDisk(None)
    _release(released, keys, "prod/2/b.img", B, disk=disk)
    renames = [e.split(" ", 1)[1] for e in disk.effects if e.startswith("rename")]
    assert renames[-3:] == ["3.targets.json", "3.snapshot.json", "timestamp.json"]
    assert renames[0].endswith(".b.img")


def test_a_source_changed_after_staging_is_refused_and_nothing_published(
    released: Path, keys: KeyConfig
) -> None:
    src = released.parent / "b.src"
    src.write_bytes(B)
    signers = load_role_signers(keys, ("targets", "snapshot", "timestamp"))
    before = (released / "metadata" / "timestamp.json").read_bytes()
    with open_transaction(released) as tx:
        tx.add_target(TargetFile.from_data("prod/2/b.img", B, ["sha256"]), src)
        src.write_bytes(B[:-1] + b"!")
        with pytest.raises(SecurityError, match="expected 20000 bytes with sha256"):
            tx.commit(signers, NOW)
    assert (released / "metadata" / "timestamp.json").read_bytes() == before
    assert not (released / "targets" / "prod" / "2").exists() or not any(
        p.name.endswith("b.img") for p in (released / "targets" / "prod" / "2").iterdir()
    )


def test_published_targets_are_immutable(released: Path, keys: KeyConfig) -> None:
    with pytest.raises(UsageError, match="already published"):
        _release(released, keys, "prod/1/a.img", B)


@pytest.mark.parametrize("name", ["../x", "prod/../../x", "/abs", "prod/.hidden", "a//b"])
def test_unsafe_target_paths_are_refused(repo: Path, keys: KeyConfig, name: str) -> None:
    with pytest.raises(UsageError, match="target path"):
        _release(repo, keys, name, A)


def test_two_publishers_cannot_interleave(released: Path, keys: KeyConfig) -> None:
    with publisher_lock(released), pytest.raises(PublisherBusyError, match="another publisher"):
        _release(released, keys, "prod/2/b.img", B)
    _release(released, keys, "prod/2/b.img", B)  # the lock is free again


def test_missing_signer_for_a_role_is_a_threshold_error(released: Path, keys: KeyConfig) -> None:
    from repo.errors import ThresholdError

    src = released.parent / "b.src"
    src.write_bytes(B)
    signers = load_role_signers(keys, ("targets", "timestamp"))
    with open_transaction(released) as tx:
        tx.add_target(TargetFile.from_data("prod/2/b.img", B, ["sha256"]), src)
        with pytest.raises(ThresholdError, match="snapshot v3: expected 1"):
            tx.commit(signers, NOW)
    assert load_state(released).timestamp.signed.version == 2


def _rehash(repo: Path, md_name: str, referrer: str, key: str) -> None:
    """Update ``referrer``'s record of ``md_name`` as an attacker without keys would."""
    import hashlib
    import json

    data = (repo / "metadata" / md_name).read_bytes()
    ref = repo / "metadata" / referrer
    doc = json.loads(ref.read_bytes())
    doc["signed"]["meta"][key]["length"] = len(data)
    doc["signed"]["meta"][key]["hashes"] = {"sha256": hashlib.sha256(data).hexdigest()}
    ref.write_text(json.dumps(doc))


def test_a_release_never_builds_on_tampered_metadata(released: Path, keys: KeyConfig) -> None:
    """Write access to the repository must not become a signature from the targets key."""
    import json

    from repo.errors import UntrustedRepositoryError

    tpath = released / "metadata" / "2.targets.json"
    doc = json.loads(tpath.read_bytes())
    evil = dict(doc["signed"]["targets"]["prod/1/a.img"])
    doc["signed"]["targets"]["prod/1/evil.img"] = evil
    tpath.write_text(json.dumps(doc))
    _rehash(released, "2.targets.json", "2.snapshot.json", "targets.json")
    _rehash(released, "2.snapshot.json", "timestamp.json", "snapshot.json")
    before = (released / "metadata" / "timestamp.json").read_bytes()
    with pytest.raises(UntrustedRepositoryError, match="published timestamp v2"):
        _release(released, keys, "prod/2/b.img", B)
    assert (released / "metadata" / "timestamp.json").read_bytes() == before
    assert not (released / "metadata" / "3.targets.json").exists()


def test_a_root_not_signed_by_its_predecessor_is_refused(released: Path, keys: KeyConfig) -> None:
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    from repo.errors import UntrustedRepositoryError

    root = Metadata.from_bytes((released / "metadata" / "1.root.json").read_bytes())
    root.signed.version = 2
    stranger = CryptoSigner.generate_ed25519()
    for keyid in list(root.signed.roles["root"].keyids):
        root.signed.revoke_key(keyid, "root")
    root.signed.add_key(stranger.public_key, "root")
    root.signed.roles["root"].threshold = 1
    root.signatures.clear()
    root.sign(stranger)
    (released / "metadata" / "2.root.json").write_bytes(root.to_bytes())
    with pytest.raises(UntrustedRepositoryError, match="published root v2"):
        _release(released, keys, "prod/2/b.img", B)


def test_a_vanished_source_file_is_a_publish_error(released: Path, keys: KeyConfig) -> None:
    signers = load_role_signers(keys, ("targets", "snapshot", "timestamp"))
    with open_transaction(released) as tx:
        tx.add_target(TargetFile.from_data("prod/2/b.img", B, ["sha256"]), released / "gone")
        with pytest.raises(PublishError, match="No such file"):
            tx.commit(signers, NOW)
    assert load_state(released).timestamp.signed.version == 2
