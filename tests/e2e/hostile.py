"""A hostile HTTP server of our own, in front of the real nginx, for the TUF attack tests.

It stands where a compromised mirror, CDN or network would: every request is forwarded to
nginx unless a rule for its path says otherwise, and the test changes the rules while the
proxy runs. What an attacker on the wire can do, a rule does:

* ``Pass``        forward to nginx (the default; ``Range`` is forwarded too)
* ``Replace``     serve other bytes (an older file: rollback, freeze, mix-and-match; a forgery)
* ``Drip``        the real body, ``chunk`` bytes every ``interval`` seconds (slow retrieval)
* ``Endless``     data without end and without a length (endless data)
* ``Truncate``    the real ``Content-Length`` but only the first ``length`` bytes, then close
* ``WrongLength`` the real body under a ``Content-Length`` that lies
* ``Fail``        an HTTP error status

Rules match the request path with ``fnmatch`` patterns (``/metadata/timestamp.json``,
``/targets/edge-gw/2.0/*``); the first matching rule wins, in the order they were set. Every
request is logged (``requests``) so a test can prove what the device did *not* fetch.

Everything the proxy sends is bounded in time and size (``Limits``), so a test that goes wrong
never leaves a thread writing forever: a drip or an endless body stops at its limit, when the
client goes away, or when the proxy is stopped.
"""

from __future__ import annotations

import fnmatch
import http.client
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Pass:
    """Forward the request to nginx and its answer back unchanged."""


@dataclass(frozen=True)
class Replace:
    """Answer with ``body`` (and ``status``) instead of what nginx has."""

    body: bytes
    status: int = 200


@dataclass(frozen=True)
class Drip:
    """The real body, ``chunk`` bytes every ``interval`` seconds, with its real length."""

    interval: float = 1.0
    chunk: int = 1


@dataclass(frozen=True)
class Endless:
    """An answer without ``Content-Length`` that never ends (until a ``Limits`` bound)."""

    fill: bytes = b"{" * 65536


@dataclass(frozen=True)
class Truncate:
    """The real ``Content-Length`` header, but only the first ``length`` bytes of the body."""

    length: int


@dataclass(frozen=True)
class WrongLength:
    """The real body under ``Content-Length: declared``."""

    declared: int


@dataclass(frozen=True)
class Fail:
    """An HTTP error status with a short body."""

    status: int = 500


Rule = Pass | Replace | Drip | Endless | Truncate | WrongLength | Fail


@dataclass(frozen=True)
class Limits:
    """What the proxy sends at most for one request, whatever a rule asks."""

    max_seconds: float = 120.0
    max_bytes: int = 256 << 20


@dataclass(frozen=True)
class Upstream:
    """What nginx answered."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


_FORWARDED_HEADERS = ("content-type", "content-range", "last-modified", "etag", "accept-ranges")


class HostileProxy:
    """The proxy's state: the rules, the request log; ``url`` is where devices connect."""

    def __init__(self, upstream: str, limits: Limits | None = None) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        #: a path prefix of ``upstream`` (nginx serving several repositories) goes in front
        self._prefix = self.upstream.path.rstrip("/")
        self.limits = limits or Limits()
        self._rules: list[tuple[str, Rule]] = []
        self._log: list[str] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- configuration from the test -----------------------------------------------------

    def set(self, pattern: str, rule: Rule) -> None:
        """Apply ``rule`` to request paths matching ``pattern`` (after the rules set before)."""
        with self._lock:
            self._rules.append((pattern, rule))

    def clear(self) -> None:
        """Back to an honest proxy; the request log is cleared too."""
        with self._lock:
            self._rules.clear()
            self._log.clear()

    def rule_for(self, path: str) -> Rule:
        with self._lock:
            for pattern, rule in self._rules:
                if fnmatch.fnmatchcase(path, pattern):
                    return rule
        return Pass()

    @property
    def requests(self) -> list[str]:
        with self._lock:
            return list(self._log)

    def log(self, path: str) -> None:
        with self._lock:
            self._log.append(path)

    # --- the upstream --------------------------------------------------------------------

    def fetch_upstream(self, path: str, headers: dict[str, str]) -> Upstream:
        host = self.upstream.hostname or "127.0.0.1"
        conn = http.client.HTTPConnection(host, self.upstream.port or 80, timeout=30)
        try:
            conn.request("GET", self._prefix + path, headers=headers)
            resp = conn.getresponse()
            body = resp.read(self.limits.max_bytes)
            kept = tuple((k, v) for k, v in resp.getheaders() if k.lower() in _FORWARDED_HEADERS)
            return Upstream(resp.status, kept, body)
        finally:
            conn.close()

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def hostile_proxy(upstream: str, limits: Limits | None = None) -> Iterator[HostileProxy]:
    """A running proxy in front of ``upstream`` (nginx's base URL), stopped on exit."""
    proxy = HostileProxy(upstream, limits)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _handler_for(proxy: HostileProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test reads proxy.requests; stderr stays quiet

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            proxy.log(path)
            rule = proxy.rule_for(path)
            try:
                _serve(self, proxy, rule)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client gave up: that is what an attack wants to provoke
            finally:
                self.close_connection = True

    return Handler


def _serve(h: BaseHTTPRequestHandler, proxy: HostileProxy, rule: Rule) -> None:
    if isinstance(rule, Fail):
        _send(h, rule.status, (), f"hostile proxy: HTTP {rule.status}\n".encode())
        return
    if isinstance(rule, Replace):
        _send(h, rule.status, (), rule.body)
        return
    if isinstance(rule, Endless):
        _endless(h, proxy, rule)
        return
    headers = {"Range": h.headers["Range"]} if h.headers.get("Range") else {}
    up = proxy.fetch_upstream(h.path, headers)
    if isinstance(rule, Pass):
        _send(h, up.status, up.headers, up.body)
    elif isinstance(rule, Truncate):
        _send(h, up.status, up.headers, up.body[: rule.length], length=len(up.body))
    elif isinstance(rule, WrongLength):
        _send(h, up.status, up.headers, up.body, length=rule.declared)
    else:
        _drip(h, proxy, rule, up)


def _send(
    h: BaseHTTPRequestHandler,
    status: int,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    *,
    length: int | None = None,
) -> None:
    h.send_response(status)
    for k, v in headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(body)
    h.wfile.flush()


def _drip(h: BaseHTTPRequestHandler, proxy: HostileProxy, rule: Drip, up: Upstream) -> None:
    h.send_response(up.status)
    for k, v in up.headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(up.body)))
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.flush()
    deadline = time.monotonic() + proxy.limits.max_seconds
    for i in range(0, len(up.body), rule.chunk):
        if proxy.stopping.wait(rule.interval) or time.monotonic() > deadline:
            return
        h.wfile.write(up.body[i : i + rule.chunk])
        h.wfile.flush()


def _endless(h: BaseHTTPRequestHandler, proxy: HostileProxy, rule: Endless) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/octet-stream")
    h.send_header("Connection", "close")
    h.end_headers()
    deadline = time.monotonic() + proxy.limits.max_seconds
    sent = 0
    while sent < proxy.limits.max_bytes and time.monotonic() < deadline:
        if proxy.stopping.is_set():
            return
        h.wfile.write(rule.fill)
        sent += len(rule.fill)
