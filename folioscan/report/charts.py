"""Hand-written inline SVG charts: no script, no network, a few kilobytes each.

Each function returns one `<svg>` element with explicit width and height (so it has a size before
any stylesheet applies) and a viewBox (so it scales down on narrow screens).
"""
from __future__ import annotations

from typing import Optional, Sequence

from folioscan.text.safe import html as escape  # visible escapes for control characters, then markup

PALETTE = ("#2f6db5", "#e07b39", "#3a9d5d", "#b8463f", "#7d5ba6", "#8c6d46")
_FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12" fill="#333"'


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    import math

    step = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * step:
            return m * step
    return 10 * step


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(label)}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT}>{body}</svg>')


def histogram(counts: Sequence[int], threshold: Optional[float], label: str, width: int = 560, height: int = 240) -> str:
    """Bars over 0..1 in equal bins; bins under the threshold in a warning colour, the threshold as a line."""
    left, right, top, bottom = 48, 12, 16, 36
    pw, ph = width - left - right, height - top - bottom
    ymax = _nice_max(max(counts, default=0))
    n = len(counts)
    parts = []
    for k in range(5):  # grid and y labels
        y = top + ph - ph * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(ymax * k / 4)}</text>')
    for i, c in enumerate(counts):
        x0 = left + pw * i / n
        h = ph * c / ymax
        lo = i / n
        colour = "#d9822b" if threshold is not None and lo < threshold else PALETTE[0]
        parts.append(f'<rect x="{x0 + 1:.1f}" y="{top + ph - h:.1f}" width="{pw / n - 2:.1f}" height="{h:.1f}" '
                     f'fill="{colour}"><title>{lo:.2f}-{lo + 1 / n:.2f}: {c} pages</title></rect>')
    for k in range(0, 11, 2):
        x = left + pw * k / 10
        parts.append(f'<text x="{x:.1f}" y="{height - 18}" text-anchor="middle">{k / 10:.1f}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 3}" text-anchor="middle">page confidence</text>')
    if threshold is not None:
        x = left + pw * min(max(threshold, 0), 1)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{top + ph}" stroke="#b8463f" '
                     f'stroke-width="2" stroke-dasharray="5 3"/>')
        parts.append(f'<text x="{x - 4:.1f}" y="{top + 6}" text-anchor="end" fill="#b8463f">flag &lt; {threshold:.2f}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    return _svg(width, height, "".join(parts), label)


def hbars(items: Sequence[tuple[str, float, str]], label: str, width: int = 560, colours: Sequence[str] = PALETTE) -> str:
    """Horizontal bars: (name, value, text shown after the bar) per row."""
    row, left, right = 26, 150, 150
    height = row * max(len(items), 1) + 8
    vmax = max((v for _, v, _ in items), default=0) or 1
    pw = width - left - right
    parts = []
    for i, (name, value, note) in enumerate(items):
        y = 4 + i * row
        w = max(pw * value / vmax, 1 if value else 0)
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" rx="2" '
                     f'fill="{colours[i % len(colours)]}"><title>{escape(name)}: {escape(note)}</title></rect>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}">{escape(note)}</text>')
    return _svg(width, height, "".join(parts), label)


def lines(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], x_label: str, y_label: str, label: str,
          width: int = 560, height: int = 240, reference: Optional[tuple[float, str]] = None) -> str:
    """One polyline (with dots) per series of (x, y) points; a legend when there are several;
    `reference`: (y, text) drawn as a dashed horizontal line."""
    left, right, top, bottom = 52, 12, 16, 36
    pw, ph = width - left - right, height - top - bottom
    pts = [p for _, s in series for p in s]
    xmax = _nice_max(max((x for x, _ in pts), default=0))
    ymax = _nice_max(max([y for _, y in pts] + ([reference[0]] if reference else []), default=0))
    parts = []
    for k in range(5):
        y = top + ph - ph * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(ymax * k / 4)}</text>')
        x = left + pw * k / 4
        parts.append(f'<text x="{x:.1f}" y="{height - 18}" text-anchor="middle">{_num(xmax * k / 4)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 3}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(12 {top + ph / 2}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    if reference is not None:
        y = top + ph - ph * reference[0] / ymax
        parts.append(f'<line class="reference" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555" '
                     f'stroke-width="1" stroke-dasharray="5 3"><title>{escape(reference[1])}</title></line>')
    for i, (name, s) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(left + pw * x / xmax, top + ph - ph * y / ymax) for x, y in s]
        if len(xy) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for (x, y), (vx, vy) in zip(xy, s):
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                         f'<title>{escape(name)}: {_num(vy)} pages/s at {_num(vx)} min</title></circle>')
        if len(series) > 1:  # legend, top right
            parts.append(f'<rect x="{width - right - 12}" y="{top + 16 * i}" width="10" height="10" fill="{colour}"/>'
                         f'<text x="{width - right - 16}" y="{top + 9 + 16 * i}" text-anchor="end" font-size="11">'
                         f'{escape(name)}</text>')
    return _svg(width, height, "".join(parts), label)
