"""The demo HTTP server: serves metadata/ and targets/ only, refuses every escape attempt."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater

from repo.errors import LocalError
from repo.keys import KeyConfig
from repo.repository import load_role_signers, open_transaction
from repo.serve import resolve_request_path, serve_in_thread
from tests.helpers_repo import NOW, root_bytes

DATA = b"served target " * 500


@pytest.fixture
def served(repo: Path, keys: KeyConfig) -> Iterator[tuple[Path, str]]:
    src = repo.parent / "t.src"
    src.write_bytes(DATA)
    signers = load_role_signers(keys, ("targets", "snapshot", "timestamp"))
    with open_transaction(repo) as tx:
        tx.add_target(TargetFile.from_data("prod/1/t.img", DATA, ["sha256"]), src)
        tx.commit(signers, NOW)
    (repo.parent / "secret.txt").write_text("outside the repository")
    url, stop = serve_in_thread(repo)
    try:
        yield repo, url
    finally:
        stop()


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_tuf_client_updates_over_http(served: tuple[Path, str], tmp_path: Path) -> None:
    repo, url = served
    assert url.startswith("http://127.0.0.1:")
    for d in ("md", "tg"):
        (tmp_path / d).mkdir()
    updater = Updater(
        metadata_dir=str(tmp_path / "md"),
        metadata_base_url=f"{url}/metadata/",
        target_dir=str(tmp_path / "tg"),
        target_base_url=f"{url}/targets/",
        bootstrap=root_bytes(repo),
    )
    updater.refresh()
    info = updater.get_targetinfo("prod/1/t.img")
    assert info is not None
    assert Path(updater.download_target(info)).read_bytes() == DATA


def test_metadata_is_served(served: tuple[Path, str]) -> None:
    repo, url = served
    assert _get(url, "/metadata/timestamp.json") == (
        200,
        (repo / "metadata" / "timestamp.json").read_bytes(),
    )


ESCAPES = [
    "/../secret.txt",
    "/metadata/../../secret.txt",
    "/metadata/%2e%2e/%2e%2e/secret.txt",
    "/metadata/..%2f..%2fsecret.txt",
    "/metadata/..%5c..%5csecret.txt",
    "/targets/../metadata/../../secret.txt",
    "/.otakit-publish.lock",
    "/metadata/.timestamp.json.tmp",
    "/metadata/",
    "/metadata",
    "/targets/prod/",
    "/",
    "//etc/passwd",
    "/metadata//timestamp.json",
    "/metadata/timestamp.json%00",
    "/other/file",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_escapes_hidden_files_and_directory_listings_are_refused(
    served: tuple[Path, str], path: str
) -> None:
    repo, url = served
    (repo / "metadata" / ".timestamp.json.tmp").write_text("temp")
    status, body = _get(url, path)
    assert status == 404
    assert b"outside the repository" not in body


def test_a_symlink_out_of_the_repository_is_not_followed(served: tuple[Path, str]) -> None:
    repo, url = served
    os.symlink(repo.parent / "secret.txt", repo / "targets" / "link.txt")
    assert _get(url, "/targets/link.txt")[0] == 404
    assert resolve_request_path(repo.resolve(), "/targets/link.txt") is None


def test_range_requests_resume_a_download(served: tuple[Path, str]) -> None:
    repo, url = served
    ts = (repo / "metadata" / "timestamp.json").read_bytes()
    assert _get(url, "/metadata/timestamp.json", {"Range": "bytes=10-"}) == (206, ts[10:])
    assert _get(url, "/metadata/timestamp.json", {"Range": "bytes=0-4"}) == (206, ts[:5])
    assert _get(url, "/metadata/timestamp.json", {"Range": f"bytes={len(ts)}-"})[0] == 416
    assert _get(url, "/metadata/timestamp.json", {"Range": "bytes=1-2,4-5"})[0] == 416


def test_serving_a_non_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="expected a repository"):
        serve_in_thread(tmp_path)


def test_connections_are_bounded_one_past_the_limit_is_told_busy_at_once(
    served: tuple[Path, str],
) -> None:
    """Two clients that connect and send nothing hold both slots of a server limited to
    two; a third is answered 503 at once instead of getting a thread of its own, and is
    served again as soon as a slot is free."""
    import socket
    import time

    from repo.serve import in_thread, make_server

    repo, _ = served
    url, stop = in_thread(make_server(repo, "127.0.0.1", 0, quiet=True, max_connections=2), "t")
    host, port = url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)  # both accepted and waiting in their handlers
        t0 = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=5) as third:
            answer = third.recv(200)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert time.monotonic() - t0 < 2
        idle.pop().close()
        deadline = time.monotonic() + 5
        while (status := _get(url, "/metadata/timestamp.json")[0]) == 503:
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.05)
        assert status == 200
    finally:
        for s in idle:
            s.close()
        stop()
