"""verify_published: the pure check of a published metadata set, attack by attack, and the one
root-chain walk it shares with the device."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from repo.errors import RepositoryStateError, UntrustedRepositoryError
from repo.state import load_state
from verifier.effects import RealDisk
from verifier.errors import (
    InvalidMetadataError,
    MetadataError,
    MetadataExpiredError,
    MetadataSignatureError,
    TrustedMetadataError,
)
from verifier.state import StatePaths
from verifier.tuf import client, rootchain
from verifier.tuf.published import DirectorySource, verify_published
from verifier.tuf.store import TrustedStore

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ONLINE = ("timestamp", "snapshot", "targets")


@dataclass
class Pub:
    """A tiny publisher: keys per role, the roots so far, and the published files."""

    signers: dict[str, list[CryptoSigner]]
    root: Metadata[Root]
    files: dict[str, bytes] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def new(cls, root_keys: int = 1, root_threshold: int = 1) -> Pub:
        signers = {r: [CryptoSigner.generate_ed25519()] for r in ONLINE}
        signers["root"] = [CryptoSigner.generate_ed25519() for _ in range(root_keys)]
        root = Metadata(Root(expires=T0 + timedelta(days=365), consistent_snapshot=True))
        for role, keys in signers.items():
            for s in keys:
                root.signed.add_key(s.public_key, role)
        root.signed.roles["root"].threshold = root_threshold
        pub = cls(signers, root)
        pub.sign_root(signers["root"])
        pub.sign_online()
        return pub

    def sign_root(self, signers: list[CryptoSigner]) -> None:
        self.root.signatures.clear()
        for s in signers:
            self.root.sign(s, append=True)
        self.files[f"{self.root.signed.version}.root.json"] = self.root.to_bytes()

    def rotate(
        self, role: str, *, old_root_signs: bool = True, new_root_signs: bool = True
    ) -> None:
        """Root N+1 replaces ``role``'s key; signed by root N's and/or its own root keys."""
        old_root = list(self.signers["root"])
        for s in self.signers[role]:
            self.root.signed.revoke_key(s.public_key.keyid, role)
        self.signers[role] = [CryptoSigner.generate_ed25519()]
        self.root.signed.add_key(self.signers[role][0].public_key, role)
        self.root.signed.version += 1
        by = old_root if old_root_signs else []
        if new_root_signs:
            by += [s for s in self.signers["root"] if s not in by]
        self.sign_root(by)

    def sign_online(self, *, signers: dict[str, CryptoSigner] | None = None) -> None:
        """targets -> snapshot -> timestamp, each with the length and sha256 of the next."""
        signers = signers or {}
        self.version += 1
        v = self.version
        targets = Metadata(Targets(version=v, expires=T0 + timedelta(days=90)))
        targets.signed.targets["p/a.img"] = TargetFile.from_data("p/a.img", b"image", ["sha256"])
        targets.sign(signers.get("targets") or self.signers["targets"][0])
        tb = self.files[f"{v}.targets.json"] = targets.to_bytes()
        snapshot = Metadata(Snapshot(version=v, expires=T0 + timedelta(days=7)))
        snapshot.signed.meta["targets.json"] = _meta(v, tb)
        snapshot.sign(signers.get("snapshot") or self.signers["snapshot"][0])
        sb = self.files[f"{v}.snapshot.json"] = snapshot.to_bytes()
        timestamp = Metadata(Timestamp(version=v, expires=T0 + timedelta(days=1)))
        timestamp.signed.snapshot_meta = _meta(v, sb)
        timestamp.sign(signers.get("timestamp") or self.signers["timestamp"][0])
        self.files["timestamp.json"] = timestamp.to_bytes()

    def relink(self) -> None:
        """Re-record lengths/hashes after a file was edited (as an attacker with write access)."""
        v = self.version
        snap = Metadata.from_bytes(self.files[f"{v}.snapshot.json"])
        snap.signed.meta["targets.json"] = _meta(v, self.files[f"{v}.targets.json"])
        snap.signatures.clear()
        snap.sign(self.signers["snapshot"][0])
        self.files[f"{v}.snapshot.json"] = snap.to_bytes()
        ts = Metadata.from_bytes(self.files["timestamp.json"])
        ts.signed.snapshot_meta = _meta(v, self.files[f"{v}.snapshot.json"])
        ts.signatures.clear()
        ts.sign(self.signers["timestamp"][0])
        self.files["timestamp.json"] = ts.to_bytes()

    @property
    def first_root(self) -> bytes:
        return self.files["1.root.json"]


def _meta(version: int, data: bytes) -> MetaFile:
    return MetaFile.from_data(version, data, ["sha256"])


def _flip_signature_char(data: bytes) -> bytes:
    """Same length, other bytes: one hex digit of the signature changed."""
    doc = json.loads(data)
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = ("1" if sig[0] != "1" else "2") + sig[1:]
    out = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    assert len(out) == len(data)
    return out


# --- attacks and accidents, one row each -----------------------------------------------------


def _root_by_a_stranger(p: Pub) -> None:
    p.root.signed.version = 2
    stranger = CryptoSigner.generate_ed25519()
    for keyid in list(p.root.signed.roles["root"].keyids):
        p.root.signed.revoke_key(keyid, "root")
    p.root.signed.add_key(stranger.public_key, "root")
    p.signers["root"] = [stranger]
    p.sign_root([stranger])


def _root_without_its_own_keys(p: Pub) -> None:
    p.rotate("root", old_root_signs=True, new_root_signs=False)


def _root_file_of_another_version(p: Pub) -> None:
    p.root.signed.version = 3
    p.sign_root(p.signers["root"])
    p.files["2.root.json"] = p.files.pop("3.root.json")


def _snapshot_hash_differs(p: Pub) -> None:
    p.files["1.snapshot.json"] = _flip_signature_char(p.files["1.snapshot.json"])


def _snapshot_longer(p: Pub) -> None:
    p.files["1.snapshot.json"] += b" "


def _targets_hash_differs(p: Pub) -> None:
    p.files["1.targets.json"] = _flip_signature_char(p.files["1.targets.json"])


def _targets_by_the_snapshot_key(p: Pub) -> None:
    p.version = 0
    p.sign_online(signers={"targets": p.signers["snapshot"][0]})


def _targets_edited_and_relinked(p: Pub) -> None:
    doc = json.loads(p.files["1.targets.json"])
    doc["signed"]["targets"]["p/evil.img"] = doc["signed"]["targets"]["p/a.img"]
    p.files["1.targets.json"] = json.dumps(doc).encode()
    p.relink()


def _duplicated_signature_entry(p: Pub) -> None:
    doc = json.loads(p.files["1.targets.json"])
    doc["signatures"].append(doc["signatures"][0])
    p.files["1.targets.json"] = json.dumps(doc).encode()
    p.relink()


def _one_key_under_two_ids(p: Pub) -> None:
    """Root lists the targets key twice (threshold 2); one signature, copied under both ids."""
    key = p.signers["targets"][0].public_key
    twin = SSlibKey("f" * 64, key.keytype, key.scheme, dict(key.keyval))
    p.root.signed.add_key(twin, "targets")
    p.root.signed.roles["targets"].threshold = 2
    p.root.signed.version += 1
    p.sign_root(p.signers["root"])
    p.version = 0
    p.sign_online()
    md = Metadata.from_bytes(p.files["1.targets.json"])
    (sig,) = md.signatures.values()
    md.signatures[twin.keyid] = Signature(twin.keyid, sig.signature)
    # python-tuf alone counts key ids, so it would accept this:
    assert p.root.signed.get_verification_result("targets", md.signed_bytes, md.signatures).verified
    p.files["1.targets.json"] = md.to_bytes()
    p.relink()


def _snapshot_missing(p: Pub) -> None:
    del p.files["1.snapshot.json"]


def _timestamp_missing(p: Pub) -> None:
    del p.files["timestamp.json"]


def _online_roles_left_under_the_previous_root(p: Pub) -> None:
    old_ts = p.signers["timestamp"]
    p.rotate("timestamp")  # root 2 published, online metadata still signed by the old key
    p.signers["timestamp"] = old_ts


def _an_image_as_timestamp(p: Pub) -> None:
    p.files["timestamp.json"] = b"\x89PNG\r\n\x1a\n" + bytes(200)


def _targets_where_snapshot_should_be(p: Pub) -> None:
    p.files["1.snapshot.json"] = p.files["1.targets.json"]
    ts = Metadata.from_bytes(p.files["timestamp.json"])
    ts.signed.snapshot_meta = _meta(1, p.files["1.snapshot.json"])
    ts.signatures.clear()
    ts.sign(p.signers["timestamp"][0])
    p.files["timestamp.json"] = ts.to_bytes()


Case = tuple[Callable[[Pub], None], type[MetadataError], str]

REFUSED: dict[str, Case] = {
    "root 2 signed by a stranger, not by root 1": (
        _root_by_a_stranger,
        MetadataSignatureError,
        r"published root v2: expected 1 valid signature\(s\) from keys in root v1, found 0",
    ),
    "root 2 not signed by its own new keys (TUF 5.3.5)": (
        _root_without_its_own_keys,
        MetadataSignatureError,
        r"published root v2: expected 1 valid signature\(s\) from keys in root v2, found 0",
    ),
    "2.root.json holding version 3 (version must be exactly +1)": (
        _root_file_of_another_version,
        InvalidMetadataError,
        r"2\.root\.json: expected version 2, found 3",
    ),
    "snapshot bytes differ from the hash in timestamp": (
        _snapshot_hash_differs,
        InvalidMetadataError,
        r"snapshot v1: sha256 differs from the one recorded in timestamp\.json \(expected ",
    ),
    "snapshot longer than timestamp says": (
        _snapshot_longer,
        InvalidMetadataError,
        r"snapshot v1: timestamp\.json says \d+ bytes, found \d+",
    ),
    "targets bytes differ from the hash in snapshot": (
        _targets_hash_differs,
        InvalidMetadataError,
        r"targets v1: sha256 differs from the one recorded in 1\.snapshot\.json",
    ),
    "targets signed by the snapshot key": (
        _targets_by_the_snapshot_key,
        MetadataSignatureError,
        r"published targets v1: expected 1 valid signature\(s\) from keys in root v1, found 0",
    ),
    "targets edited on the server and lengths/hashes re-recorded": (
        _targets_edited_and_relinked,
        MetadataSignatureError,
        r"published targets v1: expected 1 .* found 0",
    ),
    "one signature listed twice": (
        _duplicated_signature_entry,
        InvalidMetadataError,
        r"1\.targets\.json: expected targets metadata, found invalid targets metadata "
        r"\(Multiple signatures found for keyid",
    ),
    "threshold 2 met by one key listed under two key ids": (
        _one_key_under_two_ids,
        MetadataSignatureError,
        r"published targets v1: expected 2 valid signature\(s\) from keys in root v2, found 1",
    ),
    "snapshot named by timestamp is missing": (
        _snapshot_missing,
        InvalidMetadataError,
        r"expected 1\.snapshot\.json \(named by timestamp\.json\), found none",
    ),
    "no timestamp": (_timestamp_missing, InvalidMetadataError, r"expected timestamp\.json"),
    "online roles still signed under the previous root": (
        _online_roles_left_under_the_previous_root,
        MetadataSignatureError,
        r"published timestamp v1: .* from keys in root v2, found 0",
    ),
    "an image file as timestamp": (
        _an_image_as_timestamp,
        InvalidMetadataError,
        r"timestamp\.json: expected timestamp metadata, found binary data \(208 bytes, "
        r"starting 89 50 4e 47",
    ),
    "targets metadata where the snapshot should be": (
        _targets_where_snapshot_should_be,
        InvalidMetadataError,
        r"1\.snapshot\.json: expected snapshot metadata, found targets metadata",
    ),
}


@pytest.mark.parametrize("attack", REFUSED.values(), ids=REFUSED.keys())
def test_verify_published_refuses(attack: Case) -> None:
    mutate, error, message = attack
    p = Pub.new()
    mutate(p)
    with pytest.raises(error, match=message):
        verify_published(p.files, p.first_root)


def test_verify_published_returns_the_verified_bytes_and_roots() -> None:
    p = Pub.new()
    p.rotate("snapshot")
    p.version = 0
    p.sign_online()
    st = verify_published(p.files, p.first_root)
    assert [r.version for r in st.chain.roots] == [1, 2]
    assert st.root_bytes == p.files["2.root.json"] and st.root.signed.version == 2
    assert st.online_root_version == 2
    assert st.timestamp_bytes == p.files["timestamp.json"]
    assert st.snapshot_bytes == p.files["1.snapshot.json"]
    assert st.targets_bytes == p.files["1.targets.json"]
    assert list(st.targets.signed.targets) == ["p/a.img"]
    assert st.chain.stop is None


def test_a_root_after_a_gap_is_never_reached_and_the_gap_is_refused() -> None:
    """Regression (issue 10): the walk stopped at the gap and the state verified under root
    v1, so a publisher signed on top of a repository whose root v2 had been deleted."""
    from verifier.errors import RootGapError

    p = Pub.new()
    p.rotate("timestamp")
    p.files["3.root.json"] = p.files.pop("2.root.json")  # a gap: no 2.root.json
    with pytest.raises(RootGapError, match=r"expected 2.root.json after root v1.*\(v3"):
        verify_published(p.files, p.first_root)
    del p.files["3.root.json"]  # no newer root left: a history ending at v1 is complete
    assert verify_published(p.files, p.first_root).root.signed.version == 1


def test_a_root_threshold_of_two_needs_two_distinct_keys() -> None:
    p = Pub.new(root_keys=2, root_threshold=2)
    assert verify_published(p.files, p.first_root).root.signed.version == 1
    p.root.signed.version = 2
    p.sign_root(p.signers["root"][:1])  # only one of the two root keys
    with pytest.raises(MetadataSignatureError, match=r"root v2: expected 2 .* root v1, found 1"):
        verify_published(p.files, p.first_root)


def test_online_roles_can_be_verified_under_the_previous_root_when_asked() -> None:
    p = Pub.new()
    _online_roles_left_under_the_previous_root(p)
    st = verify_published(p.files, p.first_root, online_under_previous_root=True)
    assert (st.root.signed.version, st.online_root_version) == (2, 1)
    only_one = Pub.new()
    with pytest.raises(InvalidMetadataError, match="only root v1 is published"):
        verify_published(only_one.files, only_one.first_root, online_under_previous_root=True)


def test_expiry_is_checked_only_against_a_given_reference_time() -> None:
    p = Pub.new()
    later = T0 + timedelta(days=2)  # the timestamp (1 day) expired, the rest did not
    assert verify_published(p.files, p.first_root).timestamp.signed.version == 1
    assert verify_published(p.files, p.first_root, reference_time=T0)
    with pytest.raises(MetadataExpiredError, match="published timestamp v1: expected it valid"):
        verify_published(p.files, p.first_root, reference_time=later)


def test_the_root_chain_walk_is_bounded() -> None:
    p = Pub.new()
    for _ in range(4):
        p.rotate("timestamp")
    with pytest.raises(InvalidMetadataError, match="more than 3 root versions"):
        verify_published(p.files, p.first_root, max_root_versions=3)


def test_bytes_from_any_source_are_verified_and_only_named_files_are_read() -> None:
    p = Pub.new()
    p.files["9.targets.json"] = b"never asked for"

    class Counting:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get(self, name: str, /) -> bytes | None:
            self.asked.append(name)
            return p.files.get(name)

    src = Counting()
    verify_published(src, p.first_root)
    assert src.asked == ["2.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json"]


def test_a_directory_source_reads_bounded(tmp_path: Path) -> None:
    p = Pub.new()
    for name, data in p.files.items():
        (tmp_path / name).write_bytes(data)
    verify_published(DirectorySource(tmp_path), p.first_root)
    with pytest.raises(InvalidMetadataError, match="larger than 100 bytes"):
        verify_published(DirectorySource(tmp_path, max_bytes=100), p.first_root)


# --- the publisher's load_state is this verifier plus reading files --------------------------


def _as_repository(p: Pub, tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "metadata").mkdir(parents=True)
    for name, data in p.files.items():
        (repo / "metadata" / name).write_bytes(data)
    return repo


@pytest.mark.parametrize("attack", REFUSED.values(), ids=REFUSED.keys())
def test_load_state_maps_each_refusal_to_the_publisher_family(attack: Case, tmp_path: Path) -> None:
    mutate, error, message = attack
    p = Pub.new()
    mutate(p)
    repo = _as_repository(p, tmp_path)
    expected = UntrustedRepositoryError if error is MetadataSignatureError else RepositoryStateError
    with pytest.raises(expected, match=message) as refused:
        load_state(repo)
    if expected is UntrustedRepositoryError:
        assert "modified outside otakit" in refused.value.diagnostic()


# --- one walk, two callers -------------------------------------------------------------------


def test_the_device_and_the_publisher_walk_the_root_chain_with_the_same_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pub.new()
    p.rotate("timestamp")
    p.version = 0
    p.sign_online()
    repo = _as_repository(p, tmp_path)
    state = tmp_path / "state"
    (state / "metadata" / "root").mkdir(parents=True)
    (state / "root.json").write_bytes(p.first_root)
    (state / "metadata" / "root" / "2.root.json").write_bytes(p.files["2.root.json"])

    callers: list[str] = []
    real = rootchain.walk_root_chain

    def spy(*args: object, **kw: object) -> rootchain.RootChain:
        callers.append(str(kw["label"]))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rootchain, "walk_root_chain", spy)
    assert load_state(repo).root.signed.version == 2
    paths = StatePaths(state)
    got = client.newest_verified_root(paths, TrustedStore(paths.metadata, RealDisk()))
    assert got == p.files["2.root.json"]
    assert callers == ["published", "stored"]


def test_the_device_walk_refuses_a_bad_stored_root_as_the_publisher_does(
    tmp_path: Path,
) -> None:
    p = Pub.new()
    p.rotate("timestamp")
    p.rotate("timestamp")
    state = tmp_path / "state"
    roots = state / "metadata" / "root"
    roots.mkdir(parents=True)
    (state / "root.json").write_bytes(p.first_root)
    (roots / "3.root.json").write_bytes(p.files["3.root.json"])
    doc = json.loads(p.files["2.root.json"])
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # signature no longer matches
    (roots / "2.root.json").write_bytes(json.dumps(doc).encode())
    paths = StatePaths(state)
    with pytest.raises(
        TrustedMetadataError, match=r"2\.root\.json does not verify: stored root v2"
    ):
        client.newest_verified_root(paths, TrustedStore(paths.metadata, RealDisk()))
    with pytest.raises(MetadataSignatureError, match="published root v2"):  # publisher: refuse
        verify_published({**p.files, "2.root.json": json.dumps(doc).encode()}, p.first_root)
