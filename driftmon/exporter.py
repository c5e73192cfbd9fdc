"""Prometheus exposition: the only module that imports ``prometheus_client`` (docs/metrics.md).

:class:`DriftCollector` builds fresh metric families on every scrape from a
:class:`Status`, an immutable picture of the daemon that its ``status``
callable returns: the latest :class:`~driftmon.engine.Evaluation` plus the
ingest counters. Nothing here keeps state between scrapes, so a monitor that
a reload removes simply stops appearing, and a divergence that is absent
(NaN: no reference or an empty window) has no series at all.

The registry is a parameter: the daemon passes its own
``CollectorRegistry()``, never the global one, and so do the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from driftmon.cluster.status import ClusterStatus
from driftmon.engine import Evaluation
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
        labels = [_float_text(b) for b in self.bounds] + ["+Inf"]
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
    requests_by_code: Mapping[int, int]
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


def _float_text(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class DriftCollector(Collector):
    """A ``prometheus_client`` collector over the daemon's latest :class:`Status`."""

    def __init__(self, status: Callable[[], Status]) -> None:
        self._status = status

    def describe(self) -> list[Metric]:
        """No fixed description: the families depend on the config (avoids a scrape at register)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Fresh families from the status of this instant."""
        status = self._status()
        yield from _divergence_families(status.evaluation)
        yield from _stream_families(status.evaluation)
        yield from _ingest_families(status)
        yield from _daemon_families(status)
        if status.cluster is not None:
            yield from _cluster_families(status.cluster)


def _divergence_families(evaluation: Evaluation | None) -> Iterator[Metric]:
    monitors = evaluation.monitors if evaluation is not None else ()
    labels = ["stream", "feature"]
    families = {
        name: GaugeMetricFamily(metric, text, labels=labels)
        for name, metric, text in DIVERGENCE_FAMILIES
    }
    entropy = GaugeMetricFamily(
        "driftmon_entropy",
        "Entropy of the smoothed reference or live distribution.",
        labels=["stream", "feature", "window"],
    )
    window_samples = GaugeMetricFamily(
        "driftmon_window_samples",
        "Rows in the live window that reached this feature.",
        labels=labels,
    )
    reference_samples = GaugeMetricFamily(
        "driftmon_reference_samples", "Rows in the reference.", labels=labels
    )
    firing = GaugeMetricFamily(
        "driftmon_alert_firing",
        "1 while the alert rule fires for this monitor, 0 otherwise.",
        labels=["stream", "feature", "rule", "severity"],
    )
    if evaluation is not None:
        for monitor in monitors:
            i = monitor.index
            key = [monitor.stream, monitor.feature]
            for name, family in families.items():
                value = float(evaluation.values[name][i])
                if not math.isnan(value):
                    family.add_metric(key, value)
            for window, name in (("reference", "entropy_reference"), ("live", "entropy_live")):
                value = float(evaluation.values[name][i])
                if not math.isnan(value):
                    entropy.add_metric([*key, window], value)
            window_samples.add_metric(key, float(evaluation.window_samples[i]))
            reference_samples.add_metric(key, float(evaluation.reference_samples[i]))
        for pair, state in zip(evaluation.alert_pairs, evaluation.alerts.state, strict=True):
            monitor = monitors[pair.monitor]
            firing.add_metric(
                [monitor.stream, monitor.feature, pair.rule.name, pair.rule.severity],
                1.0 if state == 2 else 0.0,
            )
    yield from families.values()
    yield entropy
    yield window_samples
    yield reference_samples
    yield firing


def _stream_families(evaluation: Evaluation | None) -> Iterator[Metric]:
    """Stream-level drift and the corrected p-values of rules with ``p_value_correction``."""
    corrected = GaugeMetricFamily(
        ALERT_P_VALUE_SERIES,
        "The p-value a rule with p_value_correction compares with max_p_value: the "
        "monitor's p-value corrected over the monitors the rule matches in its stream.",
        labels=["stream", "feature", "rule"],
    )
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
    if evaluation is not None:
        monitors = evaluation.monitors
        for pair, p_value in zip(evaluation.alert_pairs, evaluation.alert_p_values, strict=True):
            if pair.rule.p_value_correction != "none" and not math.isnan(p_value):
                monitor = monitors[pair.monitor]
                corrected.add_metric(
                    [monitor.stream, monitor.feature, pair.rule.name], float(p_value)
                )
        for stream, value in evaluation.stream_p_values.items():
            stream_p.add_metric([stream], value)
        for (stream, rule), count in evaluation.drifting_features().items():
            drifting.add_metric([stream, rule], float(count))
    yield corrected
    yield stream_p
    yield drifting


def _ingest_families(status: Status) -> Iterator[Metric]:
    rows = CounterMetricFamily(
        "driftmon_ingest_rows", "Rows accepted, by stream.", labels=["stream"]
    )
    for stream, count in status.stream_rows.items():
        rows.add_metric([stream], float(count))
    yield rows
    values = CounterMetricFamily(
        "driftmon_ingest_values",
        "Values binned, by stream, feature and kind (ok, missing, invalid, other, underflow, "
        "overflow).",
        labels=["stream", "feature", "kind"],
    )
    for stream, feature, kinds in status.value_kinds:
        for kind, kind_count in kinds.items():
            values.add_metric([stream, feature, kind], float(kind_count))
    yield values
    unknown = CounterMetricFamily(
        "driftmon_ingest_unknown_fields",
        "Values under fields that no feature monitors (ignored), by stream.",
        labels=["stream"],
    )
    for stream, count in status.unknown_fields.items():
        unknown.add_metric([stream], float(count))
    yield unknown
    requests = CounterMetricFamily(
        "driftmon_ingest_requests", "Ingest requests by HTTP status code.", labels=["code"]
    )
    for code, count in sorted(status.requests_by_code.items()):
        requests.add_metric([str(code)], float(count))
    yield requests
    dropped = CounterMetricFamily(
        "driftmon_ingest_dropped_events",
        "CloudEvents that fed no stream, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(status.dropped_events.items()):
        dropped.add_metric([reason], float(count))
    yield dropped
    queue = GaugeMetricFamily("driftmon_ingest_queue_rows", "Rows accepted but not yet binned.")
    queue.add_metric([], float(status.queue_rows))
    yield queue
    capacity = GaugeMetricFamily(
        "driftmon_ingest_queue_capacity_rows", "Bound of the ingest queue (ingest.queue_rows)."
    )
    capacity.add_metric([], float(status.queue_capacity_rows))
    yield capacity
    if status.parse_processes is not None:
        parsers = GaugeMetricFamily(
            "driftmon_ingest_parse_processes",
            "Parse processes alive (of ingest.processes); the workers parse what they cannot.",
        )
        parsers.add_metric([], float(status.parse_processes))
        yield parsers
    if status.parse_process_jobs is not None:
        jobs = CounterMetricFamily(
            "driftmon_ingest_parse_process_jobs",
            "Ingest bodies parsed and binned by a parse process (the rest by the workers).",
        )
        jobs.add_metric([], float(status.parse_process_jobs))
        yield jobs
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
        last = GaugeMetricFamily(
            "driftmon_last_evaluation_timestamp_seconds",
            "Unix time at the end of the last evaluation.",
        )
        last.add_metric([], evaluation.time + evaluation.duration_s)
        yield last
    if status.checkpoint_last_success_s is not None:
        checkpoint = GaugeMetricFamily(
            "driftmon_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written successfully.",
        )
        checkpoint.add_metric([], status.checkpoint_last_success_s)
        yield checkpoint
    failures = CounterMetricFamily(
        "driftmon_checkpoint_failures", "Checkpoints that could not be written."
    )
    failures.add_metric([], float(status.checkpoint_failures))
    yield failures
    moved_aside = CounterMetricFamily(
        "driftmon_state_files_moved_aside",
        "Unusable checkpoints renamed aside (.corrupt-), by kind (checkpoint).",
        labels=["kind"],
    )
    for kind, count in sorted(status.files_moved_aside.items()):
        moved_aside.add_metric([kind], float(count))
    yield moved_aside
    reload_ok = GaugeMetricFamily(
        "driftmon_config_last_reload_successful",
        "1 if the last configuration load succeeded, 0 otherwise.",
    )
    reload_ok.add_metric([], 1.0 if status.config_reload_ok else 0.0)
    yield reload_ok
    build = GaugeMetricFamily(
        "driftmon_build_info", "driftmon version; the value is always 1.", labels=["version"]
    )
    build.add_metric([__version__], 1.0)
    yield build


def _cluster_families(cluster: ClusterStatus) -> Iterator[Metric]:
    """Shared mode (driftmon/cluster/): this replica's part in the cluster."""
    leader = GaugeMetricFamily(
        "driftmon_cluster_leader",
        "1 while this replica holds the lease and exports the divergence and alert series.",
    )
    leader.add_metric([], 1.0 if cluster.leader else 0.0)
    yield leader
    reachable = GaugeMetricFamily(
        "driftmon_cluster_store_up", "1 if the last call to the shared store succeeded."
    )
    reachable.add_metric([], 1.0 if cluster.store_reachable else 0.0)
    yield reachable
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
        counter = CounterMetricFamily(name, text)
        counter.add_metric([], float(value))
        yield counter
    offset = GaugeMetricFamily(
        "driftmon_cluster_clock_offset_seconds",
        "The shared store's clock minus this replica's, as last measured.",
    )
    offset.add_metric([], cluster.clock_offset_s)
    yield offset


def new_registry(status: Callable[[], Status]) -> CollectorRegistry:
    """A fresh registry holding one :class:`DriftCollector` (and nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DriftCollector(status))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The scrape body and its Content-Type: OpenMetrics when ``accept`` asks for it."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
