"""HTTP proxies from the environment, as ngclient's own fetcher and ``urllib.request`` honour
them (regression: the device's fetcher ignored ``http_proxy``/``https_proxy``/``no_proxy``).

The proxy here is a real forward proxy in a thread (absolute-URI GET, no CONNECT): it answers
the simulated repository's host ``repo.test`` itself — a name that does not resolve, so a
device reaches it only through the proxy — and forwards anything else.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.verifier.conftest import World, evolve
from tests.verifier.repo_sim import BASE, RepoSim
from verifier.tuf.fetcher import HttpFetcher, proxy_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("http://repo.example/m", {}, None),
        ("http://repo.example/m", {"http": "http://p:3128"}, "http://p:3128"),
        ("https://repo.example/m", {"http": "http://p:3128"}, None),
        ("https://repo.example/m", {"https": "http://p:3128"}, "http://p:3128"),
        ("https://repo.example/m", {"all": "http://p:1"}, "http://p:1"),
        ("http://repo.example/m", {"http": "http://p", "no": "repo.example"}, None),
        ("http://a.repo.example/m", {"http": "http://p", "no": ".repo.example"}, None),
        ("http://a.repo.example/m", {"http": "http://p", "no": "repo.example"}, None),
        ("http://badrepo.example/m", {"http": "http://p", "no": "repo.example"}, "http://p"),
        ("http://repo.example:8080/m", {"http": "http://p", "no": "repo.example:8080"}, None),
        ("http://repo.example:8080/m", {"http": "http://p", "no": "repo.example:80"}, "http://p"),
        ("http://REPO.example/m", {"http": "http://p", "no": " other, repo.EXAMPLE "}, None),
        ("http://repo.example/m", {"http": "http://p", "no": "*"}, None),
    ],
)
def test_proxy_for(url: str, env: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url, env) == expected


@dataclass
class Proxy:
    sim: RepoSim
    url: str = ""
    #: the absolute URLs it was asked for
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy(RepoSim())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            p.seen.append(self.path)
            u = urlsplit(self.path)
            if self.path.startswith(BASE):
                data = p.sim.files.get(self.path[len(BASE) :])
                status = 200 if data is not None else 404
            else:  # a plain forward proxy
                conn = http.client.HTTPConnection(u.netloc, timeout=10)
                conn.request("GET", u.path)
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
                conn.close()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    p.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield p
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def origin() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"origin {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _get(fetcher: HttpFetcher, url: str) -> bytes:
    return b"".join(fetcher.fetch(url))


def test_the_environment_proxy_is_used(
    proxy: Proxy, origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert _get(HttpFetcher(), f"{origin}/metadata/timestamp.json") == (
        b"origin /metadata/timestamp.json"
    )
    assert proxy.seen == [f"{origin}/metadata/timestamp.json"]


def test_no_proxy_goes_direct(proxy: Proxy, origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    assert _get(HttpFetcher(), f"{origin}/x") == b"origin /x"
    assert proxy.seen == []


def test_without_proxy_settings_requests_go_direct(
    proxy: Proxy, origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert _get(HttpFetcher(), f"{origin}/x") == b"origin /x"
    assert proxy.seen == []


def test_a_device_updates_through_the_proxy(world: World, proxy: Proxy) -> None:
    """``otakit-device update`` (the real CLI) reaches a repository only the proxy knows."""
    proxy.sim = world.sim
    world.sim.add_full(evolve(world.v1, 2), "2.0")
    world.sim.publish()
    world.mountinfo.write_text("")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(
        [sys.executable, "-m", "verifier.cli", "--state", str(world.state), "update"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT), "http_proxy": proxy.url},
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "version 2.0 written to slot b" in r.stdout
    assert f"{BASE}metadata/timestamp.json" in proxy.seen
    assert any(u.startswith(f"{BASE}targets/edge-gw/2.0/") for u in proxy.seen)
