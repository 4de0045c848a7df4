"""A TCP proxy that cuts some connections mid-response: the simulator's bad network.

Each accepted connection is forwarded to the upstream server; with probability ``cut_rate``
it is reset (RST, not a clean close) after a random number of response bytes, the way a
mobile link or a NAT timeout ends a download. Decisions come from the ``random.Random``
passed in, so a run is repeatable. Counted per connection for the report.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_CHUNK = 1 << 16


@dataclass
class CutStats:
    connections: int = 0
    cut: int = 0


@contextmanager
def cutting_proxy(
    upstream_port: int, cut_rate: float, rng: random.Random, max_cut_after: int = 64 << 10
) -> Iterator[tuple[str, CutStats]]:
    """Yield (base URL, stats) of a proxy on 127.0.0.1 in front of ``upstream_port``."""
    stats = CutStats()
    lock = threading.Lock()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with lock:
                stats.connections += 1
                cut_after = rng.randint(1, max_cut_after) if rng.random() < cut_rate else None
                if cut_after is not None:
                    stats.cut += 1
            threading.Thread(
                target=_relay, args=(client, upstream_port, cut_after), daemon=True
            ).start()

    thread = threading.Thread(target=serve, name="otakit-cutting-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", stats
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def _relay(client: socket.socket, upstream_port: int, cut_after: int | None) -> None:
    try:
        server = socket.create_connection(("127.0.0.1", upstream_port), timeout=30)
    except OSError:
        _reset(client)
        return
    up = threading.Thread(target=_pump, args=(client, server, None), daemon=True)
    up.start()
    cut = _pump(server, client, cut_after)
    if cut:
        # Wake the other direction (blocked reading the client) without sending anything,
        # so that once it is gone the close below is the socket's last reference: only then
        # does SO_LINGER 0 turn it into an RST instead of a clean end.
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RD)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
    up.join(timeout=30)
    if cut:
        _reset(client)
    else:
        with contextlib.suppress(OSError):
            client.close()
    with contextlib.suppress(OSError):
        server.close()


def _pump(src: socket.socket, dst: socket.socket, cut_after: int | None) -> bool:
    """Copy src to dst until EOF; True if it stopped after ``cut_after`` bytes instead."""
    sent = 0
    try:
        while True:
            data = src.recv(_CHUNK)
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return False
            if cut_after is not None and sent + len(data) >= cut_after:
                dst.sendall(data[: max(0, cut_after - sent)])
                return True
            dst.sendall(data)
            sent += len(data)
    except OSError:
        return False


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
