"""Public names of driftmon's metric series (docs/metrics.md), in one place.

:data:`MONITOR_METRICS` is the one table of per-monitor values: the config
checks alert rules against it, the exporter publishes it, ``driftmon rules``
alerts on it, ``driftmon dashboard`` plots it and ``driftmon replay`` writes
it, so a name, a help text or a range cannot drift between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorMetric:
    """One per-monitor value of an evaluation and the gauge that publishes it."""

    name: str
    """``Evaluation.values`` key, alert rule ``metric``, replay record key."""
    kernel_row: int | None
    """Its row in the divergence kernel's ``out[9, M]``; ``None`` for ``wasserstein``,
    which has its own kernel."""
    series: str
    """The exported gauge."""
    help: str
    """The gauge's HELP text."""
    title: str
    """How alerts and panels name it."""
    ceiling: float = math.inf
    """The largest value it can take (natural log where :attr:`in_log_units`); it is >= 0."""
    in_log_units: bool = False
    """Whether ``engine.log_base`` scales it (``2``: bits, ``e``: nats)."""
    alertable: bool = True
    """Whether an alert rule may name it as ``metric``."""

    def ceiling_for(self, log_base: str) -> float:
        """:attr:`ceiling` in the unit ``log_base`` (``"e"`` or ``"2"``) gives it."""
        if self.in_log_units and log_base == "2":
            return self.ceiling / math.log(2)
        return self.ceiling


MONITOR_METRICS: tuple[MonitorMetric, ...] = (
    MonitorMetric(
        "kl",
        0,
        "driftmon_kl_divergence",
        "KL divergence KL(reference || live).",
        "KL divergence",
        in_log_units=True,
    ),
    MonitorMetric(
        "kl_reverse",
        1,
        "driftmon_reverse_kl_divergence",
        "KL divergence KL(live || reference).",
        "reverse KL divergence",
        in_log_units=True,
    ),
    MonitorMetric(
        "js",
        2,
        "driftmon_js_divergence",
        "Jensen-Shannon divergence (not its square root).",
        "JS divergence",
        ceiling=math.log(2),
        in_log_units=True,
    ),
    MonitorMetric(
        "psi",
        3,
        "driftmon_psi",
        "Population stability index, natural log.",
        "PSI",
    ),
    MonitorMetric(
        "hellinger",
        4,
        "driftmon_hellinger_distance",
        "Hellinger distance, in [0, 1].",
        "Hellinger distance",
        ceiling=1.0,
    ),
    MonitorMetric(
        "wasserstein",
        None,
        "driftmon_wasserstein_distance",
        "W1 between binned numeric distributions, in reference standard deviations.",
        "Wasserstein distance",
    ),
    MonitorMetric(
        "p_value",
        8,
        "driftmon_drift_p_value",
        "G-test p-value of reference and live counts coming from one distribution.",
        "drift p-value",
        ceiling=1.0,
        alertable=False,
    ),
)
"""Every per-monitor value the exporter publishes, in exposition order."""

MONITOR_METRIC: Mapping[str, MonitorMetric] = {metric.name: metric for metric in MONITOR_METRICS}
""":data:`MONITOR_METRICS` by name."""

ALERT_METRICS: tuple[str, ...] = tuple(m.name for m in MONITOR_METRICS if m.alertable)
"""The names an alert rule's ``metric`` may take."""

DIVERGENCE_SERIES: Mapping[str, str] = {metric.name: metric.series for metric in MONITOR_METRICS}
"""Per-monitor value (``Evaluation.values`` key, alert ``metric``) → its gauge."""

ALERT_SERIES: Mapping[str, str] = {name: DIVERGENCE_SERIES[name] for name in ALERT_METRICS}
"""Alert rule ``metric`` (docs/divergences.md) → the gauge it compares with its threshold."""

WINDOW_SAMPLES_SERIES = "driftmon_window_samples"
"""Rows in the live window per monitor: what ``min_samples`` compares with."""

ALERT_P_VALUE_SERIES = "driftmon_alert_p_value"
"""Per (stream, feature, rule) of a rule with ``p_value_correction``: the corrected p-value
that its ``max_p_value`` judges."""

STREAM_P_VALUE_SERIES = "driftmon_stream_drift_p_value"
"""Per stream: the smallest Holm-adjusted p-value of its monitors, ``min(1, m · min p)``."""

STREAM_DRIFTING_SERIES = "driftmon_stream_drifting_features"
"""Per (stream, rule): how many of the stream's monitors the rule fires for."""
