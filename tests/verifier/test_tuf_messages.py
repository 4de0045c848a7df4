"""What a user reads when the network or a root file is wrong: plain words that tell the
cases apart, no library class names."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata, Targets

from tests.verifier.conftest import NOW, make_world
from verifier.effects import RealDisk
from verifier.errors import ConfigError, MetadataSignatureError, TransportError, UsageError
from verifier.state import StatePaths
from verifier.tuf.client import TufClient, TufLimits, load_root_bytes
from verifier.tuf.failures import map_tuf_error
from verifier.tuf.fetcher import HttpFetcher
from verifier.tuf.transfer import TransferLimits

#: "SlowRetrievalError", "NewConnectionError", "DeserializationError", ...
CLASS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b")


def _refusing_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections (kernel backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def _refresh_error(tmp_path: Path, port: int) -> TransportError:
    w = make_world(tmp_path)
    base = f"http://127.0.0.1:{port}"
    limits = TufLimits(transfer=TransferLimits(connect_timeout=0.5, read_timeout=0.5))
    client = TufClient(
        StatePaths(w.state),
        f"{base}/metadata/",
        f"{base}/targets/",
        RealDisk(),
        now=NOW,
        limits=limits,
    )
    with client, pytest.raises(TransportError) as refused:
        client.refresh()
    return refused.value


def test_connection_refused_is_not_reported_as_a_timeout(tmp_path: Path) -> None:
    port = _refusing_port()
    err = _refresh_error(tmp_path, port)
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in err.message
    assert "timed out" not in err.message
    assert err.hint and "URL" in err.hint
    assert not CLASS_NAME.search(err.diagnostic()), err.diagnostic()


def test_a_server_that_never_answers_is_a_timeout(tmp_path: Path, silent_server: int) -> None:
    started = time.monotonic()
    err = _refresh_error(tmp_path, silent_server)
    assert time.monotonic() - started < 10
    assert f"timed out waiting for 127.0.0.1:{silent_server} to answer" in err.message
    assert "no response within 0.5 s" in err.message
    assert "refused" not in err.message
    assert not CLASS_NAME.search(err.diagnostic()), err.diagnostic()


def _fail_with(exc: Exception) -> str:
    fetcher = HttpFetcher(TransferLimits(connect_timeout=3, read_timeout=3))

    def request(*args: object, **kw: object) -> None:
        raise exc

    fetcher._pool.request = request  # type: ignore[method-assign,assignment]
    with pytest.raises(tuf_exc.DownloadError) as raised:
        list(fetcher.fetch("http://repo.example:8080/metadata/timestamp.json"))
    return map_tuf_error(raised.value, "repository metadata").message


def _caused(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    "exc,expected",
    [
        (
            _caused(
                urllib3.exceptions.NewConnectionError(None, "x"),  # type: ignore[arg-type]
                ConnectionRefusedError(111, "Connection refused"),
            ),
            "cannot connect to repo.example:8080: connection refused",
        ),
        (
            _caused(
                urllib3.exceptions.NewConnectionError(None, "x"),  # type: ignore[arg-type]
                OSError(101, "Network is unreachable"),
            ),
            "cannot connect to repo.example:8080: network is unreachable",
        ),
        (
            urllib3.exceptions.NameResolutionError("repo.example", None, OSError("x")),  # type: ignore[arg-type]
            "cannot connect to repo.example:8080: cannot resolve the host name 'repo.example'",
        ),
        (
            urllib3.exceptions.ConnectTimeoutError("x"),
            "timed out connecting to repo.example:8080 (no connection within 3 s)",
        ),
        (
            urllib3.exceptions.ReadTimeoutError(None, "u", "x"),  # type: ignore[arg-type]
            "timed out waiting for repo.example:8080 to answer",
        ),
        (
            urllib3.exceptions.ProtocolError(
                "Connection aborted.", ConnectionResetError(104, "reset")
            ),
            "cannot fetch http://repo.example:8080/metadata/timestamp.json: [Errno 104] reset",
        ),
    ],
    ids=["refused", "unreachable", "unknown-host", "connect-timeout", "read-timeout", "reset"],
)
def test_each_transport_failure_says_what_happened(exc: Exception, expected: str) -> None:
    message = _fail_with(exc)
    assert expected in message
    assert not CLASS_NAME.search(message), message


# --- the root given at init ------------------------------------------------------------------


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.mark.parametrize(
    "content,found",
    [
        (_png(), "found binary data (72 bytes, starting 89 50 4e 47 0d 0a 1a 0a)"),
        (bytes(4096), "found binary data (4096 bytes"),
        (b"hello\n", "found text that is not JSON (Expecting value at line 1 column 1)"),
        (b'{"name": "x"}', "found a JSON object without 'signed' and 'signatures'"),
        (b"[1, 2]", "found a JSON list, not an object"),
        (
            Metadata(Targets(expires=NOW)).to_bytes(),
            "found targets metadata",
        ),
        (
            json.dumps({"signed": {"_type": "root"}, "signatures": []}).encode(),
            "found invalid root metadata (missing field",
        ),
    ],
    ids=["png-image", "disk-image", "text", "other-json", "json-list", "targets", "broken-root"],
)
def test_a_file_that_is_not_a_root_is_named_as_such(
    tmp_path: Path, content: bytes, found: str
) -> None:
    path = tmp_path / "v1.img"
    path.write_bytes(content)
    with pytest.raises(UsageError) as refused:
        load_root_bytes(path)
    msg = refused.value.message
    assert msg.startswith(f"{path}: not a TUF root metadata JSON file (expected a JSON object")
    assert found in msg, msg
    assert not CLASS_NAME.search(refused.value.diagnostic()), refused.value.diagnostic()


def test_a_missing_root_file_is_a_configuration_problem_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "root.json"
    with pytest.raises(ConfigError, match=rf"cannot read root metadata {re.escape(str(path))}"):
        load_root_bytes(path)


def test_a_root_that_does_not_carry_its_own_threshold_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    doc = json.loads(w.sim.root_bytes)
    doc["signatures"] = []
    path = tmp_path / "root.json"
    path.write_bytes(json.dumps(doc).encode())
    with pytest.raises(MetadataSignatureError, match=r"root v1: expected 1 valid signature"):
        load_root_bytes(path)
    path.write_bytes(w.sim.root_bytes)
    assert load_root_bytes(path) == w.sim.root_bytes


def test_a_huge_root_file_is_refused_after_a_bounded_read(tmp_path: Path) -> None:
    """--root pointed at an image by mistake: refused without reading it all (P4)."""
    big = tmp_path / "image.img"
    big.write_bytes(b"{" + b" " * (600 * 1024))
    with pytest.raises(UsageError, match="expected at most 524288 bytes"):
        load_root_bytes(big)
