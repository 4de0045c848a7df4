"""The TUF client wrapper: durable, crash-safe metadata commits, root rotation, offline reads,
error mapping and the Range-capable HTTP fetcher."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_exc

from tests.simdisk import PowerCut, SimDisk
from tests.verifier.conftest import NOW, World, evolve, make_world
from verifier.effects import RealDisk
from verifier.errors import (
    MetadataError,
    MetadataRollbackError,
    StorageError,
    TargetVerificationError,
    TransportError,
    TrustedMetadataError,
)
from verifier.state import StatePaths
from verifier.tuf.client import TufClient, trusted_candidates
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import HttpFetcher
from verifier.tuf.store import TrustedStore


def _client(w: World, disk: object | None = None) -> TufClient:
    paths = StatePaths(w.state)
    return TufClient(
        paths,
        "http://repo.test/metadata/",
        "http://repo.test/targets/",
        disk or RealDisk(),
        now=NOW,
        fetcher=w.sim,  # type: ignore[arg-type]
    )


def _versions(w: World) -> set[str]:
    return {str(c.info.version) for c in trusted_candidates(StatePaths(w.state))}


def _primed(tmp: Path) -> World:
    w = make_world(tmp)
    w.sim.add_full(w.v1, "1.0")
    w.sim.publish()
    with _client(w) as c:
        c.refresh()
    return w


def test_refresh_commits_a_generation_and_collects_the_old_one(tmp_path: Path) -> None:
    w = _primed(tmp_path)
    store = TrustedStore(w.state / "metadata", RealDisk())
    gen, files = store.current()
    assert gen == 1 and set(files) == {"timestamp", "snapshot", "targets"}
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.publish()
    with _client(w) as c:
        assert {str(x.info.version) for x in c.refresh()} == {"1.0", "2.0"}
    gen2, files2 = store.current()
    assert gen2 == 2
    names = sorted(p.name for p in (w.state / "metadata").iterdir() if p.is_file())
    assert names == sorted(["current.json", *(p.name for p in files2.values())])
    with _client(w) as c:  # nothing new: nothing written
        c.refresh()
    assert store.current()[0] == 2


def test_crash_anywhere_in_a_metadata_commit_leaves_old_or_new_set(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    w = _primed(tmp_path / "w")
    w.sim.add_full(evolve(w.v1, 2), "2.0")
    w.sim.rotate_root()
    w.sim.publish()
    pristine = tmp_path / "pristine"
    shutil.copytree(w.state, pristine)
    counter = SimDisk(w.state)
    with _client(w, counter) as c:
        c.refresh()
    total = counter.count
    assert total > 6
    outcomes = set()
    for k in range(total):
        shutil.rmtree(w.state)
        shutil.copytree(pristine, w.state)
        disk = SimDisk(w.state, crash_after=k)
        with pytest.raises(PowerCut), _client(w, disk) as c:
            c.refresh()
        disk.reboot()
        seen = frozenset(_versions(w))  # parses and verifies: never a mix that fails
        assert seen in ({"1.0"}, {"1.0", "2.0"}), (k, seen)
        outcomes.add(seen)
        with _client(w) as c:  # and the next run converges
            assert {str(x.info.version) for x in c.refresh()} == {"1.0", "2.0"}
    assert outcomes == {frozenset({"1.0"}), frozenset({"1.0", "2.0"})}


def test_root_rotation_is_followed_and_persisted(tmp_path: Path) -> None:
    w = _primed(tmp_path)
    w.sim.rotate_root()
    w.sim.publish()
    with _client(w) as c:
        c.refresh()
    assert (w.state / "metadata" / "root" / "2.root.json").exists()
    w.sim.requests.clear()
    w.sim.refused.clear()
    with _client(w) as c:
        c.refresh()
    # the new root comes from the durable store; only 3.root.json (absent) is asked for
    assert [k for k, _ in w.sim.requests if "root" in k] == []
    assert w.sim.refused == ["metadata/3.root.json"]


def test_offline_read_rejects_tampered_trusted_targets(tmp_path: Path) -> None:
    w = _primed(tmp_path)
    _, files = TrustedStore(w.state / "metadata", RealDisk()).current()
    doc = json.loads(files["targets"].read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # extend validity without the key
    files["targets"].write_bytes(json.dumps(doc).encode())
    with pytest.raises(TrustedMetadataError, match="is signed by no trusted root's targets keys"):
        trusted_candidates(StatePaths(w.state))


@pytest.mark.parametrize(
    "exc,expected",
    [
        (tuf_exc.UnsignedMetadataError("x"), MetadataError),
        (tuf_exc.ExpiredMetadataError("x"), MetadataError),
        (tuf_exc.BadVersionNumberError("x"), MetadataRollbackError),
        (tuf_exc.LengthOrHashMismatchError("x"), TargetVerificationError),
        (tuf_exc.DownloadLengthMismatchError("x"), MetadataError),
        (tuf_exc.DownloadHTTPError("x", 503), TransportError),
        (tuf_exc.SlowRetrievalError("x"), TransportError),
        (tuf_exc.DownloadError("x"), TransportError),
        (OSError(28, "No space left on device"), StorageError),
    ],
)
def test_every_tuf_error_maps_into_our_hierarchy(exc: Exception, expected: type) -> None:
    mapped = map_tuf_error(exc, "ctx")
    assert type(mapped) is expected
    assert "ctx" in mapped.message
    assert type(exc).__name__ not in mapped.diagnostic()  # library class names mean nothing


@pytest.mark.parametrize(
    "exc", [tuf_exc.ExpiredMetadataError(), tuf_exc.SlowRetrievalError(), ValueError()]
)
def test_a_library_error_without_text_still_says_something(exc: Exception) -> None:
    message = map_tuf_error(exc, "ctx").message
    assert message.startswith("ctx: ") and len(message) > len("ctx: ")
    assert type(exc).__name__ not in message


class _RangeHandler(BaseHTTPRequestHandler):
    body = bytes(range(256)) * 64
    honour_range = True

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            )
            data = self.body[start:]
        elif self.path == "/missing":
            self.send_response(404)
            data = b""
        else:
            self.send_response(200)
            data = self.body
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("honour", [True, False])
def test_http_fetcher_resumes_with_range_or_restarts(server: str, honour: bool) -> None:
    _RangeHandler.honour_range = honour
    try:
        start, chunks = HttpFetcher().fetch_from(f"{server}/f", 1000)
        data = b"".join(chunks)
    finally:
        _RangeHandler.honour_range = True
    body = _RangeHandler.body
    assert (start, data) == ((1000, body[1000:]) if honour else (0, body))


def test_http_fetcher_reports_http_errors(server: str) -> None:
    with pytest.raises(tuf_exc.DownloadHTTPError):
        list(HttpFetcher().fetch(f"{server}/missing"))


@pytest.mark.parametrize(
    "custom",
    [None, {}, {"vendor": {"x": 1}}, {"otakit": {"schema": "9.0"}}],
    ids=["no-custom", "empty-custom", "foreign-custom", "otakit-schema-from-the-future"],
)
def test_targets_that_are_not_ours_are_skipped_not_fatal(custom: object) -> None:
    from tuf.api.metadata import TargetFile

    from verifier.tuf.client import candidate

    fields = {} if custom is None else {"custom": custom}
    tf = TargetFile(4, {"sha256": "ab" * 32}, "docs/readme.txt", unrecognized_fields=fields)
    assert candidate(tf) is None


def test_a_device_far_behind_follows_more_rotations_than_one_refresh_may_walk(
    tmp_path: Path,
) -> None:
    # python-tuf walks at most max_root_rotations (32) roots per refresh, counted from the
    # bootstrap root. Each rotation here also replaces the timestamp key, so the first refresh
    # cannot finish; it must keep the roots it verified and the next one must get there.
    w = _primed(tmp_path)
    for _ in range(40):
        w.sim.rotate_root()
    w.sim.publish()
    with _client(w) as c, pytest.raises(MetadataError):
        c.refresh()
    roots = StatePaths(w.state).metadata / "root"
    assert (roots / "33.root.json").exists(), "verified roots were not kept"
    with _client(w) as c:
        assert {str(x.info.version) for x in c.refresh()} == {"1.0"}
    assert (roots / "41.root.json").exists()


def test_a_damaged_stored_root_is_never_trusted_nor_silently_skipped(tmp_path: Path) -> None:
    """Skipping it would fall back to root 1, whose keys root 2 may have revoked (issue 9)."""
    w = _primed(tmp_path)
    w.sim.rotate_root()
    w.sim.publish()
    with _client(w) as c:
        c.refresh()
    stored = StatePaths(w.state).metadata / "root" / "2.root.json"
    doc = json.loads(stored.read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # signatures no longer match
    damaged = json.dumps(doc).encode()
    stored.write_bytes(damaged)
    with pytest.raises(TrustedMetadataError, match=r"root/2\.root\.json does not verify") as e:
        _client(w)
    assert e.value.hint and "OPERATIONS.md" in e.value.hint
    assert stored.read_bytes() == damaged  # left for the operator to look at
