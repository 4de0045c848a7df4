"""``otakit inspect``: a real repository (built with the publisher) inspected from a pinned
root, from a directory and over HTTP, and every bad repository shown with its failures —
the report's verdict always equal to ``verify_published``'s."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, TargetFile

from repo.inspect_report import InspectReport, build_report, duplicate_keys, report_json
from repo.keys import KeyConfig
from repo.repository import init, load_role_signers
from repo.serve import serve_in_thread
from repo.sources import HttpSource, LocalSource, check_name, open_source
from signer.delta.release import delta_builder
from signer.release import release
from tests.helpers_repo import NOW
from verifier.cli_contract import run_app
from verifier.errors import InvalidMetadataError, MetadataError, OtakitError
from verifier.tuf.published import verify_published

ONLINE = ("targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class Released:
    repo: Path
    root: bytes
    signers: dict[str, list[Signer]]


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    """edge-gw 1.0 and 2.0 (full + a delta from 1.0), raw images, demo keys."""
    from signer.keygen import generate_demo_keys

    d = tmp_path_factory.mktemp("inspect")
    keys: KeyConfig = generate_demo_keys(d / "keys")
    repo = d / "repo"
    init(repo, keys, NOW)
    v1 = d / "v1.img"
    v1.write_bytes(os.urandom(1 << 20))
    v2 = d / "v2.img"
    v2.write_bytes(v1.read_bytes() + os.urandom(64 << 10))
    for version, image in (("1.0", v1), ("2.0", v2)):
        release(
            repo, keys, "edge-gw", version, image, ["board"], NOW, image_type="raw",
            extra_builder=delta_builder(1),
        )  # fmt: skip
    signers = load_role_signers(keys, ("root", *ONLINE))
    return Released(repo, (repo / "metadata" / "1.root.json").read_bytes(), signers)


def files_of(r: Released) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (r.repo / "metadata").iterdir() if p.is_file()}


def agrees(files: dict[str, bytes], root: bytes, report: InspectReport) -> None:
    """The report's verdict is verify_published's, and a failed verdict has its reasons."""
    try:
        verify_published(files, root, reference_time=report.at)
        ok = True
    except MetadataError:
        ok = False
    assert report.verified is ok
    assert bool(report.failures) is (not ok)


# --- a good repository ------------------------------------------------------------------------


def test_a_published_repository_is_shown_whole(released: Released) -> None:
    rep = build_report(LocalSource(released.repo), released.root, NOW, source_name="r")
    assert rep.verified and rep.failures == () and rep.anomalies == ()
    assert [(r.name, r.version) for r in rep.roles] == [
        ("root", 1), ("timestamp", 3), ("snapshot", 3), ("targets", 3),
    ]  # fmt: skip
    root = rep.role("root")
    assert root.threshold == 2 and len(root.signatures_valid) == 2 and not root.signatures_missing
    assert all(k.demo and k.keytype == "ed25519" for k in rep.keys)
    kinds = {t.path: (t.artifact.kind, str(t.artifact.version)) for t in rep.targets if t.artifact}
    assert kinds == {
        "edge-gw/1.0/full.img.zst": ("full", "1.0"),
        "edge-gw/2.0/full.img.zst": ("full", "2.0"),
        "edge-gw/2.0/delta-from-1.0.otd": ("delta", "2.0"),
    }
    assert rep.delegations == () and rep.consistent_snapshot
    doc = report_json(rep)
    assert doc["otakit_inspect"] == 1 and doc["verified"] is True
    assert json.loads(json.dumps(doc)) == doc  # plain JSON all the way down


def test_over_http_the_report_is_the_directorys(released: Released) -> None:
    url, stop = serve_in_thread(released.repo)
    try:
        src = open_source(url)
        assert isinstance(src, HttpSource)
        over_http = build_report(src, released.root, NOW)
    finally:
        stop()
    assert over_http == build_report(LocalSource(released.repo), released.root, NOW)


def test_a_source_fetches_only_metadata_names(released: Released) -> None:
    for name in (
        "../keys/root.pem", "targets/x", "root.json", "1.root.json/..", "0.root.json",
        "1.a/../b.json", "1..json", "1.Edge.json", "1.-x.json", "1." + "a" * 81 + ".json",
    ):  # fmt: skip
        with pytest.raises(InvalidMetadataError, match="metadata file name"):
            check_name(name)
        with pytest.raises(InvalidMetadataError):
            LocalSource(released.repo).get(name)
    assert LocalSource(released.repo).get("9.root.json") is None
    assert LocalSource(released.repo).get("9.edge-gw-bin-0.json") is None  # a delegated role


def test_an_http_source_is_bounded_in_size(released: Released) -> None:
    url, stop = serve_in_thread(released.repo)
    try:
        with pytest.raises(InvalidMetadataError, match="larger than 100 bytes"):
            HttpSource(url, max_bytes=100).get("1.root.json")
        assert HttpSource(url).get("77.root.json") is None  # 404: absent
    finally:
        stop()


def test_a_source_argument_is_a_directory_or_an_http_url(tmp_path: Path) -> None:
    with pytest.raises(OtakitError, match="http"):
        open_source("ftp://example.com/repo")
    with pytest.raises(OtakitError, match="metadata/"):
        open_source(str(tmp_path))
    with pytest.raises(OtakitError, match="nothing there"):
        open_source(str(tmp_path / "nowhere"))


# --- bad repositories: each failure pointed out ---------------------------------------------


def resign(
    files: dict[str, bytes], r: Released, name: str, edit: Callable[[Metadata], None]
) -> None:  # type: ignore[type-arg]
    """Edit ``name`` and sign it again with its role's key, then relink snapshot and
    timestamp (what a holder of every key could publish)."""
    md = Metadata.from_bytes(files[name])
    edit(md)
    md.signatures.clear()
    for s in r.signers[md.signed.type]:
        md.sign(s, append=True)
    files[name] = md.to_bytes()
    relink(files, r)


def relink(files: dict[str, bytes], r: Released) -> None:
    ts = Metadata.from_bytes(files["timestamp.json"])
    snap_name = f"{ts.signed.snapshot_meta.version}.snapshot.json"
    snap = Metadata.from_bytes(files[snap_name])
    tname = f"{snap.signed.meta['targets.json'].version}.targets.json"
    snap.signed.meta["targets.json"] = _meta(snap.signed.meta["targets.json"].version, files[tname])
    snap.signatures.clear()
    snap.sign(r.signers["snapshot"][0])
    files[snap_name] = snap.to_bytes()
    ts.signed.snapshot_meta = _meta(ts.signed.snapshot_meta.version, files[snap_name])
    ts.signatures.clear()
    ts.sign(r.signers["timestamp"][0])
    files["timestamp.json"] = ts.to_bytes()


def _meta(version: int, data: bytes) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def _forge_targets(f: dict[str, bytes], r: Released) -> None:
    md = Metadata.from_bytes(f["3.targets.json"])
    md.signatures.clear()
    md.sign(CryptoSigner.generate_ed25519())  # signed, but by a key nobody authorized
    f["3.targets.json"] = md.to_bytes()
    relink(f, r)


def _unsign_snapshot(f: dict[str, bytes], r: Released) -> None:
    md = Metadata.from_bytes(f["3.snapshot.json"])
    md.signatures.clear()
    f["3.snapshot.json"] = md.to_bytes()
    ts = Metadata.from_bytes(f["timestamp.json"])
    ts.signed.snapshot_meta = _meta(3, f["3.snapshot.json"])
    ts.signatures.clear()
    ts.sign(r.signers["timestamp"][0])
    f["timestamp.json"] = ts.to_bytes()


def _edit_targets_bytes(f: dict[str, bytes], r: Released) -> None:
    """One hex digit of a target hash changed: same length, other bytes."""
    data = f["3.targets.json"]
    i = data.index(b'"sha256": "') + len(b'"sha256": "')
    f["3.targets.json"] = data[:i] + (b"0" if data[i : i + 1] != b"0" else b"1") + data[i + 1 :]


def _tamper_target_length(f: dict[str, bytes], r: Released) -> None:
    doc = json.loads(f["3.targets.json"])
    doc["signed"]["targets"]["edge-gw/2.0/full.img.zst"]["length"] += 1
    f["3.targets.json"] = json.dumps(doc).encode()


def _broken_root_link(f: dict[str, bytes], r: Released) -> None:
    md = Metadata.from_bytes(f["1.root.json"])
    assert isinstance(md.signed, Root)
    md.signed.version = 2
    md.signatures.clear()
    newcomer = CryptoSigner.generate_ed25519()
    for kid in list(md.signed.roles["root"].keyids):
        md.signed.revoke_key(kid, "root")
    md.signed.add_key(newcomer.public_key, "root")
    md.signed.roles["root"].threshold = 1
    md.sign(newcomer)  # signed by its own keys only: root v1's keys never agreed
    f["2.root.json"] = md.to_bytes()


def _replayed_root(f: dict[str, bytes], r: Released) -> None:
    f["2.root.json"] = f["1.root.json"]


def _missing_snapshot(f: dict[str, bytes], r: Released) -> None:
    del f["3.snapshot.json"]


def _malformed_timestamp(f: dict[str, bytes], r: Released) -> None:
    f["timestamp.json"] = b'{"signed": {"_type": "timestamp", '


def _binary_targets(f: dict[str, bytes], r: Released) -> None:
    f["3.targets.json"] = b"\x00\x01garbage" * 10
    relink(f, r)


def _deeply_nested_timestamp(f: dict[str, bytes], r: Released) -> None:
    f["timestamp.json"] = b"[" * 100_000 + b"]" * 100_000


@dataclass(frozen=True)
class Bad:
    name: str
    attack: Callable[[dict[str, bytes], Released], None]
    where: str
    kind: str
    says: str
    later: timedelta = timedelta(0)


SIG, INV = "metadata-signature", "invalid-metadata"
BAD = [
    Bad("forged targets signature", _forge_targets, "targets", SIG, "valid"),
    Bad("missing snapshot signature", _unsign_snapshot, "snapshot", SIG, "found 0"),
    Bad("targets edited after signing", _edit_targets_bytes, "targets", INV, "sha256"),
    Bad("a target's length edited", _tamper_target_length, "targets", INV, "bytes"),
    Bad("root chain broken", _broken_root_link, "root", SIG, "root v1"),
    Bad("root N+1 is a copy of root N", _replayed_root, "root", INV, "expected version 2"),
    Bad("snapshot missing", _missing_snapshot, "snapshot", INV, "3.snapshot.json"),
    Bad("timestamp not JSON", _malformed_timestamp, "timestamp", INV, "not JSON"),
    Bad("targets binary", _binary_targets, "targets", INV, "binary data"),
    Bad("everything expired", lambda f, r: None, "timestamp", "metadata-expired", "expired",
        timedelta(days=400)),
    Bad("timestamp nested deeply", _deeply_nested_timestamp, "timestamp", INV,
        "timestamp"),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_a_bad_repository_is_shown_with_each_failure(bad: Bad, released: Released) -> None:
    files = files_of(released)
    bad.attack(files, released)
    at = NOW + bad.later
    rep = build_report(files, released.root, at)
    agrees(files, released.root, rep)
    assert not rep.verified
    hits = [f for f in rep.failures if f.where == bad.where and f.kind == bad.kind]
    assert hits, rep.failures
    assert any(bad.says.lower() in f.message.lower() for f in hits), hits


def test_expiry_points_out_every_expired_role(released: Released) -> None:
    rep = build_report(files_of(released), released.root, NOW + timedelta(days=400))
    assert {f.where for f in rep.failures if f.kind == "metadata-expired"} == {
        "root", "timestamp", "snapshot", "targets",
    }  # fmt: skip


def test_a_forged_role_still_shows_who_should_have_signed(released: Released) -> None:
    files = files_of(released)
    _forge_targets(files, released)
    targets = build_report(files, released.root, NOW).role("targets")
    assert targets.signatures_present == 1 and targets.signatures_valid == ()
    assert targets.signatures_missing == targets.keyids


def test_the_broken_link_is_in_the_root_chain(released: Released) -> None:
    files = files_of(released)
    _broken_root_link(files, released)
    rep = build_report(files, released.root, NOW)
    assert [(link.version, link.problem is None) for link in rep.root_chain] == [
        (1, True),
        (2, False),
    ]
    assert rep.role("targets").version == 3  # the rest is still shown, under root v1


# --- what python-tuf accepts: shown, judged by findings, verdict unchanged -------------------


def _duplicate_expires(f: dict[str, bytes], r: Released) -> None:
    text = f["3.targets.json"].decode()
    # the parser keeps the last value (the signed one); another reader may keep the first
    f["3.targets.json"] = text.replace(
        '"expires": ', '"expires": "2099-01-01T00:00:00Z", "expires": ', 1
    ).encode()
    relink(f, r)


def _unknown_field(f: dict[str, bytes], r: Released) -> None:
    resign(f, r, "3.targets.json", lambda md: md.signed.unrecognized_fields.update({"x-extra": 1}))


def _dotdot_target(f: dict[str, bytes], r: Released) -> None:
    def add(md: Metadata) -> None:  # type: ignore[type-arg]
        md.signed.targets["../../etc/passwd"] = TargetFile.from_data("../../etc/passwd", b"x")

    resign(f, r, "3.targets.json", add)


ACCEPTED = [
    ("duplicate JSON keys", _duplicate_expires, "OTA-M001"),
    ("unknown fields", _unknown_field, "OTA-M002"),
    ("a target path with ..", _dotdot_target, "OTA-T007"),
]


@pytest.mark.parametrize(("name", "edit", "finding"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_what_the_parser_accepts_is_reported(
    name: str, edit: Callable[[dict[str, bytes], Released], None], finding: str, released: Released
) -> None:
    from repo.findings import find

    files = files_of(released)
    edit(files, released)
    rep = build_report(files, released.root, NOW)
    agrees(files, released.root, rep)
    assert rep.verified  # python-tuf accepts it, and so does verify_published ...
    assert finding in {f.id for f in find(rep)}  # ... but the reviewer is told


def test_duplicate_keys_are_found_at_any_depth() -> None:
    assert duplicate_keys(b'{"a": {"b": 1, "b": 2}, "c": [{"d": 0, "d": 0}]}') == ["b", "d"]
    assert duplicate_keys(b'{"a": 1}') == [] and duplicate_keys(b"[" * 50_000) == []


# --- the command ----------------------------------------------------------------------------


def otakit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    import signer.cli

    code = run_app(signer.cli.app, "otakit", list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _tree(d: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(d)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


def test_the_command_shows_the_report_and_writes_nothing(
    released: Released, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(released.repo, repo)
    before = _tree(repo)
    root = str(repo / "metadata" / "1.root.json")
    at = ("--at", NOW.isoformat())
    code, out, err = otakit(capsys, "inspect", str(repo), "--root", root, *at)
    assert code == 0, err
    assert "VERIFIED from pinned root v1" in out and "OTA-K001" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "demo keys" in err
    code, out, _ = otakit(capsys, "inspect", str(repo), "--root", root, *at, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["otakit_inspect"] == 1 and doc["verified"] is True
    assert {f["id"] for f in doc["findings"]} == {"OTA-K001"}
    assert doc["warnings"]  # the demo-key warning travels with the JSON
    assert _tree(repo) == before


def test_fail_on_gates_on_findings(released: Released, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("inspect", str(released.repo), "--root", str(released.repo / "metadata/1.root.json"))
    at = ("--at", NOW.isoformat())
    assert otakit(capsys, *base, *at, "--fail-on", "critical")[0] == 3  # demo keys: critical
    code, _, err = otakit(capsys, *base, *at, "--fail-on", "high", "--json")
    assert code == 3 and "at or above high" in err
    assert otakit(capsys, *base, *at, "--fail-on", "nope")[0] == 2


def test_a_repository_that_does_not_verify_exits_3_with_its_report(
    released: Released, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(released.repo, repo)
    files = files_of(released)
    _forge_targets(files, released)
    for name, data in files.items():
        (repo / "metadata" / name).write_bytes(data)
    root = str(repo / "metadata" / "1.root.json")
    code, out, err = otakit(capsys, "inspect", str(repo), "--root", root, "--json")
    doc = json.loads(out)
    assert code == 3 and doc["verified"] is False
    assert [f["where"] for f in doc["failures"]] == ["targets"]
    code, out, err = otakit(capsys, "inspect", str(repo), "--root", root)
    assert code == 3 and "NOT VERIFIED" in out and "does NOT verify" in err
    assert "Traceback" not in out + err


def test_bad_arguments_are_usage_errors(
    released: Released, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(released.repo / "metadata" / "1.root.json")
    assert otakit(capsys, "inspect", "diff", "--root", root)[0] == 2  # kept for 'inspect diff'
    assert otakit(capsys, "inspect", str(released.repo), "--root", root, "--at", "soon")[0] == 2
    snapshot = str(released.repo / "metadata" / "3.snapshot.json")
    code, _, err = otakit(capsys, "inspect", str(released.repo), "--root", snapshot)
    assert code == 2 and "not a TUF root" in err


def test_a_stalled_server_is_a_transport_error_not_a_hang() -> None:
    import socket
    import time

    from verifier.errors import TransportError

    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            HttpSource(url, socket_timeout=0.5).get("1.root.json")
        assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("signer", "keytype", "bits"),
    [
        (lambda: CryptoSigner.generate_rsa(size=2048), "rsa", 2048),
        (lambda: CryptoSigner.generate_ecdsa(), "ecdsa", 256),
        (CryptoSigner.generate_ed25519, "ed25519", None),
    ],
    ids=["rsa-2048", "ecdsa-p256", "ed25519"],
)
def test_key_sizes_are_read_from_the_public_keys(
    signer: Callable[[], CryptoSigner], keytype: str, bits: int | None
) -> None:
    """A root whose targets key is weak: its size is in the report, and OTA-K002 fires."""
    from repo.findings import find

    signers = {r: signer() if r == "targets" else CryptoSigner.generate_ed25519() for r in ONLINE}
    root_signer = CryptoSigner.generate_ed25519()
    md = Metadata(Root(expires=NOW + timedelta(days=365), consistent_snapshot=True))
    md.signed.add_key(root_signer.public_key, "root")
    for r, s in signers.items():
        md.signed.add_key(s.public_key, r)
    md.sign(root_signer)
    rep = build_report({}, md.to_bytes(), NOW)  # nothing published: failures, keys still shown
    assert not rep.verified and rep.failures[0].where == "timestamp"
    targets_key = next(k for k in rep.keys if k.roles == ("targets",))
    assert (targets_key.keytype, targets_key.bits) == (keytype, bits)
    assert ("OTA-K002" in {f.id for f in find(rep)}) is (keytype == "rsa")


def test_a_root_of_another_repository_verifies_nothing(released: Released) -> None:
    other = CryptoSigner.generate_ed25519()
    md = Metadata(Root(expires=NOW + timedelta(days=365), consistent_snapshot=True))
    for r in ("root", *ONLINE):
        md.signed.add_key(other.public_key, r)
    md.sign(other)
    files = files_of(released)
    rep = build_report(files, md.to_bytes(), NOW)
    agrees(files, md.to_bytes(), rep)
    assert {(f.where, f.kind) for f in rep.failures} == {
        (role, "metadata-signature") for role in ("timestamp", "snapshot", "targets")
    }
