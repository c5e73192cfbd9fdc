"""Public names of the per-monitor metric series (docs/metrics.md), in one place.

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
"""Alert rule ``metric`` (docs/divergences.md) → the gauge it compares with its threshold."""

WINDOW_SAMPLES_SERIES = "driftmon_window_samples"
"""Rows in the live window per monitor: what ``min_samples`` compares with."""
