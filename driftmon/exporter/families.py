"""The metric families of one :class:`Status`, and the collector and registry over them.

:class:`DriftCollector` builds fresh families on every scrape from a
:class:`Status`, an immutable picture of the daemon that its ``status``
callable returns: the latest :class:`~driftmon.evaluation.Evaluation` plus the
ingest counters. Nothing here keeps state between scrapes, so a monitor that
a reload removes simply stops appearing, and a divergence that is absent
(NaN: no reference or an empty window) has no series at all. The per-monitor
families are columns (:class:`SeriesColumns`) that :mod:`driftmon.exporter.scrape`
writes as text without a Python object per series.

The registry is a parameter: the daemon passes its own
``CollectorRegistry()``, never the global one, and so do the tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from driftmon import __version__
from driftmon.alerting import AlertState
from driftmon.cluster.status import ClusterStatus
from driftmon.config.errors import exact_number
from driftmon.evaluation import Evaluation, Monitor
from driftmon.kinds import CATEGORICAL_KINDS, NUMERIC_KINDS, ValueKindTotals
from driftmon.kinds import VALUE_KINDS as VALUE_KINDS
from driftmon.names import (
    ALERT_P_VALUE_SERIES,
    MONITOR_METRICS,
    STREAM_DRIFTING_SERIES,
    STREAM_P_VALUE_SERIES,
)

DIVERGENCE_FAMILIES: tuple[tuple[str, str, str], ...] = tuple(
    (metric.name, metric.series, metric.help) for metric in MONITOR_METRICS
)
"""(value name, metric name, help) of every per-monitor divergence family."""


EVALUATION_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def escape_label(value: str) -> str:
    """A label value as the text format quotes it (what ``prometheus_client`` does)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@dataclass
class DurationHistogram:
    """Cumulative histogram of evaluation durations (seconds), filled by the daemon."""

    bounds: tuple[float, ...] = EVALUATION_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(EVALUATION_BUCKETS_S) + 1))
    total_s: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total_s += seconds
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``."""
        cumulative = np.cumsum(self.counts).tolist()
        labels = [exact_number(b) for b in self.bounds] + ["+Inf"]
        return list(zip(labels, cumulative, strict=True))


@dataclass(frozen=True)
class Status:
    """Everything one scrape shows; built by the daemon, read-only here.

    ``value_kinds`` holds, per monitor, the values binned since start by kind
    (:data:`VALUE_KINDS`); ``requests_by_code`` the ingest requests answered
    by HTTP status; ``files_moved_aside`` the unusable state files renamed
    aside since start, by kind (``checkpoint``, ``reference``).
    """

    evaluation: Evaluation | None
    stream_rows: Mapping[str, int]
    value_kinds: Iterable[tuple[str, str, Mapping[str, float]]]
    unknown_fields: Mapping[str, int]
    requests_by_code: Mapping[int | str, int]  # a status code, or "client_closed"
    evaluation_durations: DurationHistogram
    queue_rows: int
    queue_capacity_rows: int
    config_reload_ok: bool
    checkpoint_last_success_s: float | None = None
    checkpoint_failures: int = 0
    warmup: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    dropped_events: Mapping[str, int] = field(default_factory=dict)
    files_moved_aside: Mapping[str, int] = field(default_factory=dict)
    parse_processes: int | None = None  # alive; None without ingest.processes
    parse_process_jobs: int | None = None  # bodies a parse process binned; idem
    cluster: ClusterStatus | None = None  # cluster.mode: shared only
    # Connections open, and closed by the listener's guard by reason; None without a listener.
    connections: tuple[int, Mapping[str, int]] | None = None


CONNECTION_CLOSE_REASONS = ("header_timeout", "evicted", "refused")
"""The ``reason`` values of ``driftmon_http_connections_closed_total`` (each always exported)."""


@dataclass(frozen=True)
class SeriesColumns:
    """A per-monitor family as columns: series ``j`` is monitor ``monitors[j]``'s.

    ``label_names`` are in the collector's order; ``stream`` and ``feature``
    come from ``layout.names[monitors[j]]``, every other label from ``extra[label][j]``.
    A NaN value has no series when ``skip_nan``. :meth:`expanded` gives the
    ``prometheus_client`` family the collector always built;
    :func:`render_text` writes the same bytes without building it.
    """

    name: str
    documentation: str
    type: str  # "gauge" or "counter"
    label_names: tuple[str, ...]
    layout: MonitorLayout  # (stream, feature) by monitor position
    monitors: np.ndarray  # int64[series]: position in ``names``
    extra: Mapping[str, Sequence[str]]
    values: np.ndarray  # float64[series]
    skip_nan: bool = False

    def kept(self) -> np.ndarray:
        """Positions of the series that exist (all, or the non-NaN ones)."""
        if self.skip_nan:
            return np.flatnonzero(~np.isnan(self.values))
        return np.arange(self.values.shape[0])

    def expanded(self) -> Metric:
        """The ``prometheus_client`` family (what :class:`DriftCollector` yields)."""
        kind = CounterMetricFamily if self.type == "counter" else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=list(self.label_names))
        monitors = self.monitors.tolist()
        values = self.values.tolist()
        for j in self.kept().tolist():
            stream, feature = self.layout.names[monitors[j]]
            own = {"stream": stream, "feature": feature}
            family.add_metric(
                [own[n] if n in own else self.extra[n][j] for n in self.label_names], values[j]
            )
        return family


Family = Metric | SeriesColumns


@dataclass(frozen=True)
class MonitorLayout:
    """The monitors of one packing: names, and their label values escaped for the text format."""

    names: tuple[tuple[str, str], ...]  # (stream, feature) by position
    positions: np.ndarray  # int64: 0..M-1
    value_index: np.ndarray  # int64: the position's index in Evaluation arrays
    escaped_streams: list[str]
    escaped_features: list[str]
    _label_parts: list[tuple[list[str], list[str]]] = field(
        default_factory=list, compare=False, repr=False
    )

    def label_parts(self) -> tuple[list[str], list[str]]:
        """``feature="…",`` and ``stream="…"`` of every monitor (escaped), made once."""
        if not self._label_parts:
            streams: dict[str, str] = {}
            self._label_parts.append(
                (
                    [f'feature="{feature}",' for feature in self.escaped_features],
                    [streams.setdefault(s, f'stream="{s}"') for s in self.escaped_streams],
                )
            )
        return self._label_parts[0]

    def gauge(
        self, name: str, documentation: str, values: np.ndarray, *, skip_nan: bool = True
    ) -> SeriesColumns:
        """A gauge of one value per monitor labelled (stream, feature); NaN: no series
        (unless not ``skip_nan``)."""
        return SeriesColumns(
            name=name,
            documentation=documentation,
            type="gauge",
            label_names=("stream", "feature"),
            layout=self,
            monitors=self.positions,
            extra={},
            values=values,
            skip_nan=skip_nan,
        )


_layouts: dict[int, tuple[object, MonitorLayout]] = {}
_layouts_lock = threading.Lock()


def _monitor_layout(monitors: Sequence[Monitor] | Sequence[tuple[str, str]]) -> MonitorLayout:
    """The names of ``monitors`` (an engine's tuple, fixed per packing), cached by identity."""
    with _layouts_lock:
        found = _layouts.get(id(monitors))
        if found is not None and found[0] is monitors:
            return found[1]
    if monitors and isinstance(monitors[0], Monitor):
        typed = [m for m in monitors if isinstance(m, Monitor)]
        names = tuple((m.stream, m.feature) for m in typed)
        index = np.fromiter((m.index for m in typed), dtype=np.int64, count=len(typed))
    else:
        names = tuple((str(s), str(f)) for s, f in monitors)  # type: ignore[misc]
        index = np.arange(len(names), dtype=np.int64)
    streams: dict[str, str] = {}
    layout = MonitorLayout(
        names,
        np.arange(len(names), dtype=np.int64),
        index,
        [streams.setdefault(s, escape_label(s)) for s, _ in names],
        [escape_label(f) for _, f in names],
    )
    with _layouts_lock:
        if len(_layouts) >= 4:  # an engine's monitors and its kind layout, and the previous pair
            _layouts.pop(next(iter(_layouts)))
        _layouts[id(monitors)] = (monitors, layout)  # the reference keeps the id unique
    return layout


class DriftCollector(Collector):
    """A ``prometheus_client`` collector over the daemon's latest :class:`Status`."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        """No fixed description: the families depend on the config (avoids a scrape at register)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Fresh families from the status of this instant."""
        for family in families(self._status()):
            yield family.expanded() if isinstance(family, SeriesColumns) else family


def families(status: Status) -> Iterator[Family]:
    """Every family of ``status``, in exposition order (per-monitor ones as columns)."""
    yield from _divergence_families(status.evaluation)
    yield from _stream_families(status.evaluation)
    yield from _ingest_families(status)
    yield from _daemon_families(status)
    if status.cluster is not None:
        yield from _cluster_families(status.cluster)


def _divergence_families(evaluation: Evaluation | None) -> Iterator[Family]:
    labels = ("stream", "feature")
    layout = None if evaluation is None else _monitor_layout(evaluation.monitors)
    for name, metric, text in DIVERGENCE_FAMILIES:
        if evaluation is None or layout is None:
            yield GaugeMetricFamily(metric, text, labels=list(labels))
            continue
        yield layout.gauge(metric, text, evaluation.values[name][layout.value_index])
    entropy_help = "Entropy of the smoothed reference or live distribution."
    window_help = "Rows in the live window that reached this feature."
    reference_help = "Rows in the reference."
    firing_help = "1 while the alert rule fires for this monitor, 0 otherwise."
    firing_labels = ("stream", "feature", "rule", "severity")
    if evaluation is None or layout is None:
        yield GaugeMetricFamily(
            "driftmon_entropy", entropy_help, labels=["stream", "feature", "window"]
        )
        yield GaugeMetricFamily("driftmon_window_samples", window_help, labels=list(labels))
        yield GaugeMetricFamily("driftmon_reference_samples", reference_help, labels=list(labels))
        yield GaugeMetricFamily("driftmon_alert_firing", firing_help, labels=list(firing_labels))
        return
    # Per monitor the reference entropy, then the live one (the order of the series).
    entropies = np.column_stack(
        [
            evaluation.values["entropy_reference"][layout.value_index],
            evaluation.values["entropy_live"][layout.value_index],
        ]
    ).ravel()
    yield SeriesColumns(
        name="driftmon_entropy",
        documentation=entropy_help,
        type="gauge",
        label_names=("stream", "feature", "window"),
        layout=layout,
        monitors=np.repeat(layout.positions, 2),
        extra={"window": ("reference", "live") * len(layout.names)},
        values=entropies,
        skip_nan=True,
    )
    window_samples = np.asarray(evaluation.window_samples, dtype=np.float64)
    yield layout.gauge(
        "driftmon_window_samples", window_help, window_samples[layout.value_index], skip_nan=False
    )
    reference_samples = np.asarray(evaluation.reference_samples, dtype=np.float64)
    yield layout.gauge(
        "driftmon_reference_samples",
        reference_help,
        reference_samples[layout.value_index],
        skip_nan=False,
    )
    pairs = evaluation.alert_pairs
    yield SeriesColumns(
        name="driftmon_alert_firing",
        documentation=firing_help,
        type="gauge",
        label_names=firing_labels,
        layout=layout,
        monitors=np.fromiter((pair.monitor for pair in pairs), dtype=np.int64, count=len(pairs)),
        extra={
            "rule": [pair.rule.name for pair in pairs],
            "severity": [pair.rule.severity for pair in pairs],
        },
        values=(np.asarray(evaluation.alerts.state) == AlertState.FIRING).astype(np.float64),
    )


def _stream_families(evaluation: Evaluation | None) -> Iterator[Family]:
    """Stream-level drift and the corrected p-values of rules with ``p_value_correction``."""
    corrected_help = (
        "The p-value a rule with p_value_correction compares with max_p_value: the "
        "monitor's p-value corrected over the monitors the rule matches in its stream."
    )
    corrected_labels = ("stream", "feature", "rule")
    stream_p = GaugeMetricFamily(
        STREAM_P_VALUE_SERIES,
        "Smallest Holm-adjusted p-value of the stream's monitors, min(1, m * min p): "
        "below alpha when some feature drifts at family-wise error alpha.",
        labels=["stream"],
    )
    drifting = GaugeMetricFamily(
        STREAM_DRIFTING_SERIES,
        "Monitors of the stream for which the alert rule fires.",
        labels=["stream", "rule"],
    )
    if evaluation is None:
        yield GaugeMetricFamily(ALERT_P_VALUE_SERIES, corrected_help, labels=list(corrected_labels))
    else:
        layout = _monitor_layout(evaluation.monitors)
        kept = [
            i
            for i, pair in enumerate(evaluation.alert_pairs)
            if pair.rule.p_value_correction != "none"
        ]
        pairs = [evaluation.alert_pairs[i] for i in kept]
        p_values = np.asarray(evaluation.alert_p_values, dtype=np.float64)
        yield SeriesColumns(
            name=ALERT_P_VALUE_SERIES,
            documentation=corrected_help,
            type="gauge",
            label_names=corrected_labels,
            layout=layout,
            monitors=np.fromiter(
                (pair.monitor for pair in pairs), dtype=np.int64, count=len(pairs)
            ),
            extra={"rule": [pair.rule.name for pair in pairs]},
            values=p_values[np.asarray(kept, dtype=np.int64)],
            skip_nan=True,
        )
        for stream, value in evaluation.stream_p_values.items():
            stream_p.add_metric([stream], value)
        for (stream, rule), count in evaluation.drifting_features().items():
            drifting.add_metric([stream, rule], float(count))
    yield stream_p
    yield drifting


VALUES_HELP = (
    "Values binned, by stream, feature and kind (ok, missing, invalid, other, underflow, overflow)."
)


def _value_kind_family(
    value_kinds: Iterable[tuple[str, str, Mapping[str, float]]],
) -> Family:
    """``driftmon_ingest_values_total``: one array op over :class:`ValueKindTotals`."""
    labels = ("stream", "feature", "kind")
    if not isinstance(value_kinds, ValueKindTotals):
        values = CounterMetricFamily("driftmon_ingest_values", VALUES_HELP, labels=list(labels))
        for stream, feature, kinds in value_kinds:
            for kind, kind_count in kinds.items():
                values.add_metric([stream, feature, kind], float(kind_count))
        return values
    layout = _monitor_layout(value_kinds.layout.names)
    # Per monitor its kinds in listing order (kinds.py): numeric monitors five, categorical four.
    numeric_row = np.asarray(NUMERIC_KINDS, dtype=np.int64)
    categorical_row = np.asarray((*CATEGORICAL_KINDS, -1), dtype=np.int64)
    table = np.where(value_kinds.layout.numeric[:, None], numeric_row, categorical_row)
    monitor = np.repeat(np.arange(table.shape[0], dtype=np.int64), table.shape[1])
    kind_index = table.ravel()
    present = kind_index >= 0
    monitor, kind_index = monitor[present], kind_index[present]
    return SeriesColumns(
        name="driftmon_ingest_values",
        documentation=VALUES_HELP,
        type="counter",
        label_names=labels,
        layout=layout,
        monitors=monitor,
        extra={"kind": [VALUE_KINDS[k] for k in kind_index.tolist()]},
        values=value_kinds.sums[monitor, kind_index],
    )


def _counter(
    name: str, documentation: str, label: str, counts: Iterable[tuple[object, float]]
) -> CounterMetricFamily:
    """A counter family with one series per ``(label value, count)``, in the order given."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, count in counts:
        family.add_metric([str(key)], float(count))
    return family


def _ingest_families(status: Status) -> Iterator[Family]:
    yield _counter(
        "driftmon_ingest_rows", "Rows accepted, by stream.", "stream", status.stream_rows.items()
    )
    yield _value_kind_family(status.value_kinds)
    yield _counter(
        "driftmon_ingest_unknown_fields",
        "Values under fields that no feature monitors (ignored), by stream.",
        "stream",
        status.unknown_fields.items(),
    )
    yield _counter(
        "driftmon_ingest_requests",
        "Ingest requests by HTTP status code.",
        "code",
        sorted(status.requests_by_code.items(), key=lambda item: str(item[0])),
    )
    yield _counter(
        "driftmon_ingest_dropped_events",
        "CloudEvents that fed no stream, by reason.",
        "reason",
        sorted(status.dropped_events.items()),
    )
    if status.connections is not None:
        open_now, closed = status.connections
        yield GaugeMetricFamily(
            "driftmon_http_connections",
            "HTTP connections open (server.max_connections bounds).",
            value=float(open_now),
        )
        yield _counter(
            "driftmon_http_connections_closed",
            "HTTP connections the daemon closed early, by reason: header_timeout, evicted "
            "(idle, to make room at server.max_connections), refused (503, none idle).",
            "reason",
            ((reason, closed.get(reason, 0)) for reason in CONNECTION_CLOSE_REASONS),
        )
    yield GaugeMetricFamily(
        "driftmon_ingest_queue_rows",
        "Rows accepted but not yet binned.",
        value=float(status.queue_rows),
    )
    yield GaugeMetricFamily(
        "driftmon_ingest_queue_capacity_rows",
        "Bound of the ingest queue (ingest.queue_rows).",
        value=float(status.queue_capacity_rows),
    )
    if status.parse_processes is not None:
        yield GaugeMetricFamily(
            "driftmon_ingest_parse_processes",
            "Parse processes alive (of ingest.processes); the workers parse what they cannot.",
            value=float(status.parse_processes),
        )
    if status.parse_process_jobs is not None:
        yield CounterMetricFamily(
            "driftmon_ingest_parse_process_jobs",
            "Ingest bodies parsed and binned by a parse process (the rest by the workers).",
            value=float(status.parse_process_jobs),
        )
    warmup = GaugeMetricFamily(
        "driftmon_warmup_rows",
        "Rows collected so far by a stream whose warmup reference is not frozen yet.",
        labels=["stream"],
    )
    for stream, (collected, _needed) in status.warmup.items():
        warmup.add_metric([stream], float(collected))
    yield warmup


def _daemon_families(status: Status) -> Iterator[Metric]:
    histogram = status.evaluation_durations
    durations = HistogramMetricFamily(
        "driftmon_evaluation_duration_seconds", "Duration of evaluation passes."
    )
    durations.add_metric([], histogram.buckets(), sum_value=histogram.total_s)
    yield durations
    evaluation = status.evaluation
    if evaluation is not None:
        yield GaugeMetricFamily(
            "driftmon_last_evaluation_timestamp_seconds",
            "Unix time at the end of the last evaluation.",
            value=evaluation.time + evaluation.duration_s,
        )
    if status.checkpoint_last_success_s is not None:
        yield GaugeMetricFamily(
            "driftmon_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written successfully.",
            value=status.checkpoint_last_success_s,
        )
    yield CounterMetricFamily(
        "driftmon_checkpoint_failures",
        "Checkpoints that could not be written.",
        value=float(status.checkpoint_failures),
    )
    yield _counter(
        "driftmon_state_files_moved_aside",
        "Unusable checkpoints renamed aside (.corrupt-), by kind (checkpoint).",
        "kind",
        sorted(status.files_moved_aside.items()),
    )
    yield GaugeMetricFamily(
        "driftmon_config_last_reload_successful",
        "1 if the last configuration load succeeded, 0 otherwise.",
        value=1.0 if status.config_reload_ok else 0.0,
    )
    build = GaugeMetricFamily(
        "driftmon_build_info", "driftmon version; the value is always 1.", labels=["version"]
    )
    build.add_metric([__version__], 1.0)
    yield build


def _cluster_families(cluster: ClusterStatus) -> Iterator[Metric]:
    """Shared mode (driftmon/cluster/): this replica's part in the cluster."""
    yield GaugeMetricFamily(
        "driftmon_cluster_leader",
        "1 while this replica holds the lease and exports the divergence and alert series.",
        value=1.0 if cluster.leader else 0.0,
    )
    yield GaugeMetricFamily(
        "driftmon_cluster_store_up",
        "1 if the last call to the shared store succeeded.",
        value=1.0 if cluster.store_reachable else 0.0,
    )
    flushes = HistogramMetricFamily(
        "driftmon_cluster_flush_duration_seconds",
        "Duration of flushes of pane deltas to the shared store (one pipelined round trip).",
    )
    flushes.add_metric([], list(cluster.flush_buckets), sum_value=cluster.flush_duration_sum_s)
    yield flushes
    for name, text, value in (
        (
            "driftmon_cluster_flush_failures",
            "Flushes to the shared store that failed (each is retried until applied).",
            cluster.flush_failures,
        ),
        (
            "driftmon_cluster_deduplicated_requests",
            "Ingest requests whose Idempotency-Key had been counted before (not counted again).",
            cluster.deduplicated_requests,
        ),
        (
            "driftmon_cluster_late_rows",
            "Rows counted in a later pane than the one they arrived in (a slow or retried flush).",
            cluster.late_rows,
        ),
    ):
        yield CounterMetricFamily(name, text, value=float(value))
    yield GaugeMetricFamily(
        "driftmon_cluster_clock_offset_seconds",
        "The shared store's clock minus this replica's, as last measured.",
        value=cluster.clock_offset_s,
    )


def new_registry(status: Callable[[], Status]) -> CollectorRegistry:
    """A fresh registry holding one :class:`DriftCollector` (and nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DriftCollector(status))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The scrape body and its Content-Type: OpenMetrics when ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
