"""``otakit fleet collect``: a small HTTP endpoint that stores device reports.

``POST /report`` with a report as the body (``otakit-device report --post URL``). The body is
bounded before it is read (``Content-Length`` required, at most ``MAX_REPORT_BYTES``), read
with a socket timeout, checked strictly (``repo.fleet_reports.parse_report``) and stored
atomically, one file per device, the newest replacing the older. Anything else gets a plain
status and a JSON body saying what was expected and found, and nothing is stored.

Reports are information, never trust (``repo.fleet_reports``): the endpoint needs no
authentication to be safe for the repository, because nothing it stores can sign anything.
It is the stdlib server of ``repo.serve``: for a lab, a site, or behind a reverse proxy that
terminates TLS and limits clients; at 100,000 devices, see docs/OPERATIONS.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from repo.errors import InvalidReportError, LocalError, OtakitError
from repo.fleet_reports import MAX_REPORT_BYTES, store_report
from repo.serve import in_thread, listen, log_request

#: A device that opened a connection and sends nothing is dropped after this many seconds.
READ_TIMEOUT = 10.0
REPORT_PATH = "/report"


def _make_handler(directory: Path, quiet: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "otakit-collect"
        sys_version = ""
        timeout = READ_TIMEOUT

        def _answer(self, status: HTTPStatus, doc: dict[str, Any]) -> None:
            body = json.dumps({"otakit_collect": 1, **doc}, sort_keys=True).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status != HTTPStatus.OK:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, status: HTTPStatus, message: str) -> None:
            self._answer(status, {"error": message})

        def do_GET(self) -> None:
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, f"expected POST {REPORT_PATH}")

        def do_POST(self) -> None:
            if urlsplit(self.path).path != REPORT_PATH:
                self._refuse(HTTPStatus.NOT_FOUND, f"expected POST {REPORT_PATH}")
                return
            raw = self.headers.get("Content-Length")
            if raw is None or not raw.isdigit() or len(raw) > 12:
                self._refuse(
                    HTTPStatus.BAD_REQUEST,
                    f"expected a Content-Length header with the body's size, found {raw!r}",
                )
                return
            size = int(raw)
            if size > MAX_REPORT_BYTES:
                self._refuse(
                    HTTPStatus.BAD_REQUEST,
                    f"report: expected at most {MAX_REPORT_BYTES} bytes, found {size}",
                )
                return
            try:
                body = self.rfile.read(size)
            except OSError:
                self.close_connection = True
                return  # the device went away or stalled: nothing to answer to
            if len(body) != size:
                self._refuse(
                    HTTPStatus.BAD_REQUEST,
                    f"report: expected {size} bytes as announced, found {len(body)}",
                )
                return
            try:
                report = store_report(directory, body)
            except InvalidReportError as e:
                self._refuse(HTTPStatus.BAD_REQUEST, e.message)
                return
            except OtakitError as e:
                self.log_error("cannot store a report: %s", e.message)
                self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "the report could not be stored")
                return
            self._answer(HTTPStatus.OK, {"stored": report.device_id})

        def log_message(self, format: str, *args: object) -> None:
            if not quiet:
                log_request(self.address_string(), format % args)

    return Handler


def make_collector(
    directory: Path, host: str, port: int, *, quiet: bool = False
) -> ThreadingHTTPServer:
    """A server storing reports in ``directory`` (created if missing)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LocalError(
            f"reports directory {directory}: cannot create it: {e.strerror or e}"
        ) from e
    if not directory.is_dir():
        raise LocalError(f"reports directory {directory}: expected a directory, found a file")
    server = listen(host, port, _make_handler(directory.resolve(), quiet))
    # Ctrl-C stops at once: a report is stored by one atomic rename, so a request cut short
    # leaves nothing half-written, and waiting for a slow client would only delay the stop.
    server.block_on_close = False
    return server


def collect_in_thread(
    directory: Path, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Collect from a background thread (tests, the simulator): (base URL, stop function)."""
    return in_thread(make_collector(directory, host, port, quiet=True), "otakit-collect")
