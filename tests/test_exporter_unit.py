"""The exporter alone: a fresh ``CollectorRegistry()`` over a hand-built Status.

In the style of prometheus_client's own collector tests (test_process_collector.py):
no daemon, no HTTP; each family is read back with ``registry.get_sample_value``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client.registry import CollectorRegistry

from driftmon import __version__
from driftmon.alerting import AlertState, AlertTable
from driftmon.binning import CategoricalBinner, NumericBinner
from driftmon.cluster.status import ClusterStatus
from driftmon.config import AlertRule
from driftmon.evaluation import ALL_METRICS, AlertPair, Evaluation, Monitor
from driftmon.exporter import DIVERGENCE_FAMILIES, DriftCollector, DurationHistogram, Status

NAN = math.nan
RULE = AlertRule(
    name="js-high", stream_pattern="*", feature_pattern="*", metric="js", threshold=0.1
)
HOLM = AlertRule(
    name="p-holm",
    stream_pattern="s",
    feature_pattern="*",
    metric="p_value",
    threshold=0.0,
    max_p_value=0.05,
    severity="page",
    p_value_correction="holm",
)


def monitors() -> tuple[Monitor, ...]:
    numeric = NumericBinner.uniform(0.0, 1.0, 4)
    categorical = CategoricalBinner(["a", "b"])
    return (
        Monitor("s", "x", "numeric", 0, 0, numeric, 0.5),
        Monitor("s", "c", "categorical", 1, numeric.n_bins, categorical, 0.5),
    )


def evaluation() -> Evaluation:
    """Two monitors of stream s: x (numeric) and c (categorical, so no wasserstein)."""
    values = {name: np.array([0.25 + i, 0.5 + i]) for i, name in enumerate(ALL_METRICS)}
    values["kl"] = np.array([0.125, NAN])  # absent for c: no series
    values["wasserstein"] = np.array([0.75, NAN])
    values["entropy_live"] = np.array([NAN, 1.5])
    values["p_value"] = np.array([0.001, 0.5])
    pairs = (AlertPair(RULE, 0), AlertPair(RULE, 1), AlertPair(HOLM, 0), AlertPair(HOLM, 1))
    alerts = AlertTable(
        state=np.array([AlertState.FIRING, AlertState.PENDING, AlertState.INACTIVE, 0]),
        active_at=np.array([10.0, 20.0, NAN, NAN]),
        fired_at=np.array([15.0, NAN, NAN, NAN]),
        cleared_at=np.full(4, NAN),
    )
    return Evaluation(
        time=1000.0,
        monitors=monitors(),
        values=values,
        window_samples=np.array([40.0, 30.0]),
        reference_samples=np.array([200.0, 100.0]),
        alert_pairs=pairs,
        alerts=alerts,
        duration_s=0.25,
        alert_p_values=np.array([NAN, NAN, 0.002, NAN]),
        stream_p_values={"s": 0.002},
    )


def status(**changes: object) -> Status:
    durations = DurationHistogram()
    for seconds in (0.0003, 0.02, 7.0):
        durations.observe(seconds)
    fields: dict[str, object] = {
        "evaluation": evaluation(),
        "stream_rows": {"s": 70, "idle": 0},
        "value_kinds": [
            ("s", "x", {"ok": 60.0, "missing": 5.0, "invalid": 1.0, "underflow": 2.0}),
            ("s", "c", {"ok": 50.0, "other": 3.0}),
        ],
        "unknown_fields": {"s": 4},
        "requests_by_code": {200: 9, 400: 2, 503: 1},
        "evaluation_durations": durations,
        "queue_rows": 12,
        "queue_capacity_rows": 1000,
        "config_reload_ok": True,
        "checkpoint_last_success_s": 990.5,
        "checkpoint_failures": 3,
        "warmup": {"w": (17, 500)},
        "dropped_events": {"no_stream": 6},
        "files_moved_aside": {"checkpoint": 1},
    }
    fields.update(changes)
    return Status(**fields)  # type: ignore[arg-type]


def registry_of(state: Status) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DriftCollector(lambda: state))
    return registry


def test_divergences_one_series_per_monitor_and_none_for_nan() -> None:
    registry = registry_of(status())
    x, c = {"stream": "s", "feature": "x"}, {"stream": "s", "feature": "c"}
    assert registry.get_sample_value("driftmon_kl_divergence", x) == 0.125
    assert registry.get_sample_value("driftmon_kl_divergence", c) is None
    assert registry.get_sample_value("driftmon_js_divergence", c) == 0.5 + ALL_METRICS.index("js")
    assert registry.get_sample_value("driftmon_wasserstein_distance", x) == 0.75
    assert registry.get_sample_value("driftmon_wasserstein_distance", c) is None
    assert registry.get_sample_value("driftmon_drift_p_value", x) == 0.001
    entropy = "driftmon_entropy"
    assert registry.get_sample_value(entropy, {**x, "window": "live"}) is None
    assert registry.get_sample_value(entropy, {**c, "window": "live"}) == 1.5
    assert registry.get_sample_value(
        entropy, {**x, "window": "reference"}
    ) == 0.25 + ALL_METRICS.index("entropy_reference")
    assert registry.get_sample_value("driftmon_window_samples", x) == 40.0
    assert registry.get_sample_value("driftmon_reference_samples", c) == 100.0
    # Every divergence family is there, even with no series (absent: NaN everywhere).
    names = {metric.name for metric in registry.collect()}
    assert {series for _, series, _ in DIVERGENCE_FAMILIES} <= names


def test_alert_states_firing_is_one_pending_and_inactive_are_zero() -> None:
    registry = registry_of(status())

    def firing(feature: str, rule: AlertRule) -> float | None:
        labels = {"stream": "s", "feature": feature, "rule": rule.name, "severity": rule.severity}
        return registry.get_sample_value("driftmon_alert_firing", labels)

    assert firing("x", RULE) == 1.0
    assert firing("c", RULE) == 0.0  # pending
    assert firing("x", HOLM) == 0.0 and firing("c", HOLM) == 0.0
    drifting = "driftmon_stream_drifting_features"
    assert registry.get_sample_value(drifting, {"stream": "s", "rule": "js-high"}) == 1.0
    assert registry.get_sample_value(drifting, {"stream": "s", "rule": "p-holm"}) == 0.0
    assert registry.get_sample_value("driftmon_stream_drift_p_value", {"stream": "s"}) == 0.002
    corrected = "driftmon_alert_p_value"
    assert (
        registry.get_sample_value(corrected, {"stream": "s", "feature": "x", "rule": "p-holm"})
        == 0.002
    )
    # NaN (no verdict) and rules without a correction give no series.
    assert (
        registry.get_sample_value(corrected, {"stream": "s", "feature": "c", "rule": "p-holm"})
        is None
    )
    assert (
        registry.get_sample_value(corrected, {"stream": "s", "feature": "x", "rule": "js-high"})
        is None
    )


def test_ingest_counters() -> None:
    registry = registry_of(status())
    value = registry.get_sample_value
    assert value("driftmon_ingest_rows_total", {"stream": "s"}) == 70.0
    assert value("driftmon_ingest_rows_total", {"stream": "idle"}) == 0.0
    kinds = {"stream": "s", "feature": "x"}
    assert value("driftmon_ingest_values_total", {**kinds, "kind": "ok"}) == 60.0
    assert value("driftmon_ingest_values_total", {**kinds, "kind": "underflow"}) == 2.0
    assert (
        value("driftmon_ingest_values_total", {"stream": "s", "feature": "c", "kind": "other"})
        == 3.0
    )
    assert value("driftmon_ingest_unknown_fields_total", {"stream": "s"}) == 4.0
    assert value("driftmon_ingest_requests_total", {"code": "200"}) == 9.0
    assert value("driftmon_ingest_requests_total", {"code": "503"}) == 1.0
    assert value("driftmon_ingest_dropped_events_total", {"reason": "no_stream"}) == 6.0
    assert value("driftmon_ingest_queue_rows") == 12.0
    assert value("driftmon_ingest_queue_capacity_rows") == 1000.0
    assert value("driftmon_warmup_rows", {"stream": "w"}) == 17.0
    # The parse-process families exist only with ingest.processes.
    assert value("driftmon_ingest_parse_processes") is None
    assert value("driftmon_ingest_parse_process_jobs_total") is None
    with_processes = registry_of(status(parse_processes=2, parse_process_jobs=5))
    assert with_processes.get_sample_value("driftmon_ingest_parse_processes") == 2.0
    assert with_processes.get_sample_value("driftmon_ingest_parse_process_jobs_total") == 5.0


def test_daemon_families() -> None:
    registry = registry_of(status())
    value = registry.get_sample_value
    histogram = "driftmon_evaluation_duration_seconds"
    assert value(f"{histogram}_bucket", {"le": "0.0005"}) == 1.0
    assert value(f"{histogram}_bucket", {"le": "0.025"}) == 2.0
    assert value(f"{histogram}_bucket", {"le": "5"}) == 2.0
    assert value(f"{histogram}_bucket", {"le": "+Inf"}) == 3.0
    assert value(f"{histogram}_count") == 3.0
    assert value(f"{histogram}_sum") == pytest.approx(7.0203)
    assert value("driftmon_last_evaluation_timestamp_seconds") == 1000.25
    assert value("driftmon_checkpoint_last_success_timestamp_seconds") == 990.5
    assert value("driftmon_checkpoint_failures_total") == 3.0
    assert value("driftmon_state_files_moved_aside_total", {"kind": "checkpoint"}) == 1.0
    assert value("driftmon_config_last_reload_successful") == 1.0
    assert value("driftmon_build_info", {"version": __version__}) == 1.0
    assert value("driftmon_cluster_leader") is None  # single node: no cluster family


def test_before_the_first_evaluation_and_checkpoint() -> None:
    registry = registry_of(
        status(evaluation=None, checkpoint_last_success_s=None, config_reload_ok=False)
    )
    value = registry.get_sample_value
    assert value("driftmon_js_divergence", {"stream": "s", "feature": "x"}) is None
    assert value("driftmon_last_evaluation_timestamp_seconds") is None
    assert value("driftmon_checkpoint_last_success_timestamp_seconds") is None
    assert value("driftmon_config_last_reload_successful") == 0.0
    assert value("driftmon_ingest_rows_total", {"stream": "s"}) == 70.0


def test_cluster_families() -> None:
    cluster = ClusterStatus(
        leader=True,
        epoch=4,
        store_reachable=False,
        flush_buckets=(("0.005", 3.0), ("0.05", 5.0), ("+Inf", 6.0)),
        flush_duration_sum_s=0.5,
        flush_failures=2,
        deduplicated_requests=7,
        late_rows=11,
        clock_offset_s=-0.25,
    )
    registry = registry_of(status(cluster=cluster))
    value = registry.get_sample_value
    assert value("driftmon_cluster_leader") == 1.0
    assert value("driftmon_cluster_store_up") == 0.0
    assert value("driftmon_cluster_flush_duration_seconds_bucket", {"le": "0.05"}) == 5.0
    assert value("driftmon_cluster_flush_duration_seconds_count") == 6.0
    assert value("driftmon_cluster_flush_duration_seconds_sum") == 0.5
    assert value("driftmon_cluster_flush_failures_total") == 2.0
    assert value("driftmon_cluster_deduplicated_requests_total") == 7.0
    assert value("driftmon_cluster_late_rows_total") == 11.0
    assert value("driftmon_cluster_clock_offset_seconds") == -0.25
