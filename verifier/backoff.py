"""Retries across update cycles: exponential backoff with jitter, decided as pure functions.

A timer runs ``otakit-device update`` every few minutes. When the repository is unreachable,
too slow, or serves an artifact that does not verify or decode, running the whole cycle again
at once only loads the server and the link (a fleet of devices that failed together retries
together). So a failed cycle records in the journal how many cycles failed in a row and the
earliest next attempt: ``base · 2^(n-1)`` seconds after the n-th failure, capped, and shortened
by a random fraction (jitter) so a fleet spreads out. ``update`` before that time is "nothing
to do" (exit 0) unless the operator says ``--now``; a cycle that gets through resets it.

Security errors in metadata do not back off: they are reported on every cycle, loudly, and
retrying metadata is cheap and bounded. Time and randomness are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from verifier.errors import OtakitError
from verifier.state import Retry, timestamp


@dataclass(frozen=True)
class Backoff:
    #: seconds to wait after the first failed cycle
    base: float = 60.0
    #: the longest wait, however many cycles failed
    cap: float = 6 * 3600.0
    #: the fraction of the wait that randomness may take away (0: none, 1: all of it)
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap):
            raise ValueError(f"backoff: expected 0 < base <= cap, found {self.base}, {self.cap}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff: expected jitter in [0, 1], found {self.jitter}")

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after ``failures`` consecutive failed cycles; ``rand`` in [0, 1)."""
        # 2**(n-1) overflows float for absurd n; the cap is reached long before
        raw = self.cap if failures > 64 else min(self.cap, self.base * 2.0 ** (failures - 1))
        return raw * (1.0 - self.jitter * rand)


def after_failure(
    retry: Retry | None, error: OtakitError, now: datetime, rand: float, policy: Backoff
) -> Retry:
    """The retry state after a failed cycle (one more consecutive failure)."""
    n = 1 if retry is None else retry.failures + 1
    wait = timedelta(seconds=policy.delay(n, rand))
    return Retry(n, now + wait, error.kind(), error.message)


def gate(retry: Retry | None, now: datetime, policy: Backoff) -> str | None:
    """Why an update must wait (the "nothing to do" message), or None when it may run.

    A next attempt further away than the longest wait means the clock was set back since
    it was recorded: it is not honoured (a device must not sleep for years on a bad clock).
    """
    if retry is None or now >= retry.not_before:
        return None
    if retry.not_before - now > timedelta(seconds=policy.cap):
        return None
    return (
        f"next attempt after {timestamp(retry.not_before)} ({retry.failures} consecutive "
        f"failed {'cycle' if retry.failures == 1 else 'cycles'}, last: {retry.kind}: "
        f"{retry.reason}); 'update --now' tries at once"
    )
