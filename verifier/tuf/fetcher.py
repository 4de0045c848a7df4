"""HTTP transport for ngclient: explicit timeouts, no hidden retries, Range resumption.

Failures are raised as python-tuf ``DownloadError``s (ngclient's fetcher contract) whose text
a user can act on: "connection refused" (nothing listens: wrong URL or server down) is told
apart from "timed out" (something listens but does not answer: slow network or server).
urllib3 makes that easy to get wrong: its ``NewConnectionError`` (refused, unreachable, DNS)
subclasses ``ConnectTimeoutError``, so it must be caught first.
"""

from __future__ import annotations

from collections.abc import Iterator

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface


class CannotConnectError(tuf_exc.DownloadError):
    """No connection could be made (refused, unreachable, unknown host): retrying soon is
    unlikely to help; the URL or the server is wrong."""


class OtaFetcher(FetcherInterface):
    """A TUF fetcher that may also resume a download (``fetch_from``)."""

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Fetch ``url`` from byte ``offset`` if the server allows; returns the real start."""
        return 0, self.fetch(url)


def _host_port(url: str) -> str:
    u = urllib3.util.parse_url(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.host}:{port}"


def _connect_failure(url: str, e: urllib3.exceptions.NewConnectionError) -> CannotConnectError:
    where = _host_port(url)
    cause = e.__cause__
    if isinstance(e, urllib3.exceptions.NameResolutionError):
        reason = f"cannot resolve the host name {urllib3.util.parse_url(url).host!r}"
    elif isinstance(cause, ConnectionRefusedError):
        reason = "connection refused (nothing listens there)"
    elif isinstance(cause, OSError) and cause.strerror:
        reason = cause.strerror.lower()
    else:
        reason = "no connection could be made"
    return CannotConnectError(f"cannot connect to {where}: {reason}")


class HttpFetcher(OtaFetcher):
    """urllib3 with explicit timeouts, no automatic retries, and HTTP Range resumption."""

    def __init__(self, *, socket_timeout: float = 30.0, chunk_size: int = 256 * 1024) -> None:
        self._seconds = socket_timeout
        self._timeout = urllib3.Timeout(connect=socket_timeout, read=socket_timeout)
        self._chunk = chunk_size
        self._pool = urllib3.PoolManager(
            retries=False, headers={"User-Agent": "otakit-device"}, timeout=self._timeout
        )

    def _request(self, url: str, headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                "GET", url, headers=headers, preload_content=False, redirect=False
            )
        except urllib3.exceptions.NewConnectionError as e:  # before ConnectTimeoutError
            raise _connect_failure(url, e) from e
        except urllib3.exceptions.ConnectTimeoutError as e:
            raise tuf_exc.SlowRetrievalError(
                f"timed out connecting to {_host_port(url)} "
                f"(no connection within {self._seconds:g} s)"
            ) from e
        except urllib3.exceptions.TimeoutError as e:
            raise tuf_exc.SlowRetrievalError(
                f"timed out waiting for {_host_port(url)} to answer GET {url} "
                f"(no response within {self._seconds:g} s)"
            ) from e
        except urllib3.exceptions.HTTPError as e:
            raise tuf_exc.DownloadError(f"cannot fetch {url}: {_reason(e)}") from e

    def _fetch(self, url: str) -> Iterator[bytes]:
        resp = self._request(url, {})
        if resp.status != 200:
            resp.release_conn()
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        return self._chunks(url, resp)

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        if offset <= 0:
            return 0, self.fetch(url)
        resp = self._request(url, {"Range": f"bytes={offset}-"})
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if content_range.startswith(f"bytes {offset}-"):
                return offset, self._chunks(url, resp)
        elif resp.status == 200:
            return 0, self._chunks(url, resp)
        resp.release_conn()
        if resp.status >= 400 and resp.status != 416:
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        # A range answer we cannot use cleanly (416, odd Content-Range): restart from zero.
        return 0, self.fetch(url)

    def _chunks(self, url: str, resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            yield from resp.stream(self._chunk)
        except urllib3.exceptions.TimeoutError as e:
            raise tuf_exc.SlowRetrievalError(
                f"timed out reading {url} (no data for {self._seconds:g} s)"
            ) from e
        except urllib3.exceptions.HTTPError as e:
            raise tuf_exc.DownloadError(
                f"connection broke while reading {url}: {_reason(e)}"
            ) from e
        finally:
            resp.release_conn()


def _reason(e: urllib3.exceptions.HTTPError) -> str:
    """urllib3's text without the reprs of nested exception objects it likes to include."""
    if isinstance(e, urllib3.exceptions.ProtocolError) and len(e.args) > 1:
        inner = e.args[1]
        if isinstance(inner, BaseException):
            return str(inner) or str(e.args[0])
    return str(e)
