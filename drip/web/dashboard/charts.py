"""Charts as inline SVG, drawn on the server: no chart library, no script.

Each chart is an ``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that states the
figures, and the page shows the same numbers in a table beside it (screen readers and people
who prefer numbers). Colours come from classes styled in ``dashboard.css`` (the page's CSP
allows no inline style), chosen for contrast on white.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 640


def _nice_max(value: int) -> int:
    """The top of an axis with 4 whole steps: 4 times the smallest 1, 2 or 5 times a power of
    ten that reaches ``value`` in four steps (at least 4)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value <= 4 * factor * step:
                return 4 * factor * step
        step *= 10


def _svg(chart_id: str, title: str, desc: str, height: int, body: list[str]) -> Markup:
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMinYMin meet">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def grouped_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
) -> Markup:
    """Vertical bars, one group per label, one bar per series (at most 3 series)."""
    height, left, bottom, top = 260, 48, 40, 12
    plot_w, plot_h = WIDTH - left - 8, height - bottom - top
    peak = _nice_max(max((v for _, values in series for v in values), default=0))
    body: list[str] = []
    for i in range(5):  # grid lines and their values
        value = peak * i // 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line class="grid" x1="{left}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value}</text>'
        )
    group_w = plot_w / max(1, len(labels))
    bar_w = max(1.0, (group_w * 0.8) / max(1, len(series)))
    label_every = max(1, len(labels) // 8)
    for g, label in enumerate(labels):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, values) in enumerate(series):
            value = values[g]
            h = plot_h * value / peak
            body.append(
                f'<rect class="bar s{s}" x="{x0 + s * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}"><title>{escape(label)}: {value} '
                f"{escape(name)}</title></rect>"
            )
        if g % label_every == 0:
            body.append(
                f'<text class="axis" x="{x0:.1f}" y="{height - bottom + 16}">{escape(label)}</text>'
            )
    for s, (name, _) in enumerate(series):  # legend
        x = left + s * 170
        body.append(f'<rect class="bar s{s}" x="{x}" y="{height - 14}" width="12" height="12"/>')
        body.append(f'<text class="legend" x="{x + 18}" y="{height - 4}">{escape(name)}</text>')
    totals = ", ".join(f"{name}: {sum(values)} in total" for name, values in series)
    desc = f"{len(labels)} periods from {labels[0]} to {labels[-1]}; {totals}." if labels else ""
    return _svg(chart_id, title, desc or "No data yet.", height, body)


def funnel(chart_id: str, title: str, steps: Sequence[tuple[str, int]]) -> Markup:
    """Horizontal bars, one per step, widths relative to the first step, with count and share."""
    row, label_w, right = 30, 190, 120
    height = row * len(steps) + 8
    first = steps[0][1] if steps else 0
    peak = max((count for _, count in steps), default=0) or 1
    bar_room = WIDTH - label_w - right
    body: list[str] = []
    for i, (name, count) in enumerate(steps):
        y = 4 + i * row
        w = bar_room * count / peak
        share = f"{100 * count / first:.0f}%" if first else "-"
        body.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 18}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
        body.append(
            f'<rect class="bar s0" x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 10}"/>'
        )
        body.append(
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 18}">{count} ({share})</text>'
        )
    desc = "; ".join(f"{name}: {count}" for name, count in steps)
    return _svg(chart_id, title, desc or "No data yet.", height, body)
