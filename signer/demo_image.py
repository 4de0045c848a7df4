"""Synthetic but realistic root-filesystem images for the demo and the tests.

The demo must run on a machine with nothing but Python, so it cannot call mke2fs or
debootstrap. A POSIX tar archive is a real filesystem image format (our benchmark corpus has a
tar form too) and Python writes it natively. The tree imitates a small appliance: ELF-like
binaries (structured, partly compressible), shared libraries, text configuration, a package
database. Version 2 is "a package update": some libraries rebuilt (mostly identical bytes with
scattered changes, shifted offsets), a few configs edited, new files added, one removed —
the same shape as the real corpus's v1 → v2 step, only smaller.

Everything is derived from a seed: the same arguments always give the same bytes.
"""

from __future__ import annotations

import io
import random
import tarfile
from dataclasses import dataclass

_WORDS = tuple(
    "alloc buffer config daemon device errno fetch handle image kernel label mount "  # noqa: SIM905
    "network option packet queue route socket thread update verify window yield zone".split()
)


@dataclass(frozen=True)
class DemoImageSpec:
    """What to build. ``size`` is the slot size the archive is padded to (zero tail)."""

    version: int
    seed: int = 20261129
    files: int = 160
    size: int = 8 << 20


def _binary(rng: random.Random, length: int) -> bytes:
    """Bytes shaped like compiled code: an ELF header, repeated 'instruction' motifs, strings."""
    motifs = [rng.randbytes(rng.randint(4, 24)) for _ in range(48)]
    out = bytearray(b"\x7fELF\x02\x01\x01" + bytes(9))
    while len(out) < length:
        if rng.random() < 0.15:
            out += " ".join(rng.choices(_WORDS, k=rng.randint(2, 8))).encode() + b"\0"
        else:
            out += rng.choice(motifs)
    return bytes(out[:length])


def _text(rng: random.Random, lines: int) -> bytes:
    return "".join(
        f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)} = {rng.randint(0, 9999)}\n"
        for _ in range(lines)
    ).encode()


def _tree(spec: DemoImageSpec) -> dict[str, bytes]:
    """The v1 tree, then the v2 changes applied deterministically on top of it."""
    rng = random.Random(spec.seed)  # noqa: S311 (deterministic demo data)
    tree: dict[str, bytes] = {}
    for i in range(spec.files):
        kind = i % 4
        if kind == 0:
            tree[f"usr/bin/tool{i:03d}"] = _binary(rng, rng.randint(8_000, 90_000))
        elif kind == 1:
            tree[f"usr/lib/libdemo{i:03d}.so.1"] = _binary(rng, rng.randint(20_000, 120_000))
        elif kind == 2:
            tree[f"etc/demo/service{i:03d}.conf"] = _text(rng, rng.randint(5, 60))
        else:
            tree[f"usr/share/doc/pkg{i:03d}/README"] = _text(rng, rng.randint(20, 200))
    tree["etc/os-release"] = b'NAME="otakit demo"\nVERSION_ID="1"\n'
    if spec.version >= 2:
        upd = random.Random(spec.seed + spec.version)  # noqa: S311
        names = sorted(tree)
        for name in upd.sample(names, k=max(1, len(names) // 12)):  # rebuilt packages
            data = bytearray(tree[name])
            for _ in range(upd.randint(1, 6)):
                pos = upd.randrange(len(data))
                data[pos:pos] = upd.randbytes(upd.randint(1, 300))  # shifts what follows
            tree[name] = bytes(data)
        for i in range(max(1, spec.files // 20)):  # new packages
            tree[f"usr/bin/newtool{i:02d}"] = _binary(upd, upd.randint(10_000, 60_000))
        del tree[names[3]]  # one file removed
        tree["etc/os-release"] = f'NAME="otakit demo"\nVERSION_ID="{spec.version}"\n'.encode()
    return tree


def build_image(spec: DemoImageSpec) -> bytes:
    """A tar image of the tree, padded with zeros to ``spec.size`` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(_tree(spec).items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o755 if "/bin/" in name else 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if len(raw) > spec.size:
        raise ValueError(f"demo tree needs {len(raw)} bytes, slot size is {spec.size}")
    return raw + bytes(spec.size - len(raw))
