"""The Grafana dashboard of a config: ``driftmon dashboard -c FILE`` (docs/metrics.md, docs/cli.md).

:func:`build_dashboard` turns a :class:`~driftmon.config.Config` into a Grafana
dashboard (schema version 41, Grafana 11.6) with Grafana's own generated
models, ``grafana-foundation-sdk``; :func:`dashboard_json` is the text the
command prints. Nothing here reads YAML or talks to a daemon: the dashboard
depends only on the config and on the public metric names of docs/metrics.md.

What the dashboard holds:

- a ``datasource`` variable (any Prometheus data source) and ``stream`` /
  ``feature`` variables from ``label_values(driftmon_window_samples, ...)``,
  multi-select with All; every monitor panel filters on both;
- a row per metric family: firing alerts (stat, state timeline, table, and
  the config's rules), JS, KL both ways, PSI, Hellinger, Wasserstein (only
  when the config has numeric features), p-value and entropy, sample
  counts, ingest, and the daemon's own health;
- each alert rule's ``threshold`` drawn as a dashed line on its metric's
  panel, ``max_p_value`` on the p-value panel and ``min_samples`` on the
  window-samples panel. Grafana thresholds belong to a panel, not to a
  series, so a panel draws the thresholds of every rule on its metric
  whatever the rule's ``match`` is; the panel description says which rule
  each line comes from. Lines at the same value merge, coloured by the most
  severe of their rules (``critical`` red, ``warning`` orange, other
  severities yellow);
- an annotation that marks when ``driftmon_alert_firing`` is 1;
- on every panel a link to the daemon's pages (``server.external_url``, else
  the listen address), and on every panel of per-monitor series a data link
  from each series to that monitor's page.

The output is deterministic (sorted keys, no timestamps, no paths), so a
dashboard generated into a repository can be checked to be up to date. The
uid defaults to ``driftmon-`` plus the config file's stem, so regenerating
for the same file replaces the provisioned dashboard instead of adding one.

About 1000 lines in one module: a row builder a screen long per metric family,
all placing panels on one shared grid (:class:`_Board`) with the same query,
threshold and legend helpers; the rows are read top to bottom like the
dashboard they draw.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import statetimeline as statetimeline_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import text as text_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import text as text_models

from driftmon.config import AlertRule, Config
from driftmon.config.errors import format_number
from driftmon.names import ALERT_SERIES, MONITOR_METRIC
from driftmon.tools.rules import prometheus_duration

DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel, query and variable reads the data source the ``datasource`` variable picks."""

MONITOR_SELECTOR = '{stream=~"$stream", feature=~"$feature"}'
"""Label matchers of every per-monitor series: the two template variables."""

STREAM_QUERY = "label_values(driftmon_window_samples, stream)"
FEATURE_QUERY = 'label_values(driftmon_window_samples{stream=~"$stream"}, feature)'

DIVERGENCE_METRICS: dict[str, str] = dict(ALERT_SERIES)
"""Alert metric (``alerts[].metric``) -> the gauge that exports it (docs/metrics.md)."""

RATE = "$__rate_interval"
MONITOR_LEGEND = "{{stream}}/{{feature}}"
GRID_WIDTH = 24

# Grafana's standard refresh choices; the dashboard takes the first one at least as long as
# an evaluation period (and never under 10 s, to spare Prometheus on short demo periods).
_REFRESH_CHOICES_S: tuple[tuple[float, str], ...] = (
    (10, "10s"),
    (30, "30s"),
    (60, "1m"),
    (300, "5m"),
    (900, "15m"),
    (1800, "30m"),
    (3600, "1h"),
)
_SEVERITY_COLOURS: tuple[tuple[frozenset[str], str, int], ...] = (
    (frozenset({"critical", "page", "error", "high"}), "red", 2),
    (frozenset({"warning", "warn", "medium"}), "orange", 1),
)
_OTHER_SEVERITY_COLOUR = ("yellow", 0)
_UID_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_UID_LENGTH = 40  # Grafana rejects longer uids


# --- public API -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdLine:
    """One dashed line on a panel: its ``value``, ``colour`` and the rules that put it there."""

    value: float
    colour: str
    rules: tuple[str, ...]


def default_uid(config: Config) -> str:
    """``driftmon-<config file stem>``, restricted to what Grafana accepts in a uid.

    Characters outside ``[A-Za-z0-9_-]`` become ``-`` and the result is cut
    to 40 characters; a config without a file (built in memory) gets
    ``driftmon``.
    """
    if config.source is None:
        return "driftmon"
    stem = _UID_CHARACTERS.sub("-", config.source.stem).strip("-")
    uid = f"driftmon-{stem}" if stem else "driftmon"
    return uid[:_MAX_UID_LENGTH]


def threshold_lines(
    rules: Iterable[AlertRule],
    value_of: Literal["threshold", "max_p_value", "min_samples"] = "threshold",
) -> list[ThresholdLine]:
    """The lines that ``rules`` draw, one per distinct value, in increasing order.

    ``value_of`` names the rule attribute drawn: ``threshold`` (the default),
    ``max_p_value`` or ``min_samples``; rules where it is ``None`` (or 0 for
    ``min_samples``, which means no minimum) draw nothing. Each line takes the
    colour of its most severe rule.
    """
    by_value: dict[float, list[AlertRule]] = {}
    for rule in rules:
        raw = getattr(rule, value_of)
        if raw is None or (value_of == "min_samples" and raw == 0):
            continue
        by_value.setdefault(float(raw), []).append(rule)
    lines = []
    for value in sorted(by_value):
        colour, _rank = max(
            (_severity_colour(rule.severity) for rule in by_value[value]),
            key=lambda pair: pair[1],
        )
        names = tuple(sorted(rule.name for rule in by_value[value]))
        lines.append(ThresholdLine(value, colour, names))
    return lines


def build_dashboard(
    config: Config, *, uid: str | None = None, title: str | None = None
) -> dashboard_models.Dashboard:
    """The Grafana dashboard model of ``config`` (see the module docstring for its contents).

    ``uid`` defaults to :func:`default_uid`; ``title`` to ``driftmon`` plus
    the config file's stem. A ``uid`` Grafana would refuse (empty, over 40
    characters, or outside ``[A-Za-z0-9_-]``) raises ``ValueError``.
    """
    uid = default_uid(config) if uid is None else uid
    if not uid or len(uid) > _MAX_UID_LENGTH or _UID_CHARACTERS.search(uid):
        raise ValueError(
            f"uid: Grafana takes 1 to {_MAX_UID_LENGTH} characters of [A-Za-z0-9_-], got {uid!r}"
        )
    if title is None:
        title = "driftmon" if config.source is None else f"driftmon: {config.source.stem}"
    board = _Board(
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(
            "Data drift of every monitor against its reference (driftmon). Generated by "
            "`driftmon dashboard` from the daemon's config: regenerate it when the config "
            "changes (its alert thresholds are drawn on the panels)."
        )
        .tags(["driftmon", "drift", "ml"])
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh(_refresh(config.engine.evaluate_every_s)),
        config.server.base_url(),
    )
    _variables(board.builder)
    _annotations(board.builder, config)
    _alert_row(board, config)
    _divergence_rows(board, config)
    _significance_row(board, config)
    _samples_row(board, config)
    _ingest_row(board)
    _daemon_row(board, config)
    return board.builder.build()


def dashboard_json(config: Config, *, uid: str | None = None, title: str | None = None) -> str:
    """:func:`build_dashboard` as the JSON text Grafana imports: sorted keys, 2-space indent.

    The text ends with a newline and is the same byte for byte for the same
    config (wherever its file is), so a generated file can be diffed.
    """
    model = build_dashboard(config, uid=uid, title=title)
    # Through the SDK's encoder to plain JSON types, then once more with the stdlib so the
    # layout (separators, key order, non-ASCII kept) is ours and stable across SDK builds.
    plain = json.loads(JSONEncoder().encode(model))
    return json.dumps(plain, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Every PromQL expression of a dashboard's JSON as ``(where, expr)`` pairs.

    ``where`` is a panel title, ``annotation <name>`` or ``variable <name>``;
    a variable's ``label_values(SELECTOR, LABEL)`` yields its selector. Rows
    are walked into, so collapsed rows count too.
    """
    found: list[tuple[str, str]] = []

    def walk(panels: Sequence[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets") or ():
                if "expr" in target:
                    found.append((str(panel.get("title", "")), str(target["expr"])))
            walk(panel.get("panels") or ())

    walk(dashboard.get("panels") or ())
    for annotation in (dashboard.get("annotations") or {}).get("list") or ():
        if annotation.get("expr"):
            found.append((f"annotation {annotation.get('name', '')}", str(annotation["expr"])))
    for variable in (dashboard.get("templating") or {}).get("list") or ():
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            match = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\)\s*", query)
            found.append((f"variable {variable.get('name', '')}", match[1] if match else query))
    return found


# --- layout -----------------------------------------------------------------------------------


_PanelBuilder = (
    timeseries_builders.Panel
    | stat_builders.Panel
    | statetimeline_builders.Panel
    | table_builders.Panel
    | text_builders.Panel
)


class _Board:
    """The dashboard builder plus the next free panel id (Grafana wants them unique)."""

    def __init__(self, builder: dashboard_builders.Dashboard, base_url: str) -> None:
        self.builder = builder
        self._next_id = 1
        self.base_url = base_url

    def row(self, title: str) -> None:
        self.builder.with_row(dashboard_builders.Row(title).id(self._take_id()))

    def panel(self, panel: _PanelBuilder, width: int, height: int) -> None:
        """Add ``panel``, ``width`` of the grid's 24 columns wide and ``height`` rows high,
        linked to the daemon's pages (and each per-monitor series to its monitor's page)."""
        panel.links([_link("driftmon: all monitors", f"{self.base_url}/")])
        targets = getattr(getattr(panel, "_internal", None), "targets", None) or ()
        if hasattr(panel, "data_links") and any(
            "$feature" in str(getattr(target, "expr", "")) for target in targets
        ):
            panel.data_links([_link("driftmon: ${__field.labels.stream}/${__field.labels.feature}",
                                    monitor_link(self.base_url))])
        self.builder.with_panel(
            panel.id(self._take_id()).datasource(DATASOURCE).span(width).height(height)
        )

    def _take_id(self) -> int:
        taken = self._next_id
        self._next_id += 1
        return taken


def monitor_link(base_url: str) -> str:
    """The data link from a series with ``stream`` and ``feature`` labels to its monitor's page."""
    return (
        f"{base_url}/monitors?stream=${{__field.labels.stream:percentencode}}"
        "&feature=${__field.labels.feature:percentencode}"
    )


def _link(title: str, url: str) -> dashboard_builders.DashboardLink:
    return (
        dashboard_builders.DashboardLink(title)
        .type(dashboard_models.DashboardLinkType.LINK)
        .url(url)
        .target_blank(True)
    )


def _refresh(evaluate_every_s: float) -> str:
    for seconds, text in _REFRESH_CHOICES_S:
        if evaluate_every_s <= seconds:
            return text
    return _REFRESH_CHOICES_S[-1][1]


def _severity_colour(severity: str) -> tuple[str, int]:
    for names, colour, rank in _SEVERITY_COLOURS:
        if severity.lower() in names:
            return colour, rank
    return _OTHER_SEVERITY_COLOUR


def _query(expr: str, legend: str = "", ref_id: str = "A") -> prometheus_builders.Dataquery:
    query = prometheus_builders.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    return query.legend_format(legend) if legend else query


def _thresholds(lines: Sequence[ThresholdLine]) -> dashboard_builders.ThresholdsConfig:
    """Grafana's steps: a base step (value null) in green, then one step per line.

    Integral values are written as JSON integers (``100``, not ``100.0``), as the config has them.
    """
    steps = [dashboard_models.Threshold(value=None, color="green")]
    steps += [
        dashboard_models.Threshold(
            value=int(line.value) if float(line.value).is_integer() else line.value,
            color=line.colour,
        )
        for line in lines
    ]
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps(steps)
    )


def _legend_table() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.TABLE)
        .placement(common_models.LegendPlacement.RIGHT)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
        .sort_by("Last *")
        .sort_desc(True)
    )


def _legend_list() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(common_models.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _tooltip() -> common_builders.VizTooltipOptions:
    return (
        common_builders.VizTooltipOptions()
        .mode(common_models.TooltipDisplayMode.MULTI)
        .sort(common_models.SortOrder.DESCENDING)
    )


def _timeseries(
    title: str,
    description: str,
    targets: Sequence[prometheus_builders.Dataquery],
    *,
    unit: str = "none",
    lines: Sequence[ThresholdLine] = (),
    table_legend: bool = True,
) -> timeseries_builders.Panel:
    """A line chart; ``lines`` are drawn dashed, and the series keep palette colours."""
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .line_width(1)
        .fill_opacity(0)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(False)
        .color_scheme(
            dashboard_builders.FieldColor().mode(dashboard_models.FieldColorModeId.PALETTE_CLASSIC)
        )
        .thresholds(_thresholds(lines))
        .thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common_models.GraphThresholdsStyleMode.DASHED
                if lines
                else common_models.GraphThresholdsStyleMode.OFF
            )
        )
        .legend(_legend_table() if table_legend else _legend_list())
        .tooltip(_tooltip())
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def _stat(
    title: str,
    description: str,
    target: prometheus_builders.Dataquery,
    *,
    unit: str,
    lines: Sequence[ThresholdLine] = (),
    mappings: Sequence[dashboard_models.ValueMapping] = (),
) -> stat_builders.Panel:
    panel = (
        stat_builders.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .with_target(target)
        .thresholds(_thresholds(lines))
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return panel.mappings(list(mappings)) if mappings else panel


def _lines_text(lines: Sequence[ThresholdLine], what: str) -> str:
    if not lines:
        return f"No alert rule in the config sets a {what} here."
    parts = [f"{format_number(line.value)} ({', '.join(line.rules)})" for line in lines]
    return f"Dashed lines: the {what} of the config's alert rules: " + "; ".join(parts) + "."


def _rules_on(config: Config, metric: str) -> list[AlertRule]:
    return [rule for rule in config.alerts if rule.metric == metric]


# --- template variables and annotations ------------------------------------------------------


def _variables(builder: dashboard_builders.Dashboard) -> None:
    all_option = dashboard_models.VariableOption(selected=True, text="All", value="$__all")
    builder.with_variable(
        dashboard_builders.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes the driftmon daemons.")
    )
    for name, query, label, description in (
        ("stream", STREAM_QUERY, "Stream", "Streams with at least one monitor."),
        ("feature", FEATURE_QUERY, "Feature", "Features of the selected streams."),
    ):
        builder.with_variable(
            dashboard_builders.QueryVariable(name)
            .label(label)
            .description(description)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .current(all_option)
        )


def _leader_series(config: Config, series: str) -> str:
    """``series`` as one line per monitor across leader changes (``cluster.mode: shared``).

    In shared mode the leader exports the per-monitor series and the leader
    can change, so the ``instance`` (and ``pod``) label changes; dropping them
    keeps each monitor's line, and each alert, one series.
    """
    if config.cluster.shared:
        return f"max without (instance, pod) ({series})"
    return series


def _annotations(builder: dashboard_builders.Dashboard, config: Config) -> None:
    # Grafana adds its built-in annotation to every dashboard it saves; writing it out keeps
    # an import and a save of this file identical.
    builder.annotation(
        dashboard_builders.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(dashboard_models.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )
    builder.annotation(
        dashboard_builders.AnnotationQuery()
        .name("driftmon alerts firing")
        .datasource(DATASOURCE)
        .enable(True)
        .hide(False)
        .icon_color("red")
        .expr(_leader_series(config, f"driftmon_alert_firing{MONITOR_SELECTOR}") + " == 1")
    )


# --- rows -------------------------------------------------------------------------------------


def _alert_row(board: _Board, config: Config) -> None:
    board.row("Alerts")
    firing = _leader_series(config, f"driftmon_alert_firing{MONITOR_SELECTOR}")
    board.panel(
        _stat(
            "Firing now",
            "Alert rule and monitor pairs that fire (driftmon_alert_firing = 1).",
            _query(f"sum({firing})"),
            unit="none",
            lines=[ThresholdLine(1, "red", ())],
        ),
        4,
        8,
    )
    ok_firing = dashboard_models.ValueMap(
        {
            "0": dashboard_models.ValueMappingResult(text="ok", color="green", index=0),
            "1": dashboard_models.ValueMappingResult(text="firing", color="red", index=1),
        }
    )
    timeline = (
        statetimeline_builders.Panel()
        .title("Alert states")
        .description(
            "driftmon_alert_firing of each rule and monitor over time: 1 firing, 0 inactive "
            "or pending (the daemon applies `for`, `clear_below` and `keep_firing_for`)."
        )
        .with_target(_query(firing, "{{rule}} {{stream}}/{{feature}}"))
        .mappings([ok_firing])
        .show_value(common_models.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .line_width(0)
        .fill_opacity(70)
        .legend(_legend_list())
    )
    board.panel(timeline, GRID_WIDTH - 4, 8)
    firing_table = (
        table_builders.Panel()
        .title("Firing alerts")
        .description("Every rule and monitor whose alert fires at the end of the time range.")
        .with_target(
            _query(f"{firing} == 1").instant().format(prometheus_models.PromQueryFormat.TABLE)
        )
        .with_transformation(
            dashboard_models.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True, "__name__": True},
                    "indexByName": {"rule": 0, "severity": 1, "stream": 2, "feature": 3},
                },
            )
        )
        .no_value("Nothing fires")
        .align(common_models.FieldTextAlignment.AUTO)
        .inspect(False)
    )
    board.panel(firing_table, 12, 8)
    board.panel(
        text_builders.Panel()
        .title("Alert rules")
        .description("The alerts: section of the config this dashboard was generated from.")
        .mode(text_models.TextMode.MARKDOWN)
        .content(_rules_markdown(config)),
        12,
        8,
    )


def _rules_markdown(config: Config) -> str:
    if not config.alerts:
        return "The config has no alert rules: driftmon_alert_firing has no series."
    header = (
        "| rule | fires when | for | clears at or below | min samples | keep firing for "
        "| severity | stream | feature |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for rule in config.alerts:
        condition = f"{rule.metric} > {format_number(rule.threshold)}"
        if rule.max_p_value is not None:
            corrected = "" if rule.p_value_correction == "none" else f" ({rule.p_value_correction})"
            condition += f" and p_value{corrected} < {format_number(rule.max_p_value)}"
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{rule.name}`",
                    condition,
                    prometheus_duration(rule.for_s),
                    format_number(rule.clear_threshold),
                    str(rule.min_samples),
                    prometheus_duration(rule.keep_firing_for_s),
                    rule.severity,
                    f"`{rule.stream_pattern}`",
                    f"`{rule.feature_pattern}`",
                ]
            )
            + " |"
        )
    return header + "\n".join(rows) + "\n"


_DIVERGENCE_TEXT: dict[str, tuple[str, str]] = {
    "js": (
        "Jensen-Shannon divergence",
        "JS(reference, live), the divergence itself (not its square root), at most log 2.",
    ),
    "kl": ("KL divergence KL(reference || live)", "How surprising the live window is."),
    "kl_reverse": (
        "Reverse KL divergence KL(live || reference)",
        "Large when live data falls where the reference has little mass.",
    ),
    "psi": (
        "Population stability index",
        "KL both ways, natural log (PSI 0.1 / 0.25 rules of "
        "thumb assume large windows: compare with the p-value).",
    ),
    "hellinger": ("Hellinger distance", "Between 0 (same distribution) and 1."),
    "wasserstein": (
        "Wasserstein distance",
        "W1 of numeric monitors, in reference standard deviations (0.1: a tenth of one).",
    ),
}


def _divergence_panel(config: Config, metric: str) -> timeseries_builders.Panel:
    title, meaning = _DIVERGENCE_TEXT[metric]
    lines = threshold_lines(_rules_on(config, metric))
    unit_text = ""
    if MONITOR_METRIC[metric].in_log_units:
        unit_text = " In bits." if config.engine.log_base == "2" else " In nats."
    description = f"{meaning}{unit_text} {_lines_text(lines, 'threshold')}"
    panel = _timeseries(
        title,
        description,
        [
            _query(
                _leader_series(config, f"{DIVERGENCE_METRICS[metric]}{MONITOR_SELECTOR}"),
                MONITOR_LEGEND,
            )
        ],
        lines=lines,
    ).min(0)
    ceiling = MONITOR_METRIC[metric].ceiling
    if not MONITOR_METRIC[metric].in_log_units and math.isfinite(ceiling):
        panel = panel.max(int(ceiling) if ceiling.is_integer() else ceiling)  # JSON 1, not 1.0
    return panel


def _divergence_rows(board: _Board, config: Config) -> None:
    board.row("Jensen-Shannon divergence")
    board.panel(_divergence_panel(config, "js"), GRID_WIDTH, 9)
    board.row("KL divergence")
    board.panel(_divergence_panel(config, "kl"), 12, 9)
    board.panel(_divergence_panel(config, "kl_reverse"), 12, 9)
    board.row("Population stability index")
    board.panel(_divergence_panel(config, "psi"), GRID_WIDTH, 9)
    board.row("Hellinger distance")
    board.panel(_divergence_panel(config, "hellinger"), GRID_WIDTH, 9)
    numeric = any(f.type == "numeric" for stream in config.streams for f in stream.features)
    if numeric:
        board.row("Wasserstein distance")
        board.panel(_divergence_panel(config, "wasserstein"), GRID_WIDTH, 9)


def _significance_row(board: _Board, config: Config) -> None:
    board.row("Significance and entropy")
    lines = threshold_lines(config.alerts, "max_p_value")
    p_value = _timeseries(
        "Drift p-value",
        "G-test p-value of reference and live counts coming from one distribution: small "
        "means the divergence is more than the noise of a window this size. Log scale. "
        + _lines_text(lines, "max_p_value"),
        [
            _query(
                _leader_series(config, f"driftmon_drift_p_value{MONITOR_SELECTOR}"),
                MONITOR_LEGEND,
            )
        ],
        lines=lines,
    ).scale_distribution(
        common_builders.ScaleDistributionConfig().type(common_models.ScaleDistribution.LOG).log(10)
    )
    board.panel(p_value, 12, 9)
    base = "bits" if config.engine.log_base == "2" else "nats"
    board.panel(
        _timeseries(
            "Entropy",
            f"Entropy of the smoothed reference and live distributions, in {base}.",
            [
                _query(
                    _leader_series(config, f"driftmon_entropy{MONITOR_SELECTOR}"),
                    MONITOR_LEGEND + " {{window}}",
                )
            ],
        ).min(0),
        12,
        9,
    )
    # One line per model: its smallest Holm-adjusted p-value, and how many of its
    # features each rule fires for (what a single per-stream alert would watch).
    stream_selector = '{stream=~"$stream"}'
    board.panel(
        _timeseries(
            "Stream drift p-value",
            "Smallest Holm-adjusted p-value of each stream's features, min(1, m * min p): "
            "below alpha when some feature drifts with family-wise error alpha. Log scale.",
            [_query(f"driftmon_stream_drift_p_value{stream_selector}", "{{stream}}")],
        ).scale_distribution(
            common_builders.ScaleDistributionConfig()
            .type(common_models.ScaleDistribution.LOG)
            .log(10)
        ),
        12,
        9,
    )
    board.panel(
        _timeseries(
            "Drifting features per stream",
            "How many of each stream's features every alert rule fires for.",
            [
                _query(
                    f"driftmon_stream_drifting_features{stream_selector}", "{{stream}} {{rule}}"
                )
            ],
        ).min(0),
        12,
        9,
    )


def _samples_row(board: _Board, config: Config) -> None:
    board.row("Samples")
    lines = threshold_lines(config.alerts, "min_samples")
    warmup_streams = [s for s in config.streams if s.reference.kind == "warmup"]
    width = 8 if warmup_streams else 12
    board.panel(
        _timeseries(
            "Window samples",
            "Rows in each monitor's live window. Below a rule's min_samples the rule gives "
            "no verdict (and keeps its state). " + _lines_text(lines, "min_samples"),
            [
                _query(
                    _leader_series(config, f"driftmon_window_samples{MONITOR_SELECTOR}"),
                    MONITOR_LEGEND,
                )
            ],
            lines=lines,
        ).min(0),
        width,
        8,
    )
    board.panel(
        _timeseries(
            "Reference samples",
            "Rows in each monitor's reference.",
            [
                _query(
                    _leader_series(config, f"driftmon_reference_samples{MONITOR_SELECTOR}"),
                    MONITOR_LEGEND,
                )
            ],
        ).min(0),
        width,
        8,
    )
    if warmup_streams:
        needed = ", ".join(f"{s.name}: {s.reference.warmup_rows}" for s in warmup_streams)
        board.panel(
            _timeseries(
                "Warmup rows collected",
                "Rows collected so far by streams whose warmup reference is not frozen yet "
                f"(rows needed: {needed}); the series ends when the reference freezes.",
                [_query('driftmon_warmup_rows{stream=~"$stream"}', "{{stream}}")],
                table_legend=False,
            ).min(0),
            width,
            8,
        )


def _ingest_row(board: _Board) -> None:
    board.row("Ingest")
    values = f"driftmon_ingest_values_total{MONITOR_SELECTOR}"
    board.panel(
        _timeseries(
            "Rows accepted",
            "Rows accepted per second, by stream.",
            [
                _query(
                    f'sum by (stream) (rate(driftmon_ingest_rows_total{{stream=~"$stream"}}'
                    f"[{RATE}]))",
                    "{{stream}}",
                )
            ],
            unit="rowsps",
            table_legend=False,
        ).min(0),
        8,
        8,
    )
    board.panel(
        _timeseries(
            "Values by kind",
            "Values binned per second by kind: ok, missing (absent, null, NaN), invalid "
            "(wrong type), other (a category outside the list), underflow and overflow "
            "(outside the numeric bins).",
            [_query(f"sum by (kind) (rate({values}[{RATE}]))", "{{kind}}")],
            unit="short",
            table_legend=False,
        ).min(0),
        8,
        8,
    )
    board.panel(
        _timeseries(
            "Missing, invalid and other share",
            "Share of each monitor's values that were missing, invalid or an unlisted "
            "category: data-quality drift, which the divergences also count.",
            [
                _query(
                    f"sum by (stream, feature, kind) (rate(driftmon_ingest_values_total{{stream=~"
                    f'"$stream", feature=~"$feature", kind=~"missing|invalid|other"}}[{RATE}])) '
                    f"/ ignoring (kind) group_left () "
                    f"sum by (stream, feature) (rate({values}[{RATE}]))",
                    MONITOR_LEGEND + " {{kind}}",
                )
            ],
            unit="percentunit",
        ).min(0),
        8,
        8,
    )
    board.panel(
        _timeseries(
            "Ingest requests by status",
            "Ingest requests answered per second, by HTTP status (413: body too large, "
            "401: bad token, 503: queue full).",
            [_query(f"sum by (code) (rate(driftmon_ingest_requests_total[{RATE}]))", "{{code}}")],
            unit="reqps",
            table_legend=False,
        ).min(0),
        8,
        8,
    )
    board.panel(
        _timeseries(
            "Ingest queue fill",
            "Rows accepted but not yet binned, as a share of ingest.queue_rows; at 100% "
            "ingest answers 503.",
            [
                _query(
                    "driftmon_ingest_queue_rows / driftmon_ingest_queue_capacity_rows",
                    "{{instance}}",
                )
            ],
            unit="percentunit",
            lines=[ThresholdLine(0.8, "orange", ())],
            table_legend=False,
        )
        .min(0)
        .max(1),
        8,
        8,
    )
    board.panel(
        _timeseries(
            "Unknown fields",
            "Values per second under fields no feature monitors (ignored), by stream.",
            [
                _query(
                    f"sum by (stream) (rate(driftmon_ingest_unknown_fields_total{{stream=~"
                    f'"$stream"}}[{RATE}]))',
                    "{{stream}}",
                )
            ],
            unit="short",
            table_legend=False,
        ).min(0),
        8,
        8,
    )


def _daemon_row(board: _Board, config: Config) -> None:
    board.row("Daemon")
    durations = f"rate(driftmon_evaluation_duration_seconds_bucket[{RATE}])"
    board.panel(
        _timeseries(
            "Evaluation duration",
            "Quantiles of the duration of evaluation passes (every monitor at once).",
            [
                _query(
                    f"histogram_quantile({q}, sum by (instance, le) ({durations}))",
                    f"p{round(q * 100)} {{{{instance}}}}",
                    ref_id=ref_id,
                )
                for q, ref_id in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
            ],
            unit="s",
            table_legend=False,
        ).min(0),
        8,
        8,
    )
    every_s = config.engine.evaluate_every_s
    board.panel(
        _stat(
            "Last evaluation age",
            f"Seconds since the last evaluation ended; evaluations run every "
            f"{prometheus_duration(every_s)}: orange after 2 periods, red after 5.",
            _query("time() - driftmon_last_evaluation_timestamp_seconds", "{{instance}}"),
            unit="s",
            lines=[
                ThresholdLine(2 * every_s, "orange", ()),
                ThresholdLine(5 * every_s, "red", ()),
            ],
        ),
        8 if config.state.dir is not None else 12,
        8,
    )
    if config.state.dir is not None:
        checkpoint_s = config.state.checkpoint_every_s
        board.panel(
            _stat(
                "Last checkpoint age",
                f"Seconds since the last good checkpoint; checkpoints are written every "
                f"{prometheus_duration(checkpoint_s)}: orange after 2 periods, red after 5.",
                _query(
                    "time() - driftmon_checkpoint_last_success_timestamp_seconds", "{{instance}}"
                ),
                unit="s",
                lines=[
                    ThresholdLine(2 * checkpoint_s, "orange", ()),
                    ThresholdLine(5 * checkpoint_s, "red", ()),
                ],
            ),
            4,
            8,
        )
    reload_mapping = dashboard_models.ValueMap(
        {
            "0": dashboard_models.ValueMappingResult(text="failed", color="red", index=0),
            "1": dashboard_models.ValueMappingResult(text="ok", color="green", index=1),
        }
    )
    board.panel(
        _stat(
            "Config reload",
            "Whether the last configuration load succeeded (a failed reload keeps the old "
            "config running).",
            _query("driftmon_config_last_reload_successful", "{{instance}}"),
            unit="none",
            mappings=[reload_mapping],
        ),
        4,
        8,
    )
