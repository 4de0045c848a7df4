"""Image builders, an in-memory write handle and container surgery for the delta tests."""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from signer.delta.encode import DeltaOptions, DeltaResult, encode_delta
from verifier.artifact import ImageRef
from verifier.delta.decode import apply_delta
from verifier.delta.format import (
    EXTENT,
    OP,
    PREFIX,
    Header,
    Op,
    iter_ops,
    pack_op,
    pack_prefix,
    parse_prefix,
)

BS = 4096
#: Small zones and ops so that little test images still produce every op kind (DIFF too).
SMALL = DeltaOptions(ref_window=64 << 10, max_op_length=16 << 10, workers=2, diff_trial=True)


@dataclass
class MemSink:
    """A WriteHandle that records every write; ``synced`` is set only by fsync."""

    data: bytearray = field(default_factory=bytearray)
    writes: int = 0
    synced: bool = False

    def pwrite(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data
        self.writes += 1

    def fsync(self) -> None:
        self.synced = True

    def close(self) -> None:
        pass


def ref_of(data: bytes) -> ImageRef:
    return ImageRef(len(data), hashlib.sha256(data).hexdigest())


def rand(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def text_like(rng: random.Random, n: int) -> bytes:
    """Compressible but not trivial bytes (so zstd has something to do)."""
    words = [rng.randbytes(rng.randint(2, 9)) for _ in range(64)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words)
    return bytes(out[:n])


@dataclass(frozen=True)
class Built:
    base: bytes
    new: bytes
    delta: bytes
    result: DeltaResult

    @property
    def header_blob(self) -> bytes:
        return self.delta[: self.result.header.length]


def build(tmp: Path, base: bytes, new: bytes, options: DeltaOptions = SMALL) -> Built:
    (tmp / "base.img").write_bytes(base)
    (tmp / "new.img").write_bytes(new)
    res = encode_delta(tmp / "base.img", tmp / "new.img", tmp / "d.otd", options=options)
    return Built(base, new, (tmp / "d.otd").read_bytes(), res)


def apply_bytes(
    delta: bytes,
    base: bytes,
    *,
    base_ref: ImageRef,
    result_ref: ImageRef,
    header_ref: ImageRef,
    sink: MemSink | None = None,
    check_base: bool = True,
) -> MemSink:
    out = sink if sink is not None else MemSink()
    apply_delta(
        io.BytesIO(delta),
        io.BytesIO(base),
        out,
        base_ref=base_ref,
        result_ref=result_ref,
        header_ref=header_ref,
        check_base=check_base,
    )
    return out


def table(blob: bytes) -> tuple[Header, list[Op]]:
    header = parse_prefix(blob)
    return header, list(iter_ops(blob, header))


def repack(header: Header, ops: list[Op], **prefix_changes: object) -> bytes:
    """Serialize a (possibly corrupted) table with consistent counts and header length."""
    extents = sum(len(o.src) for o in ops)
    length = PREFIX.size + len(ops) * OP.size + extents * EXTENT.size
    h = replace(header, op_count=len(ops), extent_count=extents, header_length=length)
    h = replace(h, **prefix_changes)  # type: ignore[arg-type]
    return pack_prefix(h) + b"".join(pack_op(o) for o in ops)


def relocated(r: random.Random, n: int, delta: int = 0x40) -> tuple[bytes, bytes]:
    """An old and a new "binary": code with a little-endian pointer every 16 bytes, every
    pointer moved by ``delta`` in the new build (a rebuilt binary changes a little
    everywhere, so no 4 KiB block of it matches the old one)."""
    old = bytearray()
    new = bytearray()
    ops = [r.randbytes(3) for _ in range(300)]
    while len(old) < n:
        code = b"".join(r.choice(ops) for _ in range(4))
        ptr = r.randrange(1 << 20, 1 << 24)
        old += code + ptr.to_bytes(4, "little")
        new += code + (ptr + delta).to_bytes(4, "little")
    return bytes(old[:n]), bytes(new[:n])


def with_op_data(b: Built, changes: dict[int, tuple[Op, bytes]]) -> tuple[bytes, int]:
    """The container with op ``i`` replaced by ``(op, data)`` for each change; data offsets
    and the payload length are recomputed. Returns (container, header length)."""
    header, ops = table(b.header_blob)
    payload = b.delta[b.result.header.length :]
    new_ops: list[Op] = []
    parts: list[bytes] = []
    cursor = 0
    for i, op in enumerate(ops):
        data = payload[op.data_offset : op.data_offset + op.data_length]
        if i in changes:
            op, data = changes[i]
        new_ops.append(replace(op, data_offset=cursor, data_length=len(data)))
        parts.append(data)
        cursor += len(data)
    blob = repack(header, new_ops, payload_length=cursor)
    return blob + b"".join(parts), len(blob)
