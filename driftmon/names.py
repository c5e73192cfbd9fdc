"""Public names of the per-monitor metric series (DESIGN.md §7), in one place.

The exporter publishes them, ``driftmon rules`` alerts on them and
``driftmon dashboard`` plots them; all three read this table so that a name
cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Mapping

DIVERGENCE_SERIES: Mapping[str, str] = {
    "kl": "driftmon_kl_divergence",
    "kl_reverse": "driftmon_reverse_kl_divergence",
    "js": "driftmon_js_divergence",
    "psi": "driftmon_psi",
    "hellinger": "driftmon_hellinger_distance",
    "wasserstein": "driftmon_wasserstein_distance",
    "p_value": "driftmon_drift_p_value",
}
"""Per-monitor value (``Evaluation.values`` key, alert ``metric``) → its gauge."""

ALERT_SERIES: Mapping[str, str] = {
    metric: series for metric, series in DIVERGENCE_SERIES.items() if metric != "p_value"
}
"""Alert rule ``metric`` (DESIGN.md §5) → the gauge it compares with its threshold."""

WINDOW_SAMPLES_SERIES = "driftmon_window_samples"
"""Rows in the live window per monitor: what ``min_samples`` compares with."""

ALERT_P_VALUE_SERIES = "driftmon_alert_p_value"
"""Per (stream, feature, rule) of a rule with ``p_value_correction``: the corrected p-value
that its ``max_p_value`` judges."""

STREAM_P_VALUE_SERIES = "driftmon_stream_drift_p_value"
"""Per stream: the smallest Holm-adjusted p-value of its monitors, ``min(1, m · min p)``."""

STREAM_DRIFTING_SERIES = "driftmon_stream_drifting_features"
"""Per (stream, rule): how many of the stream's monitors the rule fires for."""
