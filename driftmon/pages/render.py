"""The HTML of the overview, monitor and report pages (see :mod:`driftmon.pages`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

import numpy as np

from driftmon.evaluation import Evaluation
from driftmon.history import MonitorHistory
from driftmon.pages.model import (
    SHOWN_METRICS,
    MonitorView,
    alert_views,
    firing_first,
    metric_unit,
    monitor_views,
    per_bin_contributions,
    state_of,
)
from driftmon.pages.svg import LIVE_COLOUR, REFERENCE_COLOUR, histogram, history_chart, sparkline

FILTER_STATES = ("firing", "pending", "inactive", "none")
"""Values of the overview's ``state`` filter (``none``: no rule matches the monitor)."""

MetricLink = Callable[[MonitorView], str]

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#24323f;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.4em 1.2em;
align-items:baseline}
header a{color:#cfe3ff}header h1{font-size:1.2em;margin:0}
main{padding:.8em 1em;max-width:1400px}
td.rules{white-space:normal;min-width:9em}
h2{font-size:1.1em;margin:1.2em 0 .4em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;background:#fff}
th,td{padding:.3em .55em;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .5em;border-radius:.8em;font-size:.85em;font-weight:600}
.firing{background:#c0392b;color:#fff}.pending{background:#f1c40f;color:#222}
.inactive{background:#dfe8df;color:#225522}.none{background:#eee;color:#666}
tr.state-firing td:first-child{border-left:4px solid #c0392b}
form.filters{display:flex;flex-wrap:wrap;gap:.5em;align-items:end;margin:.4em 0 .8em}
form.filters label{display:flex;flex-direction:column;font-size:.85em}
select,button{font:inherit;padding:.2em .4em}
.facts{display:flex;flex-wrap:wrap;gap:.3em 1.5em;margin:.3em 0}
.muted{color:#666}.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .8em;
vertical-align:-.1em}
svg text{font-size:10px;fill:#444}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:.6em}
.charts figure{margin:0;background:#fff;padding:.3em;border:1px solid #e4e4e4}
.charts svg{width:100%;height:auto}
figcaption{font-size:.85em}
section.monitor{border-top:2px solid #24323f;margin-top:2em}
.side{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}.side>div{max-width:100%}
.stream-inline{display:none}
@media (max-width:640px){.wide,.stream-col{display:none}.stream-inline{display:inline}
main{padding:.5em}th,td{padding:.25em .35em}}
"""


def _number(value: float) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "+∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    return f"{value:.4g}"


def format_time(seconds: float) -> str:
    """UTC time of epoch ``seconds`` (``—`` for NaN)."""
    if not math.isfinite(seconds):
        return "—"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float, now: float) -> str:
    if not math.isfinite(seconds):
        return ""
    delta = max(0.0, now - seconds)
    if delta < 120:
        return f"{delta:.0f} s ago"
    if delta < 7200:
        return f"{delta / 60:.0f} min ago"
    return f"{delta / 3600:.1f} h ago"


def monitor_path(stream: str, feature: str) -> str:
    """The daemon's path of a monitor's page (names percent-encoded)."""
    return f"/monitors/{quote(stream, safe='')}/{quote(feature, safe='')}"


# Links between pages are relative to the daemon's root, so the pages work behind a proxy
# that serves the daemon under a path prefix: the overview is at the root, a monitor's page
# two levels down.
_OVERVIEW_ROOT = "./"
_MONITOR_ROOT = "../../"


MIN_REFRESH_S = 5
"""Pages reload themselves every evaluation interval, but never more often than this: a
person cannot read faster, and a page must not vanish under a click."""


def _page(title: str, body: str, refresh_s: float | None, header: str) -> str:
    refresh = (
        f'<meta http-equiv="refresh" content="{max(MIN_REFRESH_S, math.ceil(refresh_s))}">'
        if refresh_s
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><header>{header}</header><main>{body}</main></body></html>"
    )


def _header(root: str | None, evaluation: Evaluation | None) -> str:
    """The bar on top; ``root`` is the relative path to the daemon's root (``None``: a
    report file, which links nowhere)."""
    home = "#monitors" if root is None else root
    parts = [f'<h1><a href="{home}" style="color:#fff;text-decoration:none">driftmon</a></h1>']
    if root is not None:
        parts += [
            f'<a href="{root}api/v1/monitors">JSON API</a>',
            f'<a href="{root}metrics">/metrics</a>',
            f'<a href="{root}-/healthy">health</a>',
            f'<a href="{root}-/ready">ready</a>',
        ]
    if evaluation is not None:
        parts.append(
            f'<span class="muted" style="color:#b8c4d0">evaluated '
            f'<time id="evaluated-at">{format_time(evaluation.time)}</time></span>'
        )
    return "".join(parts)


def _badge(state: str) -> str:
    text = "no rule" if state == "none" else state
    return f'<span class="badge {state}">{text}</span>'


def _overview_table(
    views: list[MonitorView],
    link: MetricLink,
    histories: Mapping[tuple[str, str], MonitorHistory],
    now: float,
) -> str:
    rows = []
    for view in views:
        metric = view.rule_metric
        history = histories.get((view.stream, view.feature))
        threshold = next((a.threshold for a in view.alerts if a.metric == metric), None)
        if history is not None and metric in history.values:
            spark = sparkline(
                history.times,
                history.values[metric],
                threshold=threshold,
                firing=history.firing,
                label=f"{metric} over the last {_span(history)}",
            )
        else:
            spark = ""
        firing = [a for a in view.alerts if a.state == "firing"]
        since = min((a.fired_at for a in firing), default=math.nan)
        rules = ", ".join(escape(a.rule) for a in view.alerts if a.state != "inactive")
        rows.append(
            f'<tr class="monitor-row state-{view.state}" '
            f'data-stream="{escape(view.stream, quote=True)}" '
            f'data-feature="{escape(view.feature, quote=True)}" data-state="{view.state}">'
            f"<td>{_badge(view.state)}</td>"
            f'<td class="stream-col">{escape(view.stream)}</td>'
            f'<td><a class="monitor-link" href="{escape(link(view), quote=True)}">'
            f'{escape(view.feature)}</a><span class="stream-inline muted"><br>'
            f"{escape(view.stream)}</span></td>"
            f'<td title="{escape(metric)}">{spark}<br><span class="muted">{escape(metric)}</span>'
            "</td>"
            f'<td class="num">{view.samples}</td>'
            f'<td class="num wide">{view.reference_samples}</td>'
            f'<td class="num">{_number(view.values["js"])}</td>'
            f'<td class="num">{_number(view.values["psi"])}</td>'
            f'<td class="num wide">{_number(view.values["hellinger"])}</td>'
            f'<td class="num wide">{_number(view.values["wasserstein"])}</td>'
            f'<td class="num">{_number(view.values["p_value"])}</td>'
            f'<td class="wide rules">{rules}<br><span class="muted">{_ago(since, now)}</span>'
            "</td></tr>"
        )
    head = (
        '<tr><th>state</th><th class="stream-col">stream</th><th>feature</th>'
        "<th>recent history</th>"
        '<th class="num">live samples</th><th class="num wide">reference</th>'
        '<th class="num">JS</th><th class="num">PSI</th><th class="num wide">Hellinger</th>'
        '<th class="num wide">Wasserstein</th><th class="num">p-value</th>'
        '<th class="wide">rules firing / pending</th></tr>'
    )
    return f'<div class="scroll"><table id="monitors">{head}{"".join(rows)}</table></div>'


def _span(history: MonitorHistory) -> str:
    if len(history) < 2:
        return "evaluation"
    seconds = float(history.times[-1] - history.times[0])
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


DEFAULT_LIMIT = 500
"""Most rows the overview shows unless ``?limit=`` says otherwise (firing ones come first)."""


@dataclass(frozen=True)
class Selection:
    """The monitors an overview shows: filtered, firing first, at most ``limit`` of them."""

    views: list[MonitorView]
    total: int  # monitors in the evaluation
    matching: int  # monitors the filters keep
    counts: dict[str, int]  # monitors by state, over all of them


def select_monitors(
    evaluation: Evaluation,
    *,
    stream: str | None = None,
    state: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Selection:
    """The monitors of ``evaluation`` of ``stream`` in ``state`` (``None``: any), firing
    first, then pending, inactive and unwatched, in config order within each; only the
    shown ones are turned into views, so a page over 10^4 monitors stays cheap."""
    alerts = alert_views(evaluation)
    states = [state_of(alerts.get(m.index, [])) for m in evaluation.monitors]
    counts = {s: states.count(s) for s in FILTER_STATES}
    kept = [
        m.index
        for m, monitor_state in zip(evaluation.monitors, states, strict=True)
        if (stream is None or m.stream == stream) and (state is None or monitor_state == state)
    ]
    kept.sort(key=lambda i: FILTER_STATES.index(states[i]))
    views = monitor_views(evaluation, kept[:limit], alerts)
    return Selection(views, len(states), len(kept), counts)


def overview_page(
    evaluation: Evaluation | None,
    selection: Selection | None,
    histories: Mapping[tuple[str, str], MonitorHistory],
    *,
    streams: list[str],
    stream: str | None = None,
    state: str | None = None,
    refresh_s: float | None = None,
) -> str:
    """``GET /``: the monitors of ``selection`` (see :func:`select_monitors`).

    ``histories`` holds each monitor's recent values of its rule's metric (see
    :attr:`MonitorView.rule_metric`); ``streams`` every configured stream;
    ``stream`` and ``state`` the filters, shown selected.
    """
    stream_options = "".join(
        f'<option value="{escape(s, quote=True)}"{" selected" if s == stream else ""}>'
        f"{escape(s)}</option>"
        for s in streams
    )
    state_options = "".join(
        f'<option value="{s}"{" selected" if s == state else ""}>'
        f'{"no rule" if s == "none" else s}</option>'
        for s in FILTER_STATES
    )
    form = (
        '<form class="filters" method="get" action="./">'
        f'<label>stream<select name="stream"><option value="">all</option>{stream_options}'
        f'</select></label><label>state<select name="state"><option value="">all</option>'
        f'{state_options}</select></label><button type="submit">filter</button></form>'
    )
    if evaluation is None or selection is None:
        body = form + "<p>No evaluation yet: references are loading.</p>"
        return _page("driftmon", body, refresh_s, _header(_OVERVIEW_ROOT, None))
    counts = selection.counts
    summary = (
        f'<p class="facts"><span>{selection.total} monitors</span>'
        f'<span>{_badge("firing")} {counts["firing"]}</span>'
        f'<span>{_badge("pending")} {counts["pending"]}</span>'
        f'<span>{_badge("inactive")} {counts["inactive"]}</span>'
        f'<span>{_badge("none")} {counts["none"]}</span></p>'
    )
    views = selection.views
    if views:
        cut = {
            key: shown
            for key, history in histories.items()
            if (shown := cut_history(history, evaluation.time)) is not None
        }
        table = _overview_table(
            views,
            lambda v: _OVERVIEW_ROOT + monitor_path(v.stream, v.feature)[1:],
            cut,
            evaluation.time,
        )
        if len(views) < selection.matching:
            table += (
                f'<p id="more">Showing the first {len(views)} of {selection.matching} '
                "monitors (firing first): filter by stream or state, or add "
                "<code>limit=N</code> to the address.</p>"
            )
    else:
        table = '<p id="no-match">No monitor matches this filter.</p>'
    body = summary + form + table
    return _page("driftmon: overview", body, refresh_s, _header(_OVERVIEW_ROOT, evaluation))


def _find(evaluation: Evaluation, stream: str, feature: str) -> MonitorView | None:
    for monitor in evaluation.monitors:
        if monitor.stream == stream and monitor.feature == feature:
            return monitor_views(evaluation, [monitor.index])[0]
    return None


def _monitor_body(
    view: MonitorView,
    history: MonitorHistory | None,
    *,
    log_base: str,
    now: float,
    api_links: bool,
) -> str:
    """One monitor: histograms beside its divergences, its rules (since when), the history
    of every divergence, then the per-bin table."""
    title = f"{escape(view.stream)} / {escape(view.feature)}"
    parts = [
        f'<h2 class="monitor-title">{title} {_badge(view.state)}</h2>',
        '<p class="facts">'
        f"<span>{escape(view.type)}</span>"
        f"<span>live window: <b>{view.samples}</b> rows</span>"
        f"<span>reference: <b>{view.reference_samples}</b> rows</span>"
        f"<span>smoothing {view.smoothing:g}</span>"
        f"<span>evaluated {format_time(now)}</span></p>",
    ]
    if api_links:
        base = f"{_MONITOR_ROOT}api/v1{monitor_path(view.stream, view.feature)}"
        parts.append(
            f'<p><a href="{escape(base, quote=True)}">JSON</a> · '
            f'<a href="{escape(base + "/history", quote=True)}">history JSON</a></p>'
        )
    parts += [
        '<div class="side">',
        _distributions(view),
        _divergences(view, log_base),
        "</div>",
        _rules(view, now),
        _history(view, history, log_base, now),
        _bins(view, log_base),
    ]
    return "".join(parts)


def _distributions(view: MonitorView) -> str:
    reference, live = view.proportions()
    return (
        "<div><h2>Reference and live distributions</h2>"
        f'<p class="legend"><span style="background:{REFERENCE_COLOUR}"></span>reference'
        f'<span style="background:{LIVE_COLOUR}"></span>live (proportion of rows per bin)</p>'
        f'<div class="scroll">{histogram(short_labels(view), reference, live)}</div></div>'
    )


def _divergences(view: MonitorView, log_base: str) -> str:
    rows = "".join(
        f'<tr data-metric="{name}"><td>{name}</td><td class="num">{_number(view.values[name])}'
        f"</td><td>{metric_unit(name, log_base)}</td></tr>"
        for name in SHOWN_METRICS
    )
    return (
        '<div><h2>Divergences</h2><div class="scroll"><table id="divergences">'
        f'<tr><th>metric</th><th class="num">value</th><th>unit</th></tr>{rows}</table></div>'
        "</div>"
    )


def _rules(view: MonitorView, now: float) -> str:
    if not view.alerts:
        return "<h2>Alert rules</h2><p>No alert rule matches this monitor.</p>"
    rule_rows = "".join(
        f'<tr data-rule="{escape(a.rule, quote=True)}" data-state="{a.state}">'
        f"<td>{escape(a.rule)}</td><td>{escape(a.severity)}</td><td>{a.metric} &gt; "
        f"{a.threshold:g}"
        + (f", p &lt; {a.max_p_value:g}" if a.max_p_value else "")
        + (f" ({a.p_value_correction})" if a.p_value_correction != "none" else "")
        + f'</td><td class="num">{_number(a.p_value) if a.max_p_value else "—"}</td>'
        + f"<td>{_badge(a.state)}</td><td>{format_time(a.since)}</td>"
        f"<td>{_ago(a.since, now)}</td></tr>"
        for a in view.alerts
    )
    return (
        '<h2>Alert rules</h2><div class="scroll"><table id="rules"><tr><th>rule</th>'
        '<th>severity</th><th>condition</th><th class="num">p judged</th><th>state</th>'
        "<th>since</th><th></th></tr>"
        f"{rule_rows}</table></div>"
    )


def _history(
    view: MonitorView, history: MonitorHistory | None, log_base: str, now: float
) -> str:
    if history is None or len(history) == 0:
        return "<h2>History</h2><p>No history yet.</p>"
    start, end = format_time(float(history.times[0])), format_time(float(history.times[-1]))
    parts = [
        "<h2>History</h2>",
        f'<p class="muted">{len(history)} evaluations from {start} to {end}; '
        "shaded: a rule was firing; dashed: a rule's threshold.</p>",
    ]
    streak = _firing_since(history)
    if streak is not None:
        parts.append(
            f'<p id="drift-since">Firing since {format_time(streak)} ({_ago(streak, now)}).</p>'
        )
    charts = []
    for name in SHOWN_METRICS:
        thresholds = [a.threshold for a in view.alerts if a.metric == name]
        charts.append(
            f'<figure data-metric="{name}"><figcaption>{name} '
            f'<span class="muted">({metric_unit(name, log_base)})</span></figcaption>'
            + history_chart(
                history.times,
                history.values[name],
                thresholds=thresholds,
                firing=history.firing,
                label=f"history of {name}",
            )
            + "</figure>"
        )
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    return "".join(parts)


def _bins(view: MonitorView, log_base: str) -> str:
    """Counts, proportions and each bin's term of the charted divergence."""
    reference, live = view.proportions()
    metric = view.rule_metric
    contribution = per_bin_contributions(view, metric, log_base)
    head = f"contribution to {escape(metric)}"
    if metric == "hellinger":
        head += " (to its square)"
    rows = []
    for i, (label, shown) in enumerate(zip(view.labels, short_labels(view), strict=True)):
        term = "—" if contribution is None else _number(float(contribution[i]))
        rows.append(
            f'<tr data-bin="{i}" data-label="{escape(label, quote=True)}">'
            f'<td title="{escape(label, quote=True)}">{escape(shown)}</td>'
            f'<td class="num">{view.reference_counts[i]:.0f}</td>'
            f'<td class="num">{reference[i] * 100:.2f}%</td>'
            f'<td class="num">{view.live_counts[i]:.0f}</td>'
            f'<td class="num">{live[i] * 100:.2f}%</td><td class="num">{term}</td></tr>'
        )
    return (
        '<h2>Bins</h2><div class="scroll"><table id="bins"><tr><th>bin</th>'
        '<th class="num">reference rows</th><th class="num">reference</th>'
        '<th class="num">live rows</th><th class="num">live</th>'
        f'<th class="num">{head}</th></tr>{"".join(rows)}</table></div>'
    )


def short_labels(view: MonitorView) -> list[str]:
    """Bin labels for people: numeric edges with the fewest significant digits (4 at least)
    that keep every edge distinct; categories and special bins as they are."""
    if view.edges is None:
        return list(view.labels)
    edges = view.edges.tolist()
    for digits in range(4, 18):
        texts = [f"{edge:.{digits}g}" for edge in edges]
        if len(set(texts)) == len(texts):
            break
    regular = [f"[{a}, {b})" for a, b in zip(texts[:-1], texts[1:], strict=True)]
    return ["underflow", *regular, "overflow", "missing", "invalid"]


def _firing_since(history: MonitorHistory) -> float | None:
    """Time of the first entry of the current run of entries with a rule firing."""
    firing = np.asarray(history.firing) > 0
    if firing.size == 0 or not firing[-1]:
        return None
    quiet = np.flatnonzero(~firing)
    start = int(quiet[-1]) + 1 if quiet.size else 0
    return float(history.times[start])


def cut_history(history: MonitorHistory | None, until: float) -> MonitorHistory | None:
    """``history`` without entries newer than ``until`` (the evaluation a page shows)."""
    if history is None:
        return None
    keep = history.times <= until
    if keep.all():
        return history
    return MonitorHistory(
        times=history.times[keep],
        values={name: series[keep] for name, series in history.values.items()},
        samples=history.samples[keep],
        firing=history.firing[keep],
    )


def monitor_page(
    evaluation: Evaluation | None,
    stream: str,
    feature: str,
    history: MonitorHistory | None,
    *,
    log_base: str,
    refresh_s: float | None = None,
) -> str | None:
    """``GET /monitors/{stream}/{feature}``, or ``None`` when the evaluation has no such monitor."""
    if evaluation is None:
        return None
    view = _find(evaluation, stream, feature)
    if view is None:
        return None
    body = f'<p><a href="{_MONITOR_ROOT}">← all monitors</a></p>' + _monitor_body(
        view, cut_history(history, evaluation.time), log_base=log_base, now=evaluation.time,
        api_links=True,
    )
    return _page(
        f"driftmon: {stream} / {feature}", body, refresh_s, _header(_MONITOR_ROOT, evaluation)
    )


def report_page(
    evaluation: Evaluation,
    histories: Mapping[tuple[str, str], MonitorHistory],
    *,
    log_base: str,
    title: str,
    stream: str | None = None,
) -> str:
    """One self-contained file: the overview of ``evaluation`` and every monitor's page
    (of ``stream`` only, when given), linked by anchors (``driftmon replay --html``)."""
    views = firing_first(monitor_views(evaluation))
    if stream is not None:
        views = [v for v in views if v.stream == stream]
    table = _overview_table(views, lambda v: f"#monitor-{v.index}", histories, evaluation.time)
    sections = "".join(
        f'<section class="monitor" id="monitor-{view.index}">'
        + _monitor_body(view, histories.get((view.stream, view.feature)), log_base=log_base,
                        now=evaluation.time, api_links=False)
        + '<p><a href="#monitors">↑ all monitors</a></p></section>'
        for view in views
    )
    header = f"<h1>driftmon replay</h1><span>{escape(title)}</span>"
    body = (
        f'<p class="facts"><span>{len(views)} monitors</span>'
        f"<span>last evaluation {format_time(evaluation.time)} (event time)</span></p>"
        + table + sections
    )
    return _page(f"driftmon replay: {title}", body, None, header)


