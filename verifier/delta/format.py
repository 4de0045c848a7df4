"""The otakit delta container: layout, hard limits, and the pure header/op-table parser.

The container is specified in docs/FORMAT.md ("Delta container"); this module is its
executable form and the only place both the encoder and the device read the layout from.
Parsing is pure (bytes in, validated values or a typed error out) and bounded: every count,
length, offset and window is checked against a hard limit of this module *before* it is used
to index, allocate or read anything.

The op table is validated in one pass (``validate_header``) and walked again lazily during
apply (``iter_ops``), so memory never holds more than the header bytes and one op.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from verifier.artifact import MAX_IMAGE_LENGTH, ImageRef
from verifier.errors import (
    DecodeLimitError,
    DeltaFormatError,
    ImageHashMismatchError,
)

MAGIC = b"OTADELTA"
#: The version the encoder writes by default; this decoder reads every version in
#: ``FORMAT_VERSIONS``. Version 2 adds op kind DIFF and nothing else.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)

#: Hard limits of this decoder. A header may declare smaller ones, never larger.
MAX_HEADER_LENGTH = 16 << 20
MAX_OP_LENGTH = 8 << 20
MAX_REF_LENGTH = 16 << 20
MAX_WINDOW_LOG = 24
MIN_WINDOW_LOG = 10
MAX_EXTENTS_PER_OP = 4096
MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 1 << 20

# magic, version, flags, block_size, op_count, extent_count, header_length, payload_length,
# base_length, base_sha256, result_length, result_sha256, max_op_length, max_ref_length,
# max_window_log, 7 reserved bytes
PREFIX = struct.Struct("<8sHHIIIQQQ32sQ32sIIB7s")
# kind, flags, n_src, dst_length, dst_offset, data_offset, data_length, sha256
OP = struct.Struct("<BBHIQQI32s")
# base offset, length
EXTENT = struct.Struct("<QI")
# DIFF control table: entry count, then per entry diff length, extra length, window offset
DIFF_COUNT = struct.Struct("<I")
DIFF_ENTRY = struct.Struct("<III")


class OpKind(IntEnum):
    COPY = 1  # output = concatenation of base extents
    ZSTD = 2  # output = one zstd frame from the payload
    ZSTD_REF = 3  # output = one zstd frame decoded with base extents as raw-content dictionary
    ZERO = 4  # output = dst_length zero bytes
    DIFF = 5  # output = window bytes + a byte-wise difference, and literals (version 2 only)


#: Op kinds that read a reference window of base bytes (and decode a frame against it).
WINDOW_KINDS = (OpKind.ZSTD_REF, OpKind.DIFF)


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds a container declares for itself (each <= the decoder's hard limit)."""

    max_op_length: int
    max_ref_length: int
    max_window_log: int


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed-size prefix of a container, already bounded and checked."""

    version: int
    block_size: int
    op_count: int
    extent_count: int
    header_length: int
    payload_length: int
    base: ImageRef
    result: ImageRef
    limits: Limits


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: produces ``dst_length`` bytes at ``dst_offset`` of the result."""

    kind: OpKind
    dst_offset: int
    dst_length: int
    data_offset: int
    data_length: int
    sha256: bytes
    src: tuple[tuple[int, int], ...]


def max_frame_length(dst_length: int) -> int:
    """Largest payload a zstd op may carry: above zstd's compress bound for its output."""
    return dst_length + (dst_length >> 7) + 1024


def max_diff_entries(dst_length: int) -> int:
    """Most control entries a DIFF op may carry: one per 8 output bytes (an entry costs 12
    bytes, so more would only ever grow the delta)."""
    return dst_length // 8 + 1


def diff_content_length(entries: int, dst_length: int) -> int:
    """Decoded size of a DIFF frame: control table then exactly ``dst_length`` stream bytes."""
    return DIFF_COUNT.size + entries * DIFF_ENTRY.size + dst_length


def max_data_length(kind: OpKind, dst_length: int) -> int:
    """Largest payload an op of ``kind`` producing ``dst_length`` bytes may carry."""
    if kind is OpKind.DIFF:
        return max_frame_length(diff_content_length(max_diff_entries(dst_length), dst_length))
    return max_frame_length(dst_length)


#: One DIFF entry: ``diff`` bytes of (window[offset + i] + stream byte) mod 256, then
#: ``extra`` literal stream bytes.
DiffEntry = tuple[int, int, int]


def parse_diff_control(
    content: bytes | memoryview, *, dst_length: int, window_length: int, where: str
) -> list[DiffEntry]:
    """Bound and check a DIFF frame's decoded content; return its entries.

    The content must be exactly the control table followed by ``dst_length`` stream bytes;
    every entry must read inside the window and the entries must produce exactly
    ``dst_length`` bytes. Checked before any window byte is touched.
    """
    if len(content) < DIFF_COUNT.size:
        raise DeltaFormatError(
            f"{where}: DIFF content must start with a {DIFF_COUNT.size}-byte entry count, "
            f"found {len(content)} bytes"
        )
    (count,) = DIFF_COUNT.unpack_from(content)
    limit = max_diff_entries(dst_length)
    if count > limit:
        raise DecodeLimitError(
            f"{where}: DIFF control table declares {count} entries, limit for "
            f"{dst_length} bytes of output is {limit}"
        )
    table_end = DIFF_COUNT.size + count * DIFF_ENTRY.size
    if len(content) < table_end:
        raise DeltaFormatError(
            f"{where}: DIFF control table truncated: {count} entries need {table_end} bytes, "
            f"content has {len(content)}"
        )
    if len(content) != table_end + dst_length:
        raise DeltaFormatError(
            f"{where}: DIFF content must be the {table_end}-byte control table and "
            f"{dst_length} stream bytes ({table_end + dst_length} in all), found {len(content)}"
        )
    entries = list(DIFF_ENTRY.iter_unpack(content[DIFF_COUNT.size : table_end]))
    total = 0
    for k, (diff, extra, offset) in enumerate(entries):
        if offset + diff > window_length:
            raise DeltaFormatError(
                f"{where}: DIFF entry {k} reads window bytes {offset}..{offset + diff}, "
                f"the window has {window_length}"
            )
        total += diff + extra
        if total > dst_length:
            break
    if total != dst_length:
        raise DeltaFormatError(
            f"{where}: DIFF entries must produce exactly {dst_length} bytes, "
            f"they produce {'more' if total > dst_length else total}"
        )
    return entries


def prefix_length_of(head: bytes) -> int:
    """Header length declared by a container's first bytes (unauthenticated; debug use only)."""
    if len(head) < PREFIX.size or head[:8] != MAGIC:
        raise DeltaFormatError(
            f"delta container: expected magic {MAGIC!r} and {PREFIX.size} header bytes, "
            f"found {head[:8]!r} and {len(head)} bytes"
        )
    length: int = PREFIX.unpack_from(head)[6]
    if not PREFIX.size <= length <= MAX_HEADER_LENGTH:
        raise DecodeLimitError(
            f"delta header length {length} outside {PREFIX.size}..{MAX_HEADER_LENGTH}"
        )
    return length


def parse_prefix(blob: bytes) -> Header:
    """Parse and bound the fixed prefix of ``blob`` (the whole authenticated header)."""
    if len(blob) < PREFIX.size:
        raise DeltaFormatError(
            f"delta header: expected at least {PREFIX.size} bytes, found {len(blob)}"
        )
    (
        magic,
        version,
        flags,
        block_size,
        op_count,
        extent_count,
        header_length,
        payload_length,
        base_length,
        base_sha,
        result_length,
        result_sha,
        max_op,
        max_ref,
        max_wlog,
        reserved,
    ) = PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise DeltaFormatError(f"delta header: expected magic {MAGIC!r}, found {magic!r}")
    if version not in FORMAT_VERSIONS:
        raise DeltaFormatError(
            f"delta header: this decoder reads format versions "
            f"{FORMAT_VERSIONS[0]}..{FORMAT_VERSIONS[-1]}, found {version}",
            hint="update otakit-device or publish a full image for this device",
        )
    if flags != 0 or reserved != bytes(7):
        raise DeltaFormatError(
            f"delta header: expected flags and reserved bytes 0, found {flags:#x}, {reserved!r}"
        )
    if header_length != len(blob):
        raise DeltaFormatError(
            f"delta header: declares {header_length} bytes, authenticated header has {len(blob)}"
        )
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise DeltaFormatError(
            f"delta header: block size must be a power of two in "
            f"{MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}, found {block_size}"
        )
    for name, value in (("base", base_length), ("result", result_length)):
        if not 0 < value <= MAX_IMAGE_LENGTH:
            raise DecodeLimitError(
                f"delta header: {name} length must be in 1..{MAX_IMAGE_LENGTH}, found {value}"
            )
    if not 0 < max_op <= MAX_OP_LENGTH:
        raise DecodeLimitError(
            f"delta header: max op length must be in 1..{MAX_OP_LENGTH}, found {max_op}"
        )
    if not 0 <= max_ref <= MAX_REF_LENGTH:
        raise DecodeLimitError(
            f"delta header: max reference length must be <= {MAX_REF_LENGTH}, found {max_ref}"
        )
    if not MIN_WINDOW_LOG <= max_wlog <= MAX_WINDOW_LOG:
        raise DecodeLimitError(
            f"delta header: max zstd window log must be in {MIN_WINDOW_LOG}..{MAX_WINDOW_LOG}, "
            f"found {max_wlog}"
        )
    if payload_length > MAX_IMAGE_LENGTH * 2:
        raise DecodeLimitError(f"delta header: payload length {payload_length} is implausible")
    expected_len = PREFIX.size + op_count * OP.size + extent_count * EXTENT.size
    if expected_len != header_length:
        raise DeltaFormatError(
            f"delta header: {op_count} ops and {extent_count} extents need {expected_len} "
            f"bytes, header has {header_length}"
        )
    return Header(
        version=version,
        block_size=block_size,
        op_count=op_count,
        extent_count=extent_count,
        header_length=header_length,
        payload_length=payload_length,
        base=ImageRef(base_length, base_sha.hex()),
        result=ImageRef(result_length, result_sha.hex()),
        limits=Limits(max_op, max_ref, max_wlog),
    )


def check_refs(header: Header, *, base_ref: ImageRef, result_ref: ImageRef) -> None:
    """The header must describe exactly the signed base and result images."""
    if header.base != base_ref:
        raise ImageHashMismatchError(
            f"delta base: signed metadata names base {base_ref.sha256[:16]}… "
            f"({base_ref.length} bytes), the delta was built against "
            f"{header.base.sha256[:16]}… ({header.base.length} bytes)",
            hint="the device will use the full image instead",
        )
    if header.result.length != result_ref.length:
        raise DecodeLimitError(
            f"delta result: signed image length is {result_ref.length}, "
            f"the delta declares {header.result.length}"
        )
    if header.result.sha256 != result_ref.sha256:
        raise ImageHashMismatchError(
            f"delta result: signed image sha256 is {result_ref.sha256[:16]}…, "
            f"the delta declares {header.result.sha256[:16]}…"
        )


def iter_ops(blob: bytes, header: Header) -> Iterator[Op]:
    """Yield every op of the table, each checked against the header and all previous ops.

    Enforces: ops cover the result exactly once and in order (each starts where the previous
    ended), never past the result length; sources lie inside the base; payload regions are
    consecutive (the payload is read as a stream) and end exactly at the payload length.
    """
    pos = PREFIX.size
    cursor = 0
    data_cursor = 0
    extents_seen = 0
    lim = header.limits
    for index in range(header.op_count):
        kind_raw, flags, n_src, dst_length, dst_offset, data_offset, data_length, sha = (
            OP.unpack_from(blob, pos)
        )
        pos += OP.size
        where = f"delta op {index}"
        try:
            kind = OpKind(kind_raw)
        except ValueError:
            raise DeltaFormatError(f"{where}: unknown kind {kind_raw}") from None
        if kind is OpKind.DIFF and header.version < 2:
            raise DeltaFormatError(
                f"{where}: kind {int(kind)} (DIFF) needs format version 2, "
                f"the container is version {header.version}"
            )
        if flags != 0:
            raise DeltaFormatError(f"{where}: expected flags 0, found {flags:#x}")
        if dst_offset != cursor:
            what = "overlaps the previous op" if dst_offset < cursor else "leaves a gap"
            raise DeltaFormatError(
                f"{where}: {what}: expected output offset {cursor}, found {dst_offset}"
            )
        if not 0 < dst_length <= lim.max_op_length:
            raise DecodeLimitError(
                f"{where}: output length must be in 1..{lim.max_op_length}, found {dst_length}"
            )
        if dst_offset + dst_length > header.result.length:
            raise DecodeLimitError(
                f"{where}: writes {dst_offset}..{dst_offset + dst_length}, beyond the signed "
                f"image length {header.result.length}"
            )
        if n_src > MAX_EXTENTS_PER_OP or extents_seen + n_src > header.extent_count:
            raise DeltaFormatError(
                f"{where}: {n_src} source extents exceed the per-op limit "
                f"{MAX_EXTENTS_PER_OP} or the header's extent count {header.extent_count}"
            )
        src = tuple(EXTENT.iter_unpack(blob[pos : pos + n_src * EXTENT.size]))
        pos += n_src * EXTENT.size
        extents_seen += n_src
        src_total = 0
        for off, length in src:
            if length == 0 or off + length > header.base.length:
                raise DeltaFormatError(
                    f"{where}: source extent {off}+{length} reads outside the base image "
                    f"(length {header.base.length})"
                )
            src_total += length
        if kind is OpKind.COPY:
            if src_total != dst_length:
                raise DeltaFormatError(
                    f"{where}: copy sources total {src_total} bytes, output is {dst_length}"
                )
        elif kind in WINDOW_KINDS:
            if n_src == 0 or src_total > lim.max_ref_length:
                raise DecodeLimitError(
                    f"{where}: reference must be 1..{lim.max_ref_length} bytes in at least "
                    f"one extent, found {src_total} bytes in {n_src}"
                )
        elif n_src:
            raise DeltaFormatError(f"{where}: {kind.name} takes no source extents, found {n_src}")
        if kind in (OpKind.COPY, OpKind.ZERO):
            if data_length != 0:
                raise DeltaFormatError(f"{where}: {kind.name} carries no data, found {data_length}")
        elif not 0 < data_length <= max_data_length(kind, dst_length):
            raise DecodeLimitError(
                f"{where}: zstd data must be 1..{max_data_length(kind, dst_length)} bytes for "
                f"{dst_length} bytes of output, found {data_length}"
            )
        if data_offset != data_cursor:
            raise DeltaFormatError(
                f"{where}: payload must be consecutive: expected data offset {data_cursor}, "
                f"found {data_offset}"
            )
        if data_cursor + data_length > header.payload_length:
            raise DeltaFormatError(
                f"{where}: data {data_offset}+{data_length} ends beyond the payload "
                f"({header.payload_length} bytes)"
            )
        data_cursor += data_length
        cursor += dst_length
        yield Op(kind, dst_offset, dst_length, data_offset, data_length, sha, src)
    if cursor != header.result.length:
        raise DeltaFormatError(
            f"delta op table: ops produce {cursor} bytes, the result image has "
            f"{header.result.length}"
        )
    if data_cursor != header.payload_length:
        raise DeltaFormatError(
            f"delta op table: ops use {data_cursor} payload bytes, header declares "
            f"{header.payload_length}"
        )
    if pos != len(blob) or extents_seen != header.extent_count:
        raise DeltaFormatError(
            f"delta op table: {len(blob) - pos} unused header bytes, "
            f"{header.extent_count - extents_seen} unused extents"
        )


def validate_header(blob: bytes, *, base_ref: ImageRef, result_ref: ImageRef) -> Header:
    """Parse the prefix and walk the whole op table once; raise on the first violation."""
    header = parse_prefix(blob)
    check_refs(header, base_ref=base_ref, result_ref=result_ref)
    for _ in iter_ops(blob, header):
        pass
    return header


def pack_prefix(header: Header) -> bytes:
    """Serialize a prefix (used by the encoder; the inverse of ``parse_prefix``)."""
    return PREFIX.pack(
        MAGIC,
        header.version,
        0,
        header.block_size,
        header.op_count,
        header.extent_count,
        header.header_length,
        header.payload_length,
        header.base.length,
        bytes.fromhex(header.base.sha256),
        header.result.length,
        bytes.fromhex(header.result.sha256),
        header.limits.max_op_length,
        header.limits.max_ref_length,
        header.limits.max_window_log,
        bytes(7),
    )


def pack_op(op: Op) -> bytes:
    """Serialize one op record followed by its source extents."""
    head = OP.pack(
        int(op.kind),
        0,
        len(op.src),
        op.dst_length,
        op.dst_offset,
        op.data_offset,
        op.data_length,
        op.sha256,
    )
    return head + b"".join(EXTENT.pack(off, length) for off, length in op.src)
