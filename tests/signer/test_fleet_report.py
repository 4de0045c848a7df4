"""The fleet report page (signer/fleet/report_html.py), rendered by a real headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from signer.fleet.report_html import render
from signer.fleet.results import FleetSummary, Sample

HOSTILE = '<script>alert("x")</script>'


def _summary(on_neither: int = 0) -> FleetSummary:
    samples = []
    for i in range(41):
        new = min(500, max(0, (i - 4) * 15))
        updating = min(10, 500 - new) if 4 < i < 38 else 0
        samples.append(
            Sample(
                i * 5.0, {"1.0": 500 - new - updating, "updating": updating, "2.0": new}, new * 3
            )
        )
    return FleetSummary(
        devices=500, new_version="2.0", old_version="1.0", on_new=480, rolled_back=20,
        on_neither=on_neither, rollback_reasons={f"health check {HOSTILE}": 20},
        failures_by_kind={"connection-cut": 31, HOSTILE: 2}, bytes_served=1500,
        bytes_all_full=40_000, bytes_bound=1600, wall_s=200.0, samples=tuple(samples),
    )  # fmt: skip


def test_the_page_runs_nothing_and_escapes_what_devices_said() -> None:
    page = render(_summary())
    assert "<script" not in page and HOSTILE not in page
    assert "&lt;script&gt;" in page
    assert "default-src 'none'" in page  # no fetch, no script even if one slipped in
    assert "every device ended on one of the two versions" in page
    assert "1 device(s) ended on neither version" in render(_summary(on_neither=1))


def test_an_empty_run_still_renders() -> None:
    empty = FleetSummary(0, "2.0", "1.0", 0, 0, 0, {}, {}, 0, 0, 0, 0.0, ())
    page = render(empty)
    assert "no samples" in page and "no failures" in page


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.fail("headless Chromium is required (.ci/system-deps installs Debian's chromium)")


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Rows of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for r in range(height):
        f, line = (
            raw[r * (stride + 1)],
            bytearray(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = bytes(line)
        rows.append(bytes(r2 for k in range(0, stride, bpp) for r2 in line[k : k + 3]))
    return width, height, rows


def test_chromium_renders_the_charts(tmp_path: Path) -> None:
    page = tmp_path / "fleet.html"
    page.write_text(render(_summary()), encoding="utf-8")
    shot = tmp_path / "fleet.png"
    proc = subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1000,1300", f"--screenshot={shot}", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1000, 1300)
    counts: dict[bytes, int] = {}
    for row in rows:
        for i in range(0, len(row), 3):
            counts[row[i : i + 3]] = counts.get(row[i : i + 3], 0) + 1

    def painted(hex_rgb: str, opacity: float = 1.0) -> int:
        want = [round(opacity * v + (1 - opacity) * 255) for v in bytes.fromhex(hex_rgb)]
        return sum(
            n for px, n in counts.items() if all(abs(px[k] - want[k]) <= 3 for k in range(3))
        )

    # Areas, not text: the new version's (#2f855a at 0.85 on white) and the old one's
    # (#9aa5b1) fill thousands of pixels, the failure bars (#c05621) hundreds; the same
    # colours in the verdict's or the legend's few pixels would not reach these counts.
    assert painted("2f855a", 0.85) > 20_000, "new-version area not painted"
    assert painted("9aa5b1", 0.85) > 5_000, "old-version area not painted"
    assert painted("c05621") > 2_000, "failure bars not painted"
