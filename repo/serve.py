"""A small read-only HTTP server for a published repository (demo, tests, local mirrors).

Only ``/metadata/...`` and ``/targets/...`` are served, GET and HEAD only, regular files
only. A request path is treated as an untrusted name (P3): every segment must be a plain
file name (no ``..``, no hidden names, no backslashes or NULs), and the resolved file must
still lie inside the repository after symlinks are followed. No directory is ever listed.
Single ``Range: bytes=a-b`` requests are honoured so a device can resume a download.
Production deployments should put the repository behind nginx or a CDN instead.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from repo.errors import LocalError
from repo.layout import METADATA_DIR, TARGETS_DIR
from verifier.terminal import printable

CHUNK = 1 << 16
#: connections served at once (``repo serve``, ``fleet collect``): each one holds a thread,
#: so without a bound a client opening connections and sending nothing (or a fleet reporting
#: at once) grows the server without limit; one past it is answered 503 and closed at once
MAX_CONNECTIONS = 64
#: seconds a connection may sit without sending its request (or reading the answer)
IDLE_TIMEOUT = 30.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n"
    b"Connection: close\r\n\r\n"
)
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}\Z")
_RANGE_RE = re.compile(r"^bytes=([0-9]{1,19})-([0-9]{0,19})\Z")


def resolve_request_path(root: Path, raw_path: str) -> Path | None:
    """Map a request path to a file inside ``root`` (already resolved), or ``None``."""
    path = urlsplit(raw_path).path
    if "%2f" in path.lower() or "%5c" in path.lower():
        return None
    segments = unquote(path).split("/")
    if len(segments) < 3 or segments[0] != "" or segments[1] not in (METADATA_DIR, TARGETS_DIR):
        return None
    if not all(_SEGMENT_RE.match(s) for s in segments[1:]):
        return None
    candidate = root.joinpath(*segments[1:])
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root / segments[1]) or not real.is_file():
        return None
    return real


def _make_handler(root: Path, quiet: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "otakit-repo"
        sys_version = ""
        timeout = IDLE_TIMEOUT

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _serve(self, *, body: bool) -> None:
            path = resolve_request_path(root, self.path)
            if path is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            try:
                f = path.open("rb")
            except OSError:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            with f:
                size = path.stat().st_size
                start, end = 0, size
                status = HTTPStatus.OK
                rng = self.headers.get("Range")
                if rng is not None:
                    m = _RANGE_RE.match(rng.strip())
                    if m is None:
                        self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        return
                    start = int(m.group(1))
                    end = min(int(m.group(2)) + 1, size) if m.group(2) else size
                    if start >= size or start >= end:
                        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == HTTPStatus.PARTIAL_CONTENT:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if body:
                    _copy(f, self.wfile, start, end)

        def log_message(self, format: str, *args: object) -> None:
            if not quiet:
                log_request(self.address_string(), format % args)

    return Handler


def log_request(address: str, message: str) -> None:
    """One access-log line on stderr (our handlers' ``log_message``; overriding it loses
    http.server's own escaping of control characters, so it is done here)."""
    sys.stderr.write(f"{address} {printable(message)}\n")


def _copy(f: BinaryIO, out: BufferedIOBase, start: int, end: int) -> None:
    f.seek(start)
    left = end - start
    while left > 0:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            break
        out.write(chunk)
        left -= len(chunk)


def make_server(
    repo_dir: Path,
    host: str,
    port: int,
    *,
    quiet: bool = False,
    max_connections: int = MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    root = repo_dir.resolve()
    if not (root / METADATA_DIR).is_dir():
        raise LocalError(
            f"{repo_dir}: expected a repository with a {METADATA_DIR}/ directory, found none",
            hint="create one with: otakit repo init REPO --keys KEYCONF",
        )
    return listen(host, port, _make_handler(root, quiet), max_connections=max_connections)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:  # never block the accept loop: say busy, and close
                request.settimeout(1.0)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def listen(
    host: str,
    port: int,
    handler: type[BaseHTTPRequestHandler],
    *,
    max_connections: int = MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    """A bounded threading server for ``handler`` (also ``otakit fleet collect``'s)."""
    try:
        return BoundedHTTPServer((host, port), handler, max_connections)
    except OSError as e:
        raise LocalError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def server_url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    host_s = host.decode() if isinstance(host, bytes) else str(host)
    if ":" in host_s:
        host_s = f"[{host_s}]"
    return f"http://{host_s}:{port}"


def serve_in_thread(
    repo_dir: Path, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve ``repo_dir`` from a background thread; returns (base URL, stop function).

    The base URL has no trailing slash; a device uses ``URL/metadata/`` and ``URL/targets/``.
    ``port=0`` picks a free port.
    """
    return in_thread(make_server(repo_dir, host, port, quiet=True), "otakit-repo-serve")


def serve_until_interrupted(server: ThreadingHTTPServer, note: Callable[[str], None]) -> None:
    """Serve in this thread until Ctrl-C (``repo serve``, ``fleet collect``); then close."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        note("stopped")
    finally:
        server.server_close()


def in_thread(server: ThreadingHTTPServer, name: str) -> tuple[str, Callable[[], None]]:
    """Run ``server`` from a background thread; returns (base URL, stop function)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return server_url(server), stop
