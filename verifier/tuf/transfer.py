"""Transport limits of one download, as pure arithmetic over the times a clock gave.

A per-read socket timeout only bounds the gap between two received bytes: a server that sends
one byte every few seconds never trips it and holds an update (and the device lock) forever.
TUF's specification no longer promises protection against slow retrieval, so we add it here:

* a **minimum throughput** over a sliding window: once a transfer has run for ``window``
  seconds, the bytes received in the last ``window`` seconds must average at least
  ``min_throughput`` bytes/s (a 1 KiB timestamp.json that arrives in 0.1 s is never judged);
* a **deadline per file** (metadata and targets alike), counted from the request;
* a **deadline per session** (the fetcher's life: one update cycle, refresh and downloads).

``TransferMeter`` is fed ``(bytes, now)`` by the fetcher and raises ``TransferLimitError``;
it never reads a clock itself, so every case is a table test without sleeping. The fetcher
also arms a watchdog at ``time_left`` so a deadline fires while a read is blocked.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from tuf.api import exceptions as tuf_exc


class TransferLimitError(tuf_exc.SlowRetrievalError):
    """A download broke a transport limit (throughput, per-file or per-cycle deadline)."""


@dataclass(frozen=True)
class TransferLimits:
    """Per-request and per-session bounds (P4). Defaults suit slow links (GPRS, satellite):
    a link of a few KB/s passes; a drip is abandoned within about a minute; a big staged
    target that cannot finish in one cycle resumes from its ``.part`` in the next one."""

    #: seconds to establish a TCP (and TLS) connection
    connect_timeout: float = 30.0
    #: seconds without any byte before a request is abandoned
    read_timeout: float = 60.0
    #: bytes/s the last ``throughput_window`` seconds must average (0: no minimum)
    min_throughput: float = 1024.0
    #: seconds of the sliding window; also how long a transfer runs before it is judged
    throughput_window: float = 60.0
    #: seconds one file (metadata or target) may take, from its request to its last byte
    download_deadline: float = 2 * 3600.0
    #: seconds a whole session may take (one update cycle: refresh and downloads)
    cycle_deadline: float = 4 * 3600.0

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "read_timeout",
            "throughput_window",
            "download_deadline",
            "cycle_deadline",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive number of seconds, found {value!r}")
        m = self.min_throughput
        if not (isinstance(m, int | float) and math.isfinite(m) and m >= 0):
            raise ValueError(f"min_throughput: expected bytes/s >= 0, found {m!r}")


@dataclass
class TransferMeter:
    """Accounting for one file: what arrived when, against ``limits``.

    ``session_started`` is when the fetcher's session (the update cycle) began, on the same
    clock as ``started``.
    """

    name: str
    limits: TransferLimits
    started: float
    session_started: float
    received: int = 0
    #: (time, bytes received by then), oldest first; the first one is (started, 0)
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._samples.append((self.started, 0))

    def add(self, n: int, now: float) -> None:
        """Count ``n`` bytes received at ``now``; raise if a limit is broken."""
        self.received += n
        self._samples.append((now, self.received))
        self.check(now)

    def check(self, now: float) -> None:
        """Raise ``TransferLimitError`` if a deadline passed or the throughput is too low."""
        lim = self.limits
        if now - self.session_started >= lim.cycle_deadline:
            raise self._over("update-cycle deadline", lim.cycle_deadline, now)
        if now - self.started >= lim.download_deadline:
            raise self._over("download deadline", lim.download_deadline, now)
        if lim.min_throughput <= 0 or now - self.started < lim.throughput_window:
            return
        edge = now - lim.throughput_window
        # keep the newest sample at or before the window's edge: it says what arrived before
        while len(self._samples) > 1 and self._samples[1][0] <= edge:
            self._samples.popleft()
        in_window = self.received - self._samples[0][1]
        if in_window < lim.min_throughput * lim.throughput_window:
            raise TransferLimitError(
                f"{self.name}: {self.received} bytes in {now - self.started:.1f} s, below the "
                f"minimum {lim.min_throughput:g} B/s over {lim.throughput_window:g} s "
                f"({in_window} bytes in the last {lim.throughput_window:g} s)"
            )

    def time_left(self, now: float) -> float:
        """Seconds until the nearer deadline (what a watchdog should wait)."""
        lim = self.limits
        return max(
            0.0,
            min(
                self.started + lim.download_deadline - now,
                self.session_started + lim.cycle_deadline - now,
            ),
        )

    def expired(self, now: float) -> TransferLimitError:
        """The error for a watchdog that fired: whichever deadline it was."""
        try:
            self.check(max(now, now + self.time_left(now)))
        except TransferLimitError as e:
            return e
        return self._over("download deadline", self.limits.download_deadline, now)

    def _over(self, which: str, limit: float, now: float) -> TransferLimitError:
        return TransferLimitError(
            f"{self.name}: {self.received} bytes in {now - self.started:.1f} s, over the "
            f"{which} of {limit:g} s"
        )
