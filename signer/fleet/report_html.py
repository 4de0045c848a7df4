"""The fleet run as one self-contained HTML page: a summary and three charts, inline SVG.

No script, no external file, no font download: the page is attached to tickets and opened
on machines without network, and a report must not be able to run code. Every string that
came from a device or an operator (versions, failure kinds, reasons) is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape

from signer.fleet.results import FleetSummary, Sample
from signer.imagediff.report import human as _bytes

_W, _H = 720, 260
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 84, 150, 16, 36
_PALETTE = ("#9aa5b1", "#2f855a", "#c05621", "#6b46c1", "#2b6cb0", "#b7791f", "#c53030")


def render(summary: FleetSummary, *, title: str = "otakit fleet run") -> str:
    """The whole page."""
    s = summary
    verdict = (
        "every device ended on one of the two versions"
        if s.on_neither == 0
        else f"{s.on_neither} device(s) ended on neither version"
    )
    rows = [
        ("devices", f"{s.devices}"),
        (f"on the new version {s.new_version}", f"{s.on_new}"),
        ("rolled back to the version they ran", f"{s.rolled_back}"),
        ("back on the version they ran, after a recall", f"{s.recalled}"),
        (f"never started {s.new_version} (waves, halt, recall)", f"{s.not_started}"),
        ("on neither", f"{s.on_neither}"),
        ("bytes served", _bytes(s.bytes_served)),
        ("bound (deltas + full images for devices without a base)", _bytes(s.bytes_bound)),
        ("if every device had downloaded the full image", _bytes(s.bytes_all_full)),
        ("wall time", f"{s.wall_s:.1f} s"),
        ("devices per minute", f"{s.devices_per_minute:.1f}"),
    ]
    reasons = sorted(s.rollback_reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    reason_rows = (
        "".join(f"<tr><th>{escape(k)}</th><td>{n}</td></tr>" for k, n in reasons)
        or '<tr><td colspan="2">none</td></tr>'
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{escape(title)}</title>
<style>
body {{ font: 14px/1.4 sans-serif; margin: 24px; color: #1a202c; max-width: 960px; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 3px 10px; text-align: left; }}
th {{ font-weight: normal; color: #4a5568; }} td {{ font-variant-numeric: tabular-nums; }}
.verdict {{ font-weight: bold; color: {"#2f855a" if s.on_neither == 0 else "#c53030"}; }}
svg text {{ font: 11px sans-serif; fill: #2d3748; }}
</style></head><body>
<h1>{escape(title)}</h1>
<p class="verdict" id="verdict">{escape(verdict)}</p>
<table id="summary">{table}</table>
<h2>Versions across the fleet over time</h2>
{versions_chart(s.samples, s.old_version, s.new_version)}
<h2>Bytes served</h2>
{bytes_chart(s.samples, s.bytes_bound, s.bytes_all_full)}
<h2>Failures by kind</h2>
{bars_chart(s.failures_by_kind)}
<h2>Why devices rolled back</h2>
<table id="reasons">{reason_rows}</table>
</body></html>
"""


def versions_chart(samples: Sequence[Sample], old: str = "", new: str = "") -> str:
    """Stacked areas: how many devices run each version at each moment (the old version
    grey at the bottom, the new one green on top, anything else between)."""
    found = _series_order(samples)
    middle = [n for n in found if n not in (old, new)]
    series = [n for n in (old, *middle, new) if n in found]
    colours = {old: _PALETTE[0], new: _PALETTE[1]}
    others = iter(_PALETTE[2:] * (1 + len(middle) // len(_PALETTE[2:])))
    for n in middle:
        colours[n] = next(others)
    if not samples or not series:
        return _empty("versions-chart")
    t_max = max(samples[-1].t, 1e-9)
    total = max(sum(x.versions.values()) for x in samples) or 1
    x = _scale(0, t_max, _PAD_L, _W - _PAD_R)
    y = _scale(0, total, _H - _PAD_B, _PAD_T)
    shapes = []
    below = [0] * len(samples)
    for name in series:
        above = [b + smp.versions.get(name, 0) for b, smp in zip(below, samples, strict=True)]
        top = [(x(smp.t), y(v)) for smp, v in zip(samples, above, strict=True)]
        bottom = [(x(smp.t), y(v)) for smp, v in zip(samples, below, strict=True)][::-1]
        colour = colours[name]
        shapes.append(
            f'<polygon class="series" data-series="{escape(name)}" fill="{colour}" '
            f'fill-opacity="0.85" points="{_points(top + bottom)}"/>'
        )
        below = above
    legend = _legend(series, colours)
    axes = _axes(x, y, t_max, total, "s") + f'<text x="4" y="{_PAD_T - 4}">devices</text>'
    return _svg("versions-chart", axes + "".join(shapes) + legend)


def bytes_chart(samples: Sequence[Sample], bound: int, all_full: int) -> str:
    """Cumulative bytes served, against the bound and the all-full-images cost."""
    if not samples:
        return _empty("bytes-chart")
    t_max = max(samples[-1].t, 1e-9)
    # Scaled to what was served and the bound; the all-full cost, often 10x more, would
    # flatten both into the axis, so it is drawn only when it fits and named otherwise.
    top = max(bound, samples[-1].bytes_served, 1) * 1.2
    if all_full <= top * 1.5:
        top = max(top, all_full * 1.05)
    x = _scale(0, t_max, _PAD_L, _W - _PAD_R)
    y = _scale(0, top, _H - _PAD_B, _PAD_T)
    line = _points([(x(s.t), y(s.bytes_served)) for s in samples])
    parts = [
        f'<polyline class="served" fill="none" stroke="{_PALETTE[1]}" stroke-width="2" '
        f'points="{line}"/>'
    ]
    for value, label, colour in ((bound, "bound", _PALETTE[2]), (all_full, "all full", "#718096")):
        if value > top:
            parts.append(
                f'<text x="{_PAD_L + 8}" y="{_PAD_T + 12}">all full images would be '
                f"{_bytes(value)} (off this scale)</text>"
            )
            continue
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{colour}" stroke-dasharray="5 4"/>'
            f'<text x="{_W - _PAD_R + 6}" y="{y(value) + 4:.1f}">{label} {_bytes(value)}</text>'
        )
    axes = _axes(x, y, t_max, top, "s", fmt=_bytes)
    return _svg("bytes-chart", axes + "".join(parts))


def bars_chart(counts: Mapping[str, int]) -> str:
    """Horizontal bars, largest first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if not items:
        return '<p id="bars-chart">no failures</p>'
    height = _PAD_T + 22 * len(items) + 8
    top = max(n for _, n in items) or 1
    width = _W - _PAD_R - 200
    parts = []
    for i, (kind, n) in enumerate(items):
        yy = _PAD_T + 22 * i
        w = max(1.0, width * n / top)
        parts.append(
            f'<text x="194" y="{yy + 14}" text-anchor="end">{escape(kind)}</text>'
            f'<rect class="bar" x="200" y="{yy + 2}" width="{w:.1f}" height="16" '
            f'fill="{_PALETTE[2]}"/><text x="{200 + w + 6:.1f}" y="{yy + 14}">{n}</text>'
        )
    return (
        f'<svg id="bars-chart" xmlns="http://www.w3.org/2000/svg" width="{_W}" '
        f'height="{height}" role="img">{"".join(parts)}</svg>'
    )


def _series_order(samples: Sequence[Sample]) -> list[str]:
    seen: dict[str, None] = {}
    for s in samples:
        for name in s.versions:
            seen.setdefault(name, None)
    return list(seen)


def _legend(series: Sequence[str], colours: Mapping[str, str]) -> str:
    out = []
    for i, name in enumerate(series):
        yy = _PAD_T + 16 * i
        out.append(
            f'<rect x="{_W - _PAD_R + 10}" y="{yy}" width="10" height="10" '
            f'fill="{colours[name]}"/>'
            f'<text x="{_W - _PAD_R + 26}" y="{yy + 9}">{escape(name)}</text>'
        )
    return "".join(out)


_Scale = Callable[[float], float]


def _plain(v: int) -> str:
    return f"{v:g}"


def _axes(
    x: _Scale,
    y: _Scale,
    x_max: float,
    y_max: float,
    x_unit: str,
    fmt: Callable[[int], str] = _plain,
) -> str:
    parts = [
        f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{_H - _PAD_B}" y2="{_H - _PAD_B}" '
        'stroke="#4a5568"/>',
        f'<line x1="{_PAD_L}" x2="{_PAD_L}" y1="{_PAD_T}" y2="{_H - _PAD_B}" stroke="#4a5568"/>',
    ]
    for k in range(5):
        xv, yv = x_max * k / 4, y_max * k / 4
        parts.append(
            f'<text x="{x(xv):.1f}" y="{_H - _PAD_B + 16}" text-anchor="middle">'
            f"{xv:.0f} {x_unit}</text>"
            f'<text x="{_PAD_L - 6}" y="{y(yv) + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(round(yv)))}</text>"
        )
    return "".join(parts)


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> _Scale:
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) * (out_hi - out_lo) / span


def _points(pts: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)


def _svg(ident: str, body: str) -> str:
    return (
        f'<svg id="{ident}" xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'role="img">{body}</svg>'
    )


def _empty(ident: str) -> str:
    return f'<p id="{ident}">no samples</p>'
