"""A real nginx serving a repository directory on 127.0.0.1, started and stopped by its caller.

Used by the tests (a real static server in front of the repository, as in production) and by
``otakit fleet simulate``, which reads the access log to count the bytes the fleet cost.
nginx must be installed; this module only writes its configuration and supervises it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from repo.errors import LocalError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    log_format otakit '$msec $status $body_bytes_sent $request_uri';
    access_log {prefix}/access.log otakit;
    client_body_temp_path {prefix}/tmp-body;
    proxy_temp_path {prefix}/tmp-proxy;
    fastcgi_temp_path {prefix}/tmp-fastcgi;
    uwsgi_temp_path {prefix}/tmp-uwsgi;
    scgi_temp_path {prefix}/tmp-scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex off;
        # a CDN in front of a consistent-snapshot repository may cache everything but
        # timestamp.json; we serve it the same way to exercise that layout
        location = /metadata/timestamp.json {{ add_header Cache-Control "no-cache"; }}
    }}
}}
"""


@contextmanager
def nginx_serving(nginx: str, root: Path, workdir: Path) -> Iterator[str]:
    """Start nginx on a free loopback port serving ``root``; yield the base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(_CONF.format(user=user, prefix=workdir, port=port, root=root.resolve()))
    proc = subprocess.Popen(
        [nginx, "-p", str(workdir), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise LocalError(f"nginx exited at start: {err.strip()[-500:]}")
            try:
                urllib.request.urlopen(url + "/", timeout=1)  # noqa: S310 - our own http URL
            except urllib.error.HTTPError:
                break  # 403/404 from nginx: it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise LocalError("nginx did not start listening within 10 s") from None
                time.sleep(0.05)
            else:
                break
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Served:
    """One request nginx answered: when, its status, the body bytes sent and the path."""

    at: float
    status: int
    body_bytes: int
    path: str


def served_requests(workdir: Path) -> list[Served]:
    """The requests of the access log ``nginx_serving`` keeps in ``workdir``, in order.

    nginx writes a line when a response ends, including one cut off by the client: its
    ``body_bytes_sent`` is what left the server, which is what a fleet pays for.
    """
    out: list[Served] = []
    log = workdir / "access.log"
    if not log.exists():
        return out
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
            out.append(Served(float(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
    return out
