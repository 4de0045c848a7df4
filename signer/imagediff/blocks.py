"""The block-level summary for images no file reader understands (raw, vfat, gpt, ...):
which 4 KiB blocks differ, and the largest runs of changed blocks. Two sequential reads, in
1 MiB chunks; bytes past the shorter image count as changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from signer.imagediff.source import image_length

BLOCK: Final = 4096
_CHUNK: Final = 256 * BLOCK
_TOP_RUNS: Final = 10


@dataclass(frozen=True)
class BlockDiff:
    length_a: int
    length_b: int
    blocks: int  # 4 KiB blocks in the longer image
    changed_blocks: int
    changed_bytes: int  # the changed blocks' bytes (a short last block counts its length)
    runs: tuple[tuple[int, int], ...]  # (offset, length) in bytes, largest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_size": BLOCK,
            "length_a": self.length_a,
            "length_b": self.length_b,
            "blocks": self.blocks,
            "changed_blocks": self.changed_blocks,
            "changed_bytes": self.changed_bytes,
            "largest_runs": [{"offset": o, "length": n} for o, n in self.runs],
        }


def diff_blocks(path_a: str, path_b: str) -> BlockDiff:
    runs: list[tuple[int, int]] = []
    changed = changed_bytes = 0
    run_start = -1
    offset = 0
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if not ca and not cb:
                break
            n = max(len(ca), len(cb))
            if ca == cb:
                if run_start >= 0:
                    runs.append((run_start, offset - run_start))
                    run_start = -1
                offset += n
                continue
            for off in range(0, n, BLOCK):
                same = ca[off : off + BLOCK] == cb[off : off + BLOCK]
                if not same:
                    changed += 1
                    changed_bytes += min(BLOCK, n - off)
                    if run_start < 0:
                        run_start = offset + off
                elif run_start >= 0:
                    runs.append((run_start, offset + off - run_start))
                    run_start = -1
            offset += n
    if run_start >= 0:
        runs.append((run_start, offset - run_start))
    runs.sort(key=lambda r: (-r[1], r[0]))
    length_a, length_b = image_length(path_a), image_length(path_b)
    return BlockDiff(
        length_a=length_a,
        length_b=length_b,
        blocks=-(-max(length_a, length_b) // BLOCK),
        changed_blocks=changed,
        changed_bytes=changed_bytes,
        runs=tuple(runs[:_TOP_RUNS]),
    )
