"""A real nginx serving a directory on 127.0.0.1, started and stopped by the test itself."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    access_log {prefix}/access.log;
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
                raise RuntimeError(f"nginx exited at start: {err}")
            try:
                urllib.request.urlopen(url + "/", timeout=1)
            except urllib.error.HTTPError:
                break  # 403/404 from nginx: it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start listening within 10 s") from None
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
