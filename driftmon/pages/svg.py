"""Inline SVG charts: sparklines, the two histograms of a monitor, history lines.

Pure functions returning SVG markup; every text is escaped with
:func:`html.escape`. Sizes are in CSS pixels and the charts are drawn at that
size (``width``/``height`` equal to the ``viewBox``), so a bar of proportion
``p`` is ``p / y_max * plot_height`` pixels tall on screen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

import numpy as np

REFERENCE_COLOUR = "#5b7fa6"
LIVE_COLOUR = "#e07b24"
FIRING_COLOUR = "#f6d5d5"
THRESHOLD_COLOUR = "#c0392b"


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def _scale(values: np.ndarray, thresholds: Sequence[float]) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    points = [*finite.tolist(), *[t for t in thresholds if math.isfinite(t)]]
    if not points:
        return 0.0, 1.0
    lo, hi = min(0.0, min(points)), max(points)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi * 1.05 if hi > 0 else hi


def _polyline_runs(
    times: np.ndarray, values: np.ndarray, x0: float, t0: float, t1: float, width: float,
    y_of: object,
) -> list[str]:
    """Polylines of consecutive drawable points (NaN breaks a line; +Inf is drawn at the top)."""
    runs: list[list[str]] = [[]]
    span = t1 - t0 if t1 > t0 else 1.0
    for t, v in zip(times.tolist(), values.tolist(), strict=True):
        if math.isnan(v):
            if runs[-1]:
                runs.append([])
            continue
        x = x0 + (t - t0) / span * width if t1 > t0 else x0 + width
        runs[-1].append(f"{_fmt(x)},{_fmt(y_of(v))}")  # type: ignore[operator]
    return [" ".join(r) for r in runs if r]


def _firing_bands(
    times: np.ndarray, firing: np.ndarray | None, x0: float, t0: float, t1: float, width: float,
    top: float, height: float,
) -> str:
    if firing is None or times.size == 0:
        return ""
    span = t1 - t0 if t1 > t0 else 1.0
    xs = [x0 + (t - t0) / span * width if t1 > t0 else x0 + width for t in times.tolist()]
    parts = []
    # Entry i was firing: shade from halfway to the previous entry to halfway to the next.
    for i, f in enumerate(firing.tolist()):
        if f > 0:
            start = (xs[i - 1] + xs[i]) / 2 if i > 0 else xs[i]
            end = (xs[i] + xs[i + 1]) / 2 if i + 1 < len(xs) else xs[i]
            parts.append(
                f'<rect class="firing-band" x="{_fmt(start)}" y="{_fmt(top)}" '
                f'width="{_fmt(max(end - start + 0.5, 2.0))}" height="{_fmt(height)}" '
                f'fill="{FIRING_COLOUR}"/>'
            )
    return "".join(parts)


def sparkline(
    times: np.ndarray,
    values: np.ndarray,
    *,
    threshold: float | None = None,
    firing: np.ndarray | None = None,
    width: int = 120,
    height: int = 28,
    label: str = "",
) -> str:
    """A small line of ``values`` over ``times`` with the rule's threshold dashed and
    firing times shaded; an empty box when there is nothing to draw."""
    title = f"<title>{escape(label)}</title>" if label else ""
    head = (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label, quote=True)}">{title}'
    )
    if times.size == 0:
        return head + "</svg>"
    thresholds = [threshold] if threshold is not None else []
    lo, hi = _scale(values, thresholds)
    pad = 2.0
    inner = height - 2 * pad

    def y_of(v: float) -> float:
        v = hi if math.isinf(v) and v > 0 else v
        return pad + inner - (v - lo) / (hi - lo) * inner

    t0, t1 = float(times[0]), float(times[-1])
    body = [_firing_bands(times, firing, 0, t0, t1, width, 0, height)]
    if threshold is not None and math.isfinite(threshold):
        y = _fmt(y_of(threshold))
        body.append(
            f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="{THRESHOLD_COLOUR}" '
            'stroke-dasharray="3,2" stroke-width="1"/>'
        )
    for points in _polyline_runs(times, values, 0, t0, t1, width, y_of):
        body.append(
            f'<polyline fill="none" stroke="{LIVE_COLOUR}" stroke-width="1.5" points="{points}"/>'
        )
    return head + "".join(body) + "</svg>"


def histogram(
    labels: Sequence[str],
    reference: np.ndarray,
    live: np.ndarray,
    *,
    plot_height: int = 200,
    bar_width: int = 14,
) -> str:
    """Reference and live proportions side by side over the bins, with the bin labels.

    Each bar is a ``rect`` with ``data-kind`` (``reference`` or ``live``),
    ``data-bin`` (its index) and ``data-proportion``; the chart carries
    ``data-y-max`` and ``data-plot-height``.
    """
    k = len(labels)
    y_max = float(max(reference.max(initial=0.0), live.max(initial=0.0)))
    y_max = math.ceil(y_max * 20) / 20 if y_max > 0 else 1.0  # a multiple of 5 %
    group = 2 * bar_width + 10
    left, top, label_space = 72, 10, 96
    width = left + k * group + 10
    height = top + plot_height + label_space
    parts = [
        f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'data-y-max="{y_max!r}" data-plot-height="{plot_height}" role="img" '
        'aria-label="reference and live proportions per bin">'
    ]
    for tick in range(5):
        share = y_max * tick / 4
        y = top + plot_height - share / y_max * plot_height
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{_fmt(y)}" y2="{_fmt(y)}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{_fmt(y + 4)}" text-anchor="end" class="tick">'
            f"{share * 100:.0f}%</text>"
        )
    base = top + plot_height
    for i, label in enumerate(labels):
        x = left + i * group + 5
        for j, (kind, shares, colour) in enumerate(
            (("reference", reference, REFERENCE_COLOUR), ("live", live, LIVE_COLOUR))
        ):
            share = float(shares[i])
            h = share / y_max * plot_height
            parts.append(
                f'<rect data-kind="{kind}" data-bin="{i}" data-proportion="{share!r}" '
                f'x="{x + j * bar_width}" y="{base - h!r}" width="{bar_width}" height="{h!r}" '
                f'fill="{colour}"><title>{kind} {escape(label)}: {share * 100:.2f}%</title></rect>'
            )
        shown = label if len(label) <= 16 else label[:15] + "…"
        cx = x + bar_width
        parts.append(
            f'<text class="bin-label" x="{cx}" y="{base + 12}" text-anchor="end" '
            f'transform="rotate(-45 {cx} {base + 12})">{escape(shown)}'
            f"<title>{escape(label)}</title></text>"
        )
    parts.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{base}" y2="{base}" stroke="#888"/></svg>'
    )
    return "".join(parts)


def history_chart(
    times: np.ndarray,
    values: np.ndarray,
    *,
    thresholds: Sequence[float] = (),
    firing: np.ndarray | None = None,
    width: int = 560,
    height: int = 110,
    label: str = "",
) -> str:
    """A line chart of one metric's history with its rules' thresholds and firing shaded."""
    left, right, top, bottom = 50, 8, 6, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    head = (
        f'<svg class="history" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label, quote=True)}">'
    )
    if times.size == 0:
        return head + f'<text x="{left}" y="{top + 20}">no history yet</text></svg>'
    lo, hi = _scale(values, thresholds)

    def y_of(v: float) -> float:
        v = hi if math.isinf(v) and v > 0 else v
        return top + plot_h - (v - lo) / (hi - lo) * plot_h

    t0, t1 = float(times[0]), float(times[-1])
    parts = [head, _firing_bands(times, firing, left, t0, t1, plot_w, top, plot_h)]
    for value in (lo, hi):
        y = _fmt(y_of(value))
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" stroke="#ddd"/>'
            f'<text class="tick" x="{left - 4}" y="{_fmt(float(y) + 4)}" text-anchor="end">'
            f"{value:.3g}</text>"
        )
    for threshold in thresholds:
        if math.isfinite(threshold):
            y = _fmt(y_of(threshold))
            parts.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" '
                f'stroke="{THRESHOLD_COLOUR}" stroke-dasharray="4,3"/>'
            )
    for points in _polyline_runs(times, values, left, t0, t1, plot_w, y_of):
        parts.append(
            f'<polyline fill="none" stroke="{LIVE_COLOUR}" stroke-width="1.5" points="{points}"/>'
        )
    for t, anchor, x in ((t0, "start", left), (t1, "end", left + plot_w)):
        clock = datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%S")
        parts.append(
            f'<text class="tick" x="{x}" y="{height - 4}" text-anchor="{anchor}">{clock}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
