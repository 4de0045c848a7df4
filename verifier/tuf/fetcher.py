"""HTTP transport for ngclient: explicit limits, no hidden retries, Range resumption, proxies.

Failures are raised as python-tuf ``DownloadError``s (ngclient's fetcher contract) whose text
a user can act on: "connection refused" (nothing listens: wrong URL or server down) is told
apart from "timed out" (something listens but does not answer: slow network or server), and
both from a broken transport limit (``transfer``: too slow, or past a deadline).
urllib3 makes that easy to get wrong: its ``NewConnectionError`` (refused, unreachable, DNS)
subclasses ``ConnectTimeoutError``, so it must be caught first.

Deadlines hold while a read is blocked: a watchdog timer shuts the request's socket down when
the nearer deadline passes, headers included (a server can drip its status line too). Bytes
are read with ``read1`` so a drip is seen byte by byte, not after a whole chunk.

Name resolution is bounded too: ``getaddrinfo`` blocks in the C library, out of reach of
socket timeouts and of the watchdog (there is no socket yet), so it runs on a helper thread
and a resolver that does not answer within the connect timeout fails the connection; every
address it returns is then tried in turn, as urllib3 itself would.

Proxies come from the environment as ``urllib.request`` reads them (``http_proxy``,
``https_proxy``, ``all_proxy``, ``no_proxy``; lower case first), as ngclient's own fetcher
does: a device behind a corporate proxy must not need a second configuration.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import allowed_gai_family

from verifier.tuf.transfer import TransferLimits, TransferMeter

Clock = Callable[[], float]


class CannotConnectError(tuf_exc.DownloadError):
    """No connection could be made (refused, unreachable, unknown host): retrying soon is
    unlikely to help; the URL or the server is wrong."""


class OtaFetcher(FetcherInterface):
    """A TUF fetcher that may also resume a download (``fetch_from``)."""

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        """Fetch ``url`` from byte ``offset`` if the server allows; returns the real start."""
        return 0, self.fetch(url)

    @property
    def bytes_received(self) -> int:
        """Body bytes received in this session (0 when the fetcher does not count)."""
        return 0


def _host_port(url: str) -> str:
    u = urllib3.util.parse_url(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.host}:{port}"


def _name(url: str) -> str:
    """What a limit message calls the file: the last path segment (``timestamp.json``)."""
    path = urllib3.util.parse_url(url).path or url
    return path.rstrip("/").rpartition("/")[2] or url


def _connect_failure(url: str, e: urllib3.exceptions.NewConnectionError) -> CannotConnectError:
    where = _host_port(url)
    cause = e.__cause__
    if isinstance(e, urllib3.exceptions.NameResolutionError):
        reason = f"cannot resolve the host name {urllib3.util.parse_url(url).host!r}"
        if isinstance(cause, _ResolveTimeout):
            reason += f" ({cause})"
    elif isinstance(cause, ConnectionRefusedError):
        reason = "connection refused (nothing listens there)"
    elif isinstance(cause, OSError) and cause.strerror:
        reason = cause.strerror.lower()
    else:
        reason = "no connection could be made"
    return CannotConnectError(f"cannot connect to {where}: {reason}")


def proxy_for(url: str, environ: dict[str, str]) -> str | None:
    """The proxy URL for ``url`` given proxy settings as ``getproxies_environment`` returns
    them (``{"http": ..., "https": ..., "all": ..., "no": ...}``); None to go direct."""
    u = urllib3.util.parse_url(url)
    proxy = environ.get(u.scheme or "http") or environ.get("all")
    if not proxy or _bypass(u.host or "", u.port, environ.get("no", "")):
        return None
    return proxy


def _bypass(host: str, port: int | None, no_proxy: str) -> bool:
    """``no_proxy`` as curl and ``urllib.request`` read it: ``*``, or comma-separated host
    names matched exactly or as a domain suffix (a leading dot is optional), each optionally
    with ``:port``."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, _, want_port = entry.lstrip(".").partition(":")
        if not name or (want_port and want_port != str(port)):
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


class _Watchdog:
    """Shuts a request's socket down when its deadline passes, unblocking any read.

    The socket is learned when the request is sent (``_WatchedConnection``) or from the
    response; a watchdog that fires before it knows one shuts it down on ``attach``.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            # the plain socket's shutdown, also under TLS: the fd stops, the TLS object is
            # left to the thread that reads it
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


_ACTIVE = threading.local()


class _ResolveTimeout(socket.gaierror):
    """The resolver did not answer in time (a ``gaierror``, so urllib3 reports it as such)."""


def resolve_within(host: str, port: int, seconds: float) -> list[str]:
    """The addresses of ``host`` (in the resolver's order), or ``_ResolveTimeout`` after
    ``seconds``. A numeric host needs no resolver. The helper thread of a resolver that hangs
    is a daemon: it ends with the process, the device does not wait for it."""
    with contextlib.suppress(OSError):
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))
        return [host.strip("[]")]
    found: list[list[str]] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
            found.append(list(dict.fromkeys(str(info[4][0]) for info in infos)))
        except BaseException as e:  # handed to the caller's thread
            failed.append(e)
        finally:
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(seconds):
        raise _ResolveTimeout(f"the resolver did not answer within {seconds:g} s")
    if failed:
        raise failed[0]
    return found[0]


class _BoundedResolve(HTTPConnection):
    """Resolve the host within the connect timeout, then try each address in turn."""

    def _new_conn(self) -> socket.socket:
        host = self._dns_host
        seconds = self.timeout if isinstance(self.timeout, int | float) else 30.0
        try:
            addresses = resolve_within(host, self.port or 80, seconds)
        except socket.gaierror as e:
            raise urllib3.exceptions.NameResolutionError(self.host, self, e) from e
        last: Exception | None = None
        try:
            for address in addresses:
                self._dns_host = address
                try:
                    return super()._new_conn()
                except (
                    urllib3.exceptions.NewConnectionError,
                    urllib3.exceptions.TimeoutError,
                ) as e:
                    last = e
        finally:
            self._dns_host = host
        assert last is not None  # getaddrinfo returns at least one address or raises
        raise last


class _WatchedConnection(_BoundedResolve):
    def getresponse(self, *args: Any, **kw: Any) -> Any:
        watch = getattr(_ACTIVE, "watch", None)
        if watch is not None:
            watch.attach(self.sock)
        return super().getresponse(*args, **kw)


class _WatchedHTTPSConnection(_BoundedResolve, HTTPSConnection):
    def getresponse(self, *args: Any, **kw: Any) -> Any:
        watch = getattr(_ACTIVE, "watch", None)
        if watch is not None:
            watch.attach(self.sock)
        return super().getresponse(*args, **kw)


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedPool, "https": _WatchedHTTPSPool}


class HttpFetcher(OtaFetcher):
    """urllib3 with explicit transport limits, no automatic retries, HTTP Range resumption
    and the environment's proxies. One fetcher is one session: ``cycle_deadline`` counts from
    its construction."""

    def __init__(
        self,
        limits: TransferLimits | None = None,
        *,
        clock: Clock = time.monotonic,
        proxies: dict[str, str] | None = None,
        chunk_size: int = 256 * 1024,
    ) -> None:
        self.limits = limits = limits or TransferLimits()
        self._clock = clock
        self._session_started = clock()
        self._proxies = urllib.request.getproxies_environment() if proxies is None else proxies
        self._chunk = chunk_size
        self._kw: dict[str, Any] = {
            "retries": False,
            "headers": {"User-Agent": "otakit-device"},
            "timeout": urllib3.Timeout(connect=limits.connect_timeout, read=limits.read_timeout),
        }
        self._pool = self._manager(urllib3.PoolManager(**self._kw))
        self._via: dict[str, urllib3.PoolManager] = {}
        self._received = 0

    @property
    def bytes_received(self) -> int:
        return self._received

    @staticmethod
    def _manager(m: urllib3.PoolManager) -> urllib3.PoolManager:
        m.pool_classes_by_scheme = _POOLS
        return m

    def _pool_for(self, url: str) -> urllib3.PoolManager:
        proxy = proxy_for(url, self._proxies)
        if proxy is None:
            return self._pool
        if proxy not in self._via:
            self._via[proxy] = self._manager(urllib3.ProxyManager(proxy, **self._kw))
        return self._via[proxy]

    def _meter(self, url: str) -> TransferMeter:
        meter = TransferMeter(_name(url), self.limits, self._clock(), self._session_started)
        meter.check(meter.started)  # the session's deadline may be over before we ask
        return meter

    def _request(
        self, url: str, headers: dict[str, str]
    ) -> tuple[urllib3.BaseHTTPResponse, TransferMeter, _Watchdog]:
        meter = self._meter(url)
        watch = _Watchdog(meter.time_left(meter.started))
        _ACTIVE.watch = watch
        try:
            resp = self._pool_for(url).request(
                "GET", url, headers=headers, preload_content=False, redirect=False
            )
        except urllib3.exceptions.NewConnectionError as e:  # before ConnectTimeoutError
            watch.cancel()
            raise _connect_failure(url, e) from e
        except urllib3.exceptions.ConnectTimeoutError as e:
            watch.cancel()
            if watch.fired:
                raise meter.expired(self._clock()) from e
            raise tuf_exc.SlowRetrievalError(
                f"timed out connecting to {_host_port(url)} "
                f"(no connection within {self.limits.connect_timeout:g} s)"
            ) from e
        except urllib3.exceptions.HTTPError as e:
            watch.cancel()
            if watch.fired:
                raise meter.expired(self._clock()) from e
            if isinstance(e, urllib3.exceptions.TimeoutError):
                raise tuf_exc.SlowRetrievalError(
                    f"timed out waiting for {_host_port(url)} to answer GET {url} "
                    f"(no response within {self.limits.read_timeout:g} s)"
                ) from e
            raise tuf_exc.DownloadError(f"cannot fetch {url}: {_reason(e)}") from e
        finally:
            _ACTIVE.watch = None
        conn = resp.connection
        watch.attach(getattr(conn, "sock", None))
        return resp, meter, watch

    def _fetch(self, url: str) -> Iterator[bytes]:
        resp, meter, watch = self._request(url, {})
        if resp.status != 200:
            _release(resp, watch)
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        return self._chunks(url, resp, meter, watch)

    def fetch_from(self, url: str, offset: int) -> tuple[int, Iterator[bytes]]:
        if offset <= 0:
            return 0, self.fetch(url)
        resp, meter, watch = self._request(url, {"Range": f"bytes={offset}-"})
        if resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if content_range.startswith(f"bytes {offset}-"):
                return offset, self._chunks(url, resp, meter, watch)
        elif resp.status == 200:
            return 0, self._chunks(url, resp, meter, watch)
        _release(resp, watch)
        if resp.status >= 400 and resp.status != 416:
            raise tuf_exc.DownloadHTTPError(f"GET {url}: HTTP {resp.status}", resp.status)
        # A range answer we cannot use cleanly (416, odd Content-Range): restart from zero.
        return 0, self.fetch(url)

    def _chunks(
        self, url: str, resp: urllib3.BaseHTTPResponse, meter: TransferMeter, watch: _Watchdog
    ) -> Iterator[bytes]:
        try:
            while data := resp.read1(self._chunk):
                self._received += len(data)
                meter.add(len(data), self._clock())
                yield data
        except urllib3.exceptions.HTTPError as e:
            if watch.fired:
                raise meter.expired(self._clock()) from e
            if isinstance(e, urllib3.exceptions.TimeoutError):
                raise tuf_exc.SlowRetrievalError(
                    f"timed out reading {url} (no data for {self.limits.read_timeout:g} s)"
                ) from e
            raise tuf_exc.DownloadError(
                f"connection broke while reading {url}: {_reason(e)}"
            ) from e
        finally:
            _release(resp, watch)
        if watch.fired:  # the shut-down socket looked like a clean end: it was not
            raise meter.expired(self._clock())


def _release(resp: urllib3.BaseHTTPResponse, watch: _Watchdog) -> None:
    watch.cancel()
    resp.release_conn()


def _reason(e: urllib3.exceptions.HTTPError) -> str:
    """urllib3's text without the reprs of nested exception objects it likes to include."""
    if isinstance(e, urllib3.exceptions.ProtocolError) and len(e.args) > 1:
        inner = e.args[1]
        if isinstance(inner, BaseException):
            return str(inner) or str(e.args[0])
    return str(e)
