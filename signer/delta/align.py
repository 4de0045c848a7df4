"""Approximate alignment of new bytes against a reference window, for DIFF ops (bsdiff's
idea, vectorised with numpy: a few tens of ms per MiB plus ~0.1 s to index a 4 MiB zone).

Rebuilt binaries, ``.pyc`` files and the like change "a little everywhere": most bytes sit
at a fixed shift from their old copy, interrupted every few dozen bytes by a changed
address or length. zstd sees those as many short matches; a byte-wise difference against
the aligned old bytes turns them into runs of zeros with a few small values.

How: *anchors* are 8-byte strings present in both the window and the new bytes, sampled by
content (a position is a sample when a hash of its 8 bytes has its top bits clear, so both
sides pick the same positions without any search); each anchor proposes a shift. A 16-byte
block of the new bytes is *aligned* by the anchor before or after it when at least half its
bytes match at that shift. Like bsdiff's forward extension, a shift once found is kept while
the following blocks keep matching at it (repeated content would otherwise make the shift
flap between anchors, one control entry each); where it stops, the next aligned block starts
the next entry, and blocks aligned by nothing are literal ("extra") bytes. See
``verifier.delta.format.parse_diff_control`` for the entries.

The publisher only: the device applies the result with pure-Python big-integer arithmetic.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from verifier.delta.format import DIFF_COUNT, DIFF_ENTRY, max_diff_entries

KEY = 8
BLOCK = 16
#: a block is coded as a difference when at least this many of its bytes match
MIN_MATCHES = BLOCK // 2
#: blocks checked per numpy call while a shift keeps matching (grows to MAX_CHUNK)
CHUNK = 64
MAX_CHUNK = 4096
#: a position is sampled when the top SAMPLE_BITS bits of its key's hash are zero (1 in 16)
SAMPLE_BITS = 4
_MULT = np.uint64(0x9E3779B97F4A7C15)
_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class WindowIndex:
    """Sampled 8-byte keys of one window, sorted, with their window offsets."""

    window: _U8
    keys: npt.NDArray[np.uint64]
    offsets: _I64


@dataclass(frozen=True)
class DiffCoding:
    """The decoded content of a DIFF frame, and how much of the op it codes as a difference."""

    content: bytes
    diff_bytes: int


def _sampled(buf: _U8) -> tuple[npt.NDArray[np.uint64], _I64]:
    """Keys and positions of ``buf``'s content-defined samples (low-entropy keys dropped:
    runs of one or two byte values match everywhere and would propose false shifts)."""
    n = len(buf) - KEY + 1
    if n <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    keys = np.ndarray((n,), dtype="<u8", buffer=buf.data, strides=(1,))
    top = (keys * _MULT) >> np.uint64(64 - SAMPLE_BITS)
    pos = np.flatnonzero(top == 0)
    k = keys[pos]
    low56 = np.uint64((1 << 56) - 1)
    low48 = np.uint64((1 << 48) - 1)
    busy = (((k ^ (k >> np.uint64(8))) & low56) != 0) & (((k ^ (k >> np.uint64(16))) & low48) != 0)
    return k[busy], pos[busy].astype(np.int64)


def index_window(window: bytes) -> WindowIndex:
    w = np.frombuffer(window, dtype=np.uint8)
    keys, pos = _sampled(w)
    order = np.argsort(keys, kind="stable")  # equal keys keep window order: first one wins
    keys, pos = keys[order], pos[order]
    if len(keys):
        first = np.concatenate(([True], keys[1:] != keys[:-1]))
        keys, pos = keys[first], pos[first]
    return WindowIndex(w, keys, pos)


def _block_matches(new: _U8, w: _U8, starts: _I64, shifts: _I64) -> _I64:
    """Bytes of each 16-byte block of ``new`` equal to the window at ``block + shift``
    (-1 where the shifted block is not wholly inside the window)."""
    lane = np.arange(BLOCK, dtype=np.int64)
    src = starts[:, None] + lane[None, :]
    inside_new = src < len(new)
    old_at = src + shifts[:, None]
    ok = (starts + shifts >= 0) & (starts + shifts + BLOCK <= len(w))
    eq = (new[np.minimum(src, len(new) - 1)] == w[np.clip(old_at, 0, len(w) - 1)]) & inside_new
    count: _I64 = eq.sum(axis=1).astype(np.int64)
    count[~ok] = -1
    return count


def _sticky(
    n: _U8, w: _U8, starts: _I64, cand: _I64, good: list[int]
) -> tuple[_I64, npt.NDArray[np.bool_]]:
    """Per block: its shift and whether it is a difference.

    A shift, once found, is kept for as long as blocks keep matching at it (checked a
    growing chunk of blocks per numpy call), so one old copy becomes one long entry instead
    of flapping between anchors of repeated content; where it stops, the next block whose
    own anchors align it (``good``, with shift ``cand``) starts the next entry.
    """
    nblocks = len(starts)
    shift = np.zeros(nblocks, np.int64)
    diff = np.zeros(nblocks, np.bool_)
    cand_l = cand.tolist()
    b = 0
    g = 0  # index into good
    while True:
        g = bisect.bisect_left(good, b, g)
        if g == len(good):
            break
        b = good[g]
        cur = cand_l[b]
        chunk = CHUNK
        while b < nblocks:
            e = min(nblocks, b + chunk)
            m = _block_matches(n, w, starts[b:e], np.full(e - b, cur, np.int64))
            bad = np.flatnonzero(m < MIN_MATCHES)
            stop = b + int(bad[0]) if len(bad) else e
            shift[b:stop] = cur
            diff[b:stop] = True
            b = stop  # > the run's start: a good block matches at its own candidate
            if stop < e:
                break
            chunk = min(MAX_CHUNK, 4 * chunk)
    return shift, diff


def diff_coding(new: bytes | memoryview, index: WindowIndex) -> DiffCoding | None:
    """Control table + stream for ``new`` against the window, or None when no block aligns."""
    n = np.frombuffer(new, dtype=np.uint8)
    length = len(n)
    w = index.window
    if length < BLOCK or not len(index.keys):
        return None
    keys, npos = _sampled(n)
    at = np.searchsorted(index.keys, keys)
    at = np.minimum(at, len(index.keys) - 1)
    hit = index.keys[at] == keys
    if not hit.any():
        return None
    a_pos = npos[hit]
    a_shift = index.offsets[at[hit]] - a_pos
    nblocks = (length + BLOCK - 1) // BLOCK
    starts = np.arange(nblocks, dtype=np.int64) * BLOCK
    prev = np.searchsorted(a_pos, starts + BLOCK, side="right") - 1
    nxt = np.minimum(prev + 1, len(a_pos) - 1)
    prev = np.maximum(prev, 0)
    s_prev, s_next = a_shift[prev], a_shift[nxt]
    m_prev = _block_matches(n, w, starts, s_prev)
    m_next = _block_matches(n, w, starts, s_next)
    take_next = m_next > m_prev
    cand = np.where(take_next, s_next, s_prev)
    good = np.flatnonzero(np.maximum(m_prev, m_next) >= MIN_MATCHES)
    if not len(good):
        return None
    shift, diff = _sticky(n, w, starts, cand, good.tolist())
    # runs of blocks with the same (mode, shift)
    change = np.flatnonzero((diff[1:] != diff[:-1]) | (shift[1:] != shift[:-1])) + 1
    run_start = np.concatenate(([0], change))
    run_end = np.concatenate((change, [nblocks]))
    entries: list[tuple[int, int, int]] = []
    for rs, re_, is_diff, s in zip(
        (run_start * BLOCK).tolist(),
        np.minimum(run_end * BLOCK, length).tolist(),
        diff[run_start].tolist(),
        shift[run_start].tolist(),
        strict=True,
    ):
        if is_diff:
            entries.append((re_ - rs, 0, rs + s))
        elif entries:
            d, e, o = entries[-1]
            entries[-1] = (d, e + re_ - rs, o)
        else:
            entries.append((0, re_ - rs, 0))
    if len(entries) > max_diff_entries(length):
        return None
    per_byte = np.repeat(shift, BLOCK)[:length]
    mask = np.repeat(diff, BLOCK)[:length]
    old_at = np.clip(np.arange(length, dtype=np.int64) + per_byte, 0, len(w) - 1)
    old = np.where(mask, w[old_at], np.uint8(0)).astype(np.uint8)
    stream = (n - old).astype(np.uint8)
    control = DIFF_COUNT.pack(len(entries)) + np.asarray(entries, dtype="<u4").tobytes()
    assert len(control) == DIFF_COUNT.size + len(entries) * DIFF_ENTRY.size
    return DiffCoding(control + stream.tobytes(), int(mask.sum()))
