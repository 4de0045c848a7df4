"""Turn a block classification of the new image into delta ops (pure; no I/O).

Input: for each block of the new image, either ``ZERO``, ``NEW`` or the base offset of an
identical block. Output: op specs that cover the image exactly once, in order — ZERO runs,
COPY runs with contiguous base blocks merged into extents, and runs of new data that will be
zstd-compressed against a bounded window of base bytes chosen from where their matched
neighbours came from (an updated file usually sits between the same unchanged files in both
images, so its old version lies between the neighbours' base positions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from verifier.delta.format import MAX_EXTENTS_PER_OP, OpKind

ZERO = -2
NEW = -1

Extent = tuple[int, int]


@dataclass(frozen=True, slots=True)
class OpSpec:
    """An op before its data is compressed: what to produce and from which base bytes."""

    kind: OpKind
    dst_offset: int
    dst_length: int
    src: tuple[Extent, ...] = ()


@dataclass(frozen=True, slots=True)
class PlanParams:
    block_size: int
    max_op_length: int
    ref_window: int
    merge_gap_blocks: int
    #: Gap absorbed on images whose matches sit at unaligned base offsets (tar, squashfs):
    #: there, short copies between edits cost more in op records and in frames cut apart
    #: (new data loses its own history) than compressing them against the base does.
    shifted_merge_gap_blocks: int = 32


#: ``locate(dst_offset, length)``: a base offset where the target bytes at ``dst_offset``
#: probably came from (found by content, at any byte alignment), or None.
Locator = Callable[[int, int], int | None]


def plan_ops(
    classes: Sequence[int],
    *,
    result_length: int,
    base_length: int,
    params: PlanParams,
    locate: Locator | None = None,
) -> Iterator[OpSpec]:
    """Yield op specs for ``classes`` (one entry per block of the new image).

    New-data runs whose predicted base position falls inside the current reference zone
    share that zone's window, so the encoder builds one dictionary per zone, not per run.
    Long runs (content that moved by a non-block amount, as in tar or squashfs images) are
    cut into op-sized pieces, each placed by ``locate`` when neighbours cannot place it.
    """
    bs = params.block_size
    n = len(classes)
    zone: tuple[int, int] | None = None
    # Most non-zero blocks matched at block granularity (ext4-like): the matched neighbours
    # of a new run are meaningful. Otherwise (tar, squashfs) they are coincidences.
    matched = sum(1 for c in classes if c >= 0)
    aligned = matched >= (n - sum(1 for c in classes if c == ZERO)) // 2
    shifted = sum(1 for c in classes if c >= 0 and c % bs) > matched // 2
    gap = params.shifted_merge_gap_blocks if shifted else params.merge_gap_blocks
    i = 0
    while i < n:
        c = classes[i]
        if c == ZERO:
            j = i
            while j < n and classes[j] == ZERO:
                j += 1
            yield from _split_plain(OpKind.ZERO, i * bs, _end(j, bs, result_length), params)
        elif c >= 0:
            j = i
            while j < n and classes[j] >= 0:
                j += 1
            yield from _copy_ops(classes, i, j, bs, result_length, params)
        else:
            j = _new_run_end(classes, i, gap)
            start, end = i * bs, _end(j, bs, result_length)
            guess = predicted_core(classes, i, j, base_length, result_length, bs)
            # Both neighbours matched and the base holds at most one zone between them: the
            # old version (if any) is there. A content search would only cost time.
            between = (
                aligned
                and 0 <= guess[1] - guess[0] <= params.ref_window
                and _both_neighbours(classes, i, j)
            )
            short = end - start <= 2 * params.max_op_length and _has_neighbour(classes, i, j)
            placed = between or (short and aligned)
            for piece in range(start, end, params.max_op_length):
                size = min(params.max_op_length, end - piece)
                core = (guess[0] + piece - start, guess[0] + piece - start + size)
                if placed:
                    core = guess
                elif locate is not None and (found := locate(piece, size)) is not None:
                    core = (found, found + size)
                if zone is None or not (zone[0] <= core[0] and core[1] <= zone[1]):
                    zone = _zone_for(core, base_length, params.ref_window)
                ref = ((zone[0], zone[1] - zone[0]),) if zone[1] > zone[0] else ()
                kind = OpKind.ZSTD_REF if ref else OpKind.ZSTD
                yield OpSpec(kind, piece, size, ref)
        i = j


def predicted_core(
    classes: Sequence[int], i: int, j: int, base_length: int, result_length: int, bs: int
) -> tuple[int, int]:
    """Base range most likely to hold the old version of new blocks ``i..j``.

    Between the base positions of the matched neighbours when they agree, else after the
    left one, else before the right one, else the same relative position in the base.
    """
    run = (j - i) * bs
    left = _neighbour(classes, i - 1, -1)
    right = _neighbour(classes, j, +1)
    p_left = p_right = -1
    if left is not None:
        t, b = left
        p_left = b + (i - t) * bs
    if right is not None:
        t, b = right
        p_right = b - (t - j) * bs
    if p_left >= 0 and p_right >= 0 and 0 <= p_right - p_left <= 4 * run + (1 << 20):
        return p_left, p_right
    if p_left >= 0:
        return p_left, p_left + run
    if p_right >= 0:
        return max(0, p_right - run), p_right
    p = i * bs * base_length // max(result_length, 1)
    return p, p + run


def _both_neighbours(classes: Sequence[int], i: int, j: int) -> bool:
    return _neighbour(classes, i - 1, -1) is not None and _neighbour(classes, j, +1) is not None


def _has_neighbour(classes: Sequence[int], i: int, j: int) -> bool:
    return _neighbour(classes, i - 1, -1) is not None or _neighbour(classes, j, +1) is not None


def _zone_for(core: tuple[int, int], base_length: int, window: int) -> tuple[int, int]:
    """A window of ``window`` base bytes covering ``core``, reaching mostly forward (later
    runs of the target map to later base positions)."""
    a, b = core
    lo = max(0, (a + b - window) // 2) if b - a >= window else max(0, a - (window - (b - a)) // 8)
    hi = min(base_length, lo + window)
    lo = max(0, min(lo, hi - window))
    return lo, hi


def _end(block: int, bs: int, result_length: int) -> int:
    return min(block * bs, result_length)


def _split_plain(
    kind: OpKind, start: int, end: int, params: PlanParams, src: tuple[Extent, ...] = ()
) -> Iterator[OpSpec]:
    while start < end:
        n = min(params.max_op_length, end - start)
        yield OpSpec(kind, start, n, src)
        start += n


def _copy_ops(
    classes: Sequence[int], i: int, j: int, bs: int, result_length: int, params: PlanParams
) -> Iterator[OpSpec]:
    extents: list[Extent] = []
    op_start = i * bs
    op_len = 0
    for k in range(i, j):
        length = min(bs, result_length - k * bs)
        off = classes[k]
        if extents and extents[-1][0] + extents[-1][1] == off:
            extents[-1] = (extents[-1][0], extents[-1][1] + length)
        else:
            if len(extents) == MAX_EXTENTS_PER_OP:
                yield OpSpec(OpKind.COPY, op_start, op_len, tuple(extents))
                op_start += op_len
                op_len = 0
                extents = []
            extents.append((off, length))
        op_len += length
        if op_len + bs > params.max_op_length:
            yield OpSpec(OpKind.COPY, op_start, op_len, tuple(extents))
            op_start += op_len
            op_len = 0
            extents = []
    if op_len:
        yield OpSpec(OpKind.COPY, op_start, op_len, tuple(extents))


def _new_run_end(classes: Sequence[int], i: int, gap: int) -> int:
    """End of a run of new blocks, absorbing gaps of <= ``gap`` other blocks between them."""
    n = len(classes)
    j = i
    while j < n:
        while j < n and classes[j] == NEW:
            j += 1
        k = j
        while k < n and k - j < gap and classes[k] != NEW:
            k += 1
        if k < n and k > j and classes[k] == NEW and k - j <= gap:
            j = k
            continue
        return j
    return j


def _neighbour(classes: Sequence[int], k: int, step: int) -> tuple[int, int] | None:
    """Nearest matched block from ``k`` in direction ``step`` (at most 64 blocks away)."""
    for _ in range(64):
        if not 0 <= k < len(classes):
            return None
        if classes[k] >= 0:
            return k, classes[k]
        k += step
    return None
