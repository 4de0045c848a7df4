"""Name resolution is bounded (issue 9's note: a resolver that never answers stalled a
device's update past every deadline, since ``getaddrinfo`` is out of reach of socket
timeouts), and every address the resolver returns is tried in turn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tuf.api import exceptions as tuf_exc

from verifier.tuf.fetcher import HttpFetcher, resolve_within
from verifier.tuf.transfer import TransferLimits

_real_getaddrinfo = socket.getaddrinfo


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_resolver_that_never_answers_fails_the_connection_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def hang(host: str, *args: Any, **kw: Any) -> Any:
        if host == "updates.example":
            time.sleep(30)
        return _real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    fetcher = HttpFetcher(TransferLimits(connect_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(tuf_exc.DownloadError, match="cannot resolve the host name") as e:
        b"".join(fetcher.fetch("http://updates.example/metadata/timestamp.json"))
    assert time.monotonic() - started < 5
    assert "did not answer within 0.5 s" in str(e.value)


def test_every_address_is_tried_in_turn(monkeypatch: pytest.MonkeyPatch, server: int) -> None:
    """The first address refuses (nothing listens there), the second serves."""
    dead = _closed_port()

    def two(host: str, port: Any, *args: Any, **kw: Any) -> Any:
        if host == "updates.example":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return _real_getaddrinfo(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", two)
    assert resolve_within("updates.example", server, 1) == ["127.0.0.2", "127.0.0.1"]
    fetcher = HttpFetcher(TransferLimits(connect_timeout=2))
    assert b"".join(fetcher.fetch(f"http://updates.example:{server}/x")) == b"hello"
    # and when every address refuses, the failure is the connection's, not the resolver's
    with pytest.raises(tuf_exc.DownloadError, match="connection refused"):
        b"".join(fetcher.fetch(f"http://updates.example:{dead}/x"))


def test_a_numeric_host_needs_no_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kw: Any) -> Any:
        raise AssertionError("resolver called for a numeric host")

    monkeypatch.setattr(socket, "getaddrinfo", boom)
    assert resolve_within("127.0.0.1", 80, 0.1) == ["127.0.0.1"]
    assert resolve_within("[::1]", 80, 0.1) == ["::1"]


def test_an_unknown_name_is_told_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(host: str, *args: Any, **kw: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    fetcher = HttpFetcher(TransferLimits(connect_timeout=1))
    with pytest.raises(tuf_exc.DownloadError, match=r"cannot resolve the host name 'nope\."):
        b"".join(fetcher.fetch("http://nope.example/x"))
