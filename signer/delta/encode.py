"""Build a delta container from a base image and a new image (publisher side).

Stages, each timed in the result:

1. *index*: one pass over the base — sha256 (in a thread; hashlib releases the GIL) and a
   block index ``hash(block) -> first base offset`` of every non-zero 4 KiB block. Same-offset
   matching is useless on images rebuilt from a tree (everything shifts), so matches are
   looked up anywhere in the base.
2. *scan*: one pass over the new image — sha256 (thread) and a class per block: zero, the base
   offset of an identical block (verified byte for byte, continuing the previous match when
   possible so copies merge into long extents), or new.
3. *plan* (signer.delta.plan): ZERO / COPY / ZSTD_REF op specs.
4. *emit*: compress new data against its bounded base window on ``workers`` threads
   (python-zstandard releases the GIL), hash every op's output, write payload then header.
   In format 2 each op compressed against a window is also coded as a DIFF (new bytes
   aligned to the window, byte-wise difference plus literals, signer.delta.align) and the
   smaller frame is kept, so format 2 is never larger than format 1 for the same plan.
5. *verify*: decode the container with the device's own decoder and compare the result hash.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import multiprocessing
import os
import shutil
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import zstandard

from repo.errors import DeltaBuildError, SelfCheckError, UsageError
from signer.delta.plan import NEW, ZERO, OpSpec, PlanParams, plan_ops
from verifier.artifact import ImageRef
from verifier.delta.decode import apply_delta
from verifier.delta.format import (
    EXTENT,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    MAX_HEADER_LENGTH,
    MAX_OP_LENGTH,
    MAX_REF_LENGTH,
    MAX_WINDOW_LOG,
    OP,
    PREFIX,
    WINDOW_KINDS,
    Header,
    Limits,
    Op,
    OpKind,
    pack_op,
    pack_prefix,
)
from verifier.effects import DiscardHandle
from verifier.errors import DecodeLimitError, OtakitError

if TYPE_CHECKING:
    from signer.delta.align import WindowIndex

_CHUNK = 8 << 20


@dataclass(frozen=True)
class DeltaOptions:
    """Encoder knobs. Defaults were chosen with bench/delta_bench.py (see RESULTS.md)."""

    block_size: int = 4096
    level: int = 3
    ref_window: int = 4 << 20
    max_op_length: int = 1 << 20
    merge_gap_blocks: int = 8
    shifted_merge_gap_blocks: int = 32
    workers: int = 2
    verify: bool = True
    #: the newest container version that may be written; 1 for devices that predate DIFF
    #: ops. A delta is written in the oldest version that holds its ops (version 1 unless
    #: it has a DIFF op), so a device that reads only format 1 still takes most deltas.
    format_version: int = FORMAT_VERSION
    #: try a DIFF coding of every op compressed against a window (format 2 only). Off by
    #: default: it indexes every zone and codes each op twice, which the default's time
    #: budget (zstd -3 --patch-from) does not allow; ``--max`` turns it on.
    diff_trial: bool = False

    @property
    def diff(self) -> bool:
        """Whether DIFF ops may be emitted."""
        return self.diff_trial and self.format_version >= 2

    def __post_init__(self) -> None:
        if self.block_size not in (512, 1024, 2048, 4096, 8192, 16384, 65536):
            raise UsageError(
                f"block_size: expected a power of two 512..65536, got {self.block_size}"
            )
        if not 0 < self.ref_window <= MAX_REF_LENGTH:
            raise UsageError(f"ref_window: expected 1..{MAX_REF_LENGTH}, got {self.ref_window}")
        if not self.block_size <= self.max_op_length <= MAX_OP_LENGTH:
            raise UsageError(
                f"max_op_length: expected {self.block_size}..{MAX_OP_LENGTH}, "
                f"got {self.max_op_length}"
            )
        if self.format_version not in FORMAT_VERSIONS:
            raise UsageError(
                f"format_version: expected one of {FORMAT_VERSIONS}, got {self.format_version}"
            )
        if not 1 <= self.level <= 22 or not 1 <= self.workers <= 64:
            raise UsageError(
                f"level 1..22 and workers 1..64 expected, got {self.level}, {self.workers}"
            )


#: zstd level of ``--max``, the smallest delta within HDiffPatch's build time (issue 14).
#: Measured on the ext4 pair with the DIFF trial: level 12 5.996 MB in ~60 s, 16 5.93 MB in
#: ~171 s, 19 5.60 MB in ~478 s, HDiffPatch 4.83 MB in ~124 s (bench/RESULTS.md, "Deltas,
#: round 2"); ``--max --level 19`` is the smallest this encoder makes, at about 4x that time.
MAX_LEVEL = 12


def create_options(
    *,
    level: int | None = None,
    smallest: bool = False,
    format_version: int = FORMAT_VERSION,
    ref_window: int = DeltaOptions.ref_window,
    workers: int = DeltaOptions.workers,
) -> DeltaOptions:
    """Options of ``otakit delta create`` / ``release``: the default is fast; ``smallest``
    (``--max``) trades creation time for size (level ``MAX_LEVEL`` and the DIFF trial). An explicit
    ``level`` wins over both."""
    chosen = level if level is not None else (MAX_LEVEL if smallest else DeltaOptions.level)
    return DeltaOptions(
        level=chosen,
        ref_window=ref_window,
        workers=workers,
        format_version=format_version,
        diff_trial=smallest,
    )


@dataclass(frozen=True)
class Timings:
    index_s: float
    scan_s: float
    emit_s: float
    verify_s: float
    total_s: float


@dataclass(frozen=True)
class DeltaResult:
    """What a release needs to register the delta target, plus numbers for the benchmark."""

    delta_length: int
    header: ImageRef
    base: ImageRef
    result: ImageRef
    op_count: int
    copy_bytes: int
    zero_bytes: int
    new_bytes: int
    payload_bytes: int
    timings: Timings
    verified: bool
    kinds: dict[str, int] = field(default_factory=dict)
    #: the container version written (``written_version``)
    format_version: int = 1


def encode_delta(
    base: Path, new: Path, out: Path, *, options: DeltaOptions = DeltaOptions()
) -> DeltaResult:
    """Write a delta turning ``base`` into ``new`` to ``out`` and (by default) prove it."""
    t0 = time.perf_counter()
    with ExitStack() as stack:
        base_f = stack.enter_context(base.open("rb"))
        new_f = stack.enter_context(new.open("rb"))
        base_len = os.fstat(base_f.fileno()).st_size
        new_len = os.fstat(new_f.fileno()).st_size
        if base_len == 0 or new_len == 0:
            raise DeltaBuildError(f"empty image: base {base_len} bytes, new {new_len} bytes")
        base_mm = stack.enter_context(mmap.mmap(base_f.fileno(), 0, access=mmap.ACCESS_READ))
        new_mm = stack.enter_context(mmap.mmap(new_f.fileno(), 0, access=mmap.ACCESS_READ))
        # both whole-image hashes run on their own threads while the main thread indexes
        hashing = ExitStack()
        stack.enter_context(hashing)
        base_sha = _sha_thread(base_mm, hashing)
        new_sha = _sha_thread(new_mm, hashing)
        index = _index_base(base_mm, options.block_size)
        t1 = time.perf_counter()
        classes = _scan_new(new_mm, base_mm, index, options.block_size)
        del index
        hashing.close()  # joins both threads, which run to the end
        base_sha_hex, result_sha = base_sha[0], new_sha[0]
        t2 = time.perf_counter()
        base_ref = ImageRef(base_len, base_sha_hex)
        result_ref = ImageRef(new_len, result_sha)
        params = PlanParams(
            options.block_size,
            options.max_op_length,
            options.ref_window,
            options.merge_gap_blocks,
            options.shifted_merge_gap_blocks,
        )
        locator = _Locator(new_mm, base_mm)
        specs = plan_ops(
            classes,
            result_length=new_len,
            base_length=base_len,
            params=params,
            locate=locator.locate,
        )
        emitted = _emit(specs, (base, new), new_mm, base_mm, out, base_ref, result_ref, options)
        del classes
        t3 = time.perf_counter()
    verified = False
    if options.verify:
        verify_delta(base, out, base_ref=base_ref, result_ref=result_ref, header_ref=emitted.header)
        verified = True
    t4 = time.perf_counter()
    stats = emitted.bytes_by_kind
    return DeltaResult(
        delta_length=emitted.header.length + emitted.payload_length,
        header=emitted.header,
        base=base_ref,
        result=result_ref,
        op_count=emitted.op_count,
        copy_bytes=stats[OpKind.COPY],
        zero_bytes=stats[OpKind.ZERO],
        new_bytes=stats[OpKind.ZSTD] + stats[OpKind.ZSTD_REF] + stats[OpKind.DIFF],
        payload_bytes=emitted.payload_length,
        timings=Timings(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0),
        verified=verified,
        kinds={k.name: n for k, n in emitted.ops_by_kind.items()},
        format_version=emitted.version,
    )


def written_version(ops_by_kind: dict[OpKind, int]) -> int:
    """The oldest container version that holds these ops: 2 only for DIFF ops."""
    return 2 if ops_by_kind.get(OpKind.DIFF) else 1


def verify_delta(
    base: Path, delta: Path, *, base_ref: ImageRef, result_ref: ImageRef, header_ref: ImageRef
) -> None:
    """Decode ``delta`` with the device decoder into a sink that only checks; raise on error."""
    with base.open("rb") as b, delta.open("rb") as d:
        try:
            apply_delta(
                d,
                b,
                DiscardHandle(),
                base_ref=base_ref,
                result_ref=result_ref,
                header_ref=header_ref,
                check_base=False,
            )
        except OtakitError as e:
            raise SelfCheckError(
                f"delta {delta} does not decode with the device decoder: {e.message}",
                hint="this is an encoder bug; publish the full image and report it",
            ) from e


def _sha_thread(mm: mmap.mmap, stack: ExitStack) -> list[str]:
    """Hash ``mm`` on a thread; the digest appears in the returned list once it finishes.

    The thread holds a view of the map, and a map with a live view cannot be closed
    (``BufferError``). So the stack that closes the map first stops and joins the thread:
    a Ctrl-C anywhere in between unwinds as an interruption, not as a ``BufferError``.
    """
    out: list[str] = []
    stop = threading.Event()

    def run() -> None:
        h = hashlib.sha256()
        with memoryview(mm) as view:
            for off in range(0, len(mm), _CHUNK):
                if stop.is_set():
                    return
                h.update(view[off : off + _CHUNK])
        out.append(h.hexdigest())

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def finish(exc_type: object, *_: object) -> bool:
        if exc_type is not None:
            stop.set()  # unwinding: no one will read the digest
        t.join()
        return False

    stack.push(finish)
    return out


def _index_base(base_mm: mmap.mmap, bs: int) -> dict[int, int]:
    zero = bytes(bs)
    index: dict[int, int] = {}
    setdefault = index.setdefault
    full = len(base_mm) - len(base_mm) % bs
    for chunk_off in range(0, full, _CHUNK):
        chunk = base_mm[chunk_off : min(full, chunk_off + _CHUNK)]
        for k in range(0, len(chunk), bs):
            block = chunk[k : k + bs]
            if block != zero:
                setdefault(hash(block), chunk_off + k)
    return index


def _scan_new(new_mm: mmap.mmap, base_mm: mmap.mmap, index: dict[int, int], bs: int) -> array[int]:
    """Classify every block of the new image (see the module docstring).

    A block that neither continues the previous match nor sits at a block-aligned base
    offset is hunted for at other alignments (``_ShiftHunter``): in tar and squashfs images
    unchanged content moves by arbitrary amounts, and once the new shift is found the
    continuation check finds the rest of the run one memcmp per block.
    """
    zero = bytes(bs)
    base_len = len(base_mm)
    classes: array[int] = array("q")
    append = classes.append
    get = index.get
    hunter = _ShiftHunter(new_mm, base_mm, index, bs)
    prev = NEW
    for chunk_off in range(0, len(new_mm), _CHUNK):
        chunk = new_mm[chunk_off : chunk_off + _CHUNK]
        for k in range(0, len(chunk), bs):
            block = chunk[k : k + bs]
            n = len(block)
            if block == zero[:n]:
                prev = ZERO
            elif n != bs:
                prev = NEW
            else:
                cand = prev + bs if prev >= 0 else -1
                if 0 <= cand <= base_len - bs and base_mm[cand : cand + bs] == block:
                    prev = cand
                else:
                    hit = get(hash(block))
                    if hit is not None and base_mm[hit : hit + bs] == block:
                        prev = hit
                    else:
                        prev = hunter.hunt(chunk_off + k, block)
            append(prev)
    return classes


class _ShiftHunter:
    """Finds a block of the new image in the base at any alignment, cheaply enough to run
    on every unmatched block.

    Tries, in order: the last few shifts that worked (content after an inserted file keeps
    the shift of the content before it); the block's 512-byte sub-offsets in the block index
    (tar moves content in 512-byte steps); one short sample searched with ``bytes.find``
    near the last shift (squashfs moves content by any byte amount). A failed hunt backs
    off (1, 2, 4 ... 32 blocks) so new data costs little: the blocks skipped at the start
    of a moved run are still compressed against the base by the planner.
    """

    STEP = 512
    SAMPLE = 64
    RADIUS = 1 << 20
    RECENT = 4
    MAX_BACKOFF = 32

    def __init__(
        self, new_mm: mmap.mmap, base_mm: mmap.mmap, index: dict[int, int], bs: int
    ) -> None:
        self._new = new_mm
        self._base = base_mm
        self._index = index
        self._bs = bs
        self._recent: deque[int] = deque(maxlen=self.RECENT)
        self._skip = 0
        self._backoff = 1

    def hunt(self, at: int, block: bytes) -> int:
        for shift in self._recent:
            if self._matches(at - shift, block):
                return at - shift
        if self._skip > 0:
            self._skip -= 1
            return NEW
        found = self._search(at, block)
        if found is None:
            self._skip = self._backoff
            self._backoff = min(2 * self._backoff, self.MAX_BACKOFF)
            return NEW
        self._backoff = 1
        return found if self._matches(found, block) else NEW

    def _remember(self, shift: int) -> None:
        if shift in self._recent:
            self._recent.remove(shift)
        self._recent.appendleft(shift)

    def _matches(self, cand: int, block: bytes) -> bool:
        bs = self._bs
        return 0 <= cand <= len(self._base) - bs and self._base[cand : cand + bs] == block

    def _search(self, at: int, block: bytes) -> int | None:
        """Base offset aligned with ``at`` by a verified piece of the target near ``at``
        (the block itself may straddle a change, e.g. an updated tar header, and still
        not match; the shift found is remembered so the next block matches)."""
        bs = self._bs
        get = self._index.get
        new = self._new
        for sub in range(self.STEP, bs, self.STEP):
            piece = new[at + sub : at + sub + bs]
            hit = get(hash(piece))
            if hit is not None and self._base[hit : hit + bs] == piece:
                self._remember(at + sub - hit)
                return hit - sub
        sample = block[bs - self.SAMPLE :]
        if len(set(sample)) < 16:
            return None  # runs of few byte values match in too many places
        guess = at - (self._recent[0] if self._recent else 0)
        end = guess + self.RADIUS
        pos = self._base.find(sample, max(0, guess - self.RADIUS), end)
        tail = bs // 4
        for _ in range(4):  # a sample repeated all over the window is not worth chasing
            if pos < 0:
                break
            cand = pos - (bs - self.SAMPLE)
            if cand + bs - tail >= 0 and self._base[cand + bs - tail : cand + bs] == block[-tail:]:
                self._remember(at - cand)
                return cand
            pos = self._base.find(sample, pos + 1, end)
        return None


class _Locator:
    """Finds where target bytes sit in the base at any byte alignment, by searching short
    samples of them near where the previous sample was found (content that did not change
    keeps its order, so the shift between the images drifts slowly)."""

    SAMPLE = 128
    SAMPLES = 6
    AGREE = 256 << 10
    RADII = (256 << 10, 4 << 20)

    def __init__(self, new_mm: mmap.mmap, base_mm: mmap.mmap) -> None:
        self._new = new_mm
        self._base = base_mm
        self._shift: int | None = None
        self._ratio = len(base_mm) / max(1, len(new_mm))

    def locate(self, dst: int, length: int) -> int | None:
        """Base offset matching target offset ``dst``: the position most samples of the
        piece agree on (one sample may hit a duplicate such as a licence text elsewhere)."""
        predicted = dst - self._shift if self._shift is not None else int(dst * self._ratio)
        votes: list[int] = []
        misses = 0
        for k in range(self.SAMPLES):
            if misses >= 2 and not votes:
                break  # new content: stop before paying for more wide searches
            t = dst + k * length // self.SAMPLES
            sample = self._new[t : t + self.SAMPLE]
            if len(sample) < self.SAMPLE or len(set(sample)) < 16:
                continue  # runs of few byte values match in too many places
            guess = predicted + (t - dst)
            for radius in self.RADII:
                at = self._base.find(sample, max(0, guess - radius), guess + radius)
                if at >= 0:
                    votes.append(at - (t - dst))
                    break
            else:
                misses += 1
        if not votes:
            return None
        best = max(
            votes,
            key=lambda v: (sum(abs(v - w) <= self.AGREE for w in votes), -abs(v - predicted)),
        )
        self._shift = dst - best
        return max(0, best)


@dataclass(frozen=True)
class _Emitted:
    header: ImageRef
    payload_length: int
    op_count: int
    bytes_by_kind: dict[OpKind, int]
    ops_by_kind: dict[OpKind, int]
    version: int


def _emit(
    specs: Iterable[OpSpec],
    paths: tuple[Path, Path],
    new_mm: mmap.mmap,
    base_mm: mmap.mmap,
    out: Path,
    base_ref: ImageRef,
    result_ref: ImageRef,
    options: DeltaOptions,
) -> _Emitted:
    """Compress and hash ops while the planner still produces them (its content searches
    hold the GIL; zstd and sha256 on the workers do not), payload to a side file, then write
    header + payload."""
    bytes_by_kind = dict.fromkeys(OpKind, 0)
    ops_by_kind = dict.fromkeys(OpKind, 0)
    records: list[bytes] = []
    data_cursor = 0
    extent_count = 0
    max_ref = 0
    max_content = options.max_op_length  # largest decoded frame (a DIFF frame holds more)
    payload_path = out.with_name(f".{out.name}.payload.tmp")
    try:
        with payload_path.open("w+b") as payload, _worker_deaths_as_build_errors():
            with _shut_down_whole(_compression_pool(options.workers, paths)) as pool:
                for group, results in _run_groups(pool, specs, new_mm, base_mm, options):
                    for spec, (digest, frame, kind, content) in zip(group, results, strict=True):
                        payload.write(frame)
                        records.append(
                            pack_op(
                                Op(
                                    kind,
                                    spec.dst_offset,
                                    spec.dst_length,
                                    data_cursor,
                                    len(frame),
                                    digest,
                                    spec.src,
                                )
                            )
                        )
                        data_cursor += len(frame)
                        extent_count += len(spec.src)
                        bytes_by_kind[kind] += spec.dst_length
                        ops_by_kind[kind] += 1
                        max_content = max(max_content, content)
                        if kind in WINDOW_KINDS:
                            max_ref = max(max_ref, sum(n for _, n in spec.src))
            header_length = PREFIX.size + len(records) * OP.size + extent_count * EXTENT.size
            if header_length > MAX_HEADER_LENGTH:
                raise DeltaBuildError(
                    f"delta header would be {header_length} bytes, limit {MAX_HEADER_LENGTH}: "
                    "the images differ too much or too finely; publish the full image"
                )
            window_log = max(10, (max_content - 1).bit_length())
            if window_log > MAX_WINDOW_LOG:
                raise DecodeLimitError(f"window log {window_log} above {MAX_WINDOW_LOG}")
            header = Header(
                version=written_version(ops_by_kind),
                block_size=options.block_size,
                op_count=len(records),
                extent_count=extent_count,
                header_length=header_length,
                payload_length=data_cursor,
                base=base_ref,
                result=result_ref,
                limits=Limits(options.max_op_length, max_ref, window_log),
            )
            blob = pack_prefix(header) + b"".join(records)
            assert len(blob) == header_length
            payload.seek(0)
            with out.open("wb") as f:
                f.write(blob)
                shutil.copyfileobj(payload, f, _CHUNK)
    finally:
        payload_path.unlink(missing_ok=True)
    return _Emitted(
        ImageRef(header_length, hashlib.sha256(blob).hexdigest()),
        data_cursor,
        len(records),
        bytes_by_kind,
        ops_by_kind,
        header.version,
    )


#: per op: sha256 of its output, its frame, the kind chosen, the frame's decoded length
_Result = list[tuple[bytes, bytes, OpKind, int]]


@contextmanager
def _worker_deaths_as_build_errors() -> Iterator[None]:
    """A killed worker process (OOM killer, signal) fails this delta, not the release: the
    caller skips a delta it cannot build and publishes the full image."""
    try:
        yield
    except BrokenProcessPool as e:
        raise DeltaBuildError(f"a delta compression worker process died: {e}") from e


def _compression_pool(workers: int, paths: tuple[Path, Path]) -> Executor:
    """Worker processes when this process can fork safely, else threads.

    python-zstandard holds the GIL while it builds a dictionary's tables (about 10 ms per
    4 MiB zone, one zone per group), so with threads the zones are built one at a time and
    stall the planner. Forked workers build them on both cores. Forking is only safe while
    no other thread runs (a lock held by another thread would stay locked in the child).
    """
    if (
        workers > 1
        and threading.active_count() == 1
        and "fork" in multiprocessing.get_all_start_methods()
    ):
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_open_images,
            initargs=paths,
        )
        # With fork, the first submit forks every worker. Fork them with SIGINT blocked: a
        # Ctrl-C landing in a child before its initializer ignores SIGINT would otherwise end
        # that child with a KeyboardInterrupt traceback of its own. A signal that arrives
        # meanwhile stays pending and reaches this process when the mask is restored.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pool.submit(os.getpid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return pool
    return ThreadPoolExecutor(max_workers=workers)


@contextmanager
def _shut_down_whole(pool: Executor) -> Iterator[Executor]:
    """Leave no half-shut process pool behind, even when Ctrl-C lands during the shutdown.

    A SIGINT that interrupts ``ProcessPoolExecutor.shutdown(wait=True)`` leaves its manager
    thread winding down while the interpreter exits; CPython 3.11's exit hook then races it
    and prints an ``OSError: [Errno 9]`` traceback after our one-line message. So the
    shutdown runs with SIGINT deferred (workers finish the group they hold, nothing new
    starts) and the deferred Ctrl-C is raised once the pool is gone.
    """
    try:
        yield pool
    except BaseException as e:
        if _shutdown_deferring_sigint(pool):
            raise KeyboardInterrupt from e
        raise
    if _shutdown_deferring_sigint(pool):
        raise KeyboardInterrupt


def _shutdown_deferring_sigint(pool: Executor) -> bool:
    """Shut ``pool`` down completely; whether a SIGINT arrived meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        pool.shutdown(wait=True, cancel_futures=True)  # signals only reach the main thread
        return False
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    return bool(caught)


#: The (base, new) images mapped in a worker process by ``_open_images``.
_WORKER_IMAGES: list[mmap.mmap] = []


def _open_images(base: Path, new: Path) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (shutting the pool
    # down), so a worker must not die printing its own KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # forked with it blocked
    for path in (base, new):
        with path.open("rb") as f:
            _WORKER_IMAGES.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def _work_in_worker(group: Sequence[OpSpec], level: int, diff: bool) -> _Result:
    base_mm, new_mm = _WORKER_IMAGES
    return _work(group, new_mm, base_mm, level, diff)


def _run_groups(
    pool: Executor,
    specs: Iterable[OpSpec],
    new_mm: mmap.mmap,
    base_mm: mmap.mmap,
    options: DeltaOptions,
) -> Iterator[tuple[Sequence[OpSpec], _Result]]:
    """Run op groups on the pool with a bounded number in flight; yield results in order."""
    pending: deque[tuple[Sequence[OpSpec], Future[_Result]]] = deque()
    limit = 4 * options.workers
    for group in _groups(specs):
        if isinstance(pool, ProcessPoolExecutor):
            fut = pool.submit(_work_in_worker, group, options.level, options.diff)
        else:
            fut = pool.submit(_work, group, new_mm, base_mm, options.level, options.diff)
        pending.append((group, fut))
        if len(pending) >= limit:
            g, fut = pending.popleft()
            yield g, fut.result()
    while pending:
        g, fut = pending.popleft()
        yield g, fut.result()


def _groups(specs: Iterable[OpSpec]) -> Iterator[list[OpSpec]]:
    """Split the op stream into jobs: a job ends where a zstd op needs another reference, so
    each reference zone is indexed once; jobs without a reference hold at most 64 ops."""
    group: list[OpSpec] = []
    ref: tuple[tuple[int, int], ...] | None = None
    for spec in specs:
        is_ref = spec.kind is OpKind.ZSTD_REF
        if group and (
            (is_ref and ref is not None and spec.src != ref) or (ref is None and len(group) >= 64)
        ):
            yield group
            group = []
            ref = None
        group.append(spec)
        if is_ref:
            ref = spec.src
    if group:
        yield group


def _work(
    group: Sequence[OpSpec], new_mm: mmap.mmap, base_mm: mmap.mmap, level: int, diff: bool
) -> _Result:
    """Hash and compress ``group`` reading the new image through a view (no copies: most
    bytes are COPY or ZERO ops that are only hashed, or not even read). With ``diff``, an op
    compressed against a window is also coded as a DIFF and the smaller frame kept."""
    compressors: dict[
        tuple[OpKind, tuple[tuple[int, int], ...]], Callable[[bytes | memoryview], bytes]
    ]
    compressors = {}
    indexes: dict[tuple[tuple[int, int], ...], WindowIndex] = {}
    if diff:  # numpy is imported only by the DIFF trial: every other command starts faster
        from signer.delta.align import diff_coding, index_window
    results: _Result = []
    with memoryview(new_mm) as view:
        for spec in group:
            if spec.kind is OpKind.ZERO:
                results.append((_zero_digest(spec.dst_length), b"", OpKind.ZERO, 0))
                continue
            with view[spec.dst_offset : spec.dst_offset + spec.dst_length] as data:
                digest = hashlib.sha256(data).digest()
                frame = b""
                kind = spec.kind
                content = spec.dst_length
                if spec.kind in (OpKind.ZSTD, OpKind.ZSTD_REF):
                    key = (spec.kind, spec.src)
                    if key not in compressors:
                        compressors[key] = _compressor(spec, base_mm, level)
                    compress = compressors[key]
                    frame = compress(data)
                    if diff and spec.kind is OpKind.ZSTD_REF:
                        if spec.src not in indexes:
                            indexes[spec.src] = index_window(_window(spec, base_mm))
                        coding = diff_coding(data, indexes[spec.src])
                        # too little aligned: the literals would cost what they cost today
                        if coding is not None and coding.diff_bytes * 8 >= spec.dst_length:
                            diff_frame = compress(coding.content)
                            if len(diff_frame) < len(frame):
                                frame, kind = diff_frame, OpKind.DIFF
                                content = len(coding.content)
            results.append((digest, frame, kind, content))
    return results


def _window(spec: OpSpec, base_mm: mmap.mmap) -> bytes:
    return b"".join(base_mm[off : off + n] for off, n in spec.src)


@functools.lru_cache(maxsize=16)
def _zero_digest(length: int) -> bytes:
    return hashlib.sha256(bytes(length)).digest()


def _compressor(
    spec: OpSpec, base_mm: mmap.mmap, level: int
) -> Callable[[bytes | memoryview], bytes]:
    if spec.kind is OpKind.ZSTD:
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=False)
    else:
        ref = _window(spec, base_mm)
        dictionary = zstandard.ZstdCompressionDict(ref, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        params = reference_params(level, len(ref))
        dictionary.precompute_compress(compression_params=params)
        cctx = zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary)
    return cctx.compress


def reference_params(level: int, ref_length: int) -> zstandard.ZstdCompressionParameters:
    """Level parameters with hash tables big enough to index the whole reference.

    zstd only loads the last ``2 ** max(hash_log + 3, chain_log + 1)`` bytes of a dictionary
    (``ZSTD_loadDictionaryContent``); at level 3 that is 1 MiB, which is why a larger raw
    dictionary "gained nothing" at low levels. Sizing the tables from the reference length
    makes every reference byte reachable at the speed of level 3.
    """
    bits = max(10, (ref_length - 1).bit_length())
    base = zstandard.ZstdCompressionParameters.from_level(level)
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        write_checksum=0,
        write_dict_id=0,
        hash_log=max(base.hash_log, bits - 3),
        chain_log=max(base.chain_log, bits - 2),
    )


def read_header_ref(delta: BinaryIO) -> ImageRef:
    """Length and sha256 of a container's header, read from the container itself.

    For debugging only (``otakit delta apply``): on a device the header ref comes from
    signed metadata, never from the artifact it authenticates.
    """
    from verifier.delta.format import prefix_length_of

    head = delta.read(PREFIX.size)
    length = prefix_length_of(head)
    rest = delta.read(length - len(head))
    blob = head + rest
    return ImageRef(length, hashlib.sha256(blob).hexdigest())
