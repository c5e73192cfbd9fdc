"""What the pages show, computed from one :class:`~driftmon.evaluation.Evaluation`.

Nothing here reads the engine: a :class:`MonitorView` is built from the
evaluation snapshot alone (its values, samples, alert table and the counts it
saw), so a page prints exactly what ``/metrics`` exported for that evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from driftmon.binning import NumericBinner
from driftmon.evaluation import Evaluation

STATES = ("inactive", "pending", "firing")
"""Alert states by their number in the alert table."""

_STATE_RANK = {"firing": 0, "pending": 1, "inactive": 2, "none": 3}

SHOWN_METRICS = ("js", "psi", "kl", "kl_reverse", "hellinger", "wasserstein", "p_value")
"""The per-monitor values the pages print, in this order."""


def metric_unit(metric: str, log_base: str) -> str:
    """The unit of a published value (DESIGN of the divergences: the log base, W1 in SDs)."""
    if metric in ("kl", "kl_reverse", "js", "entropy_reference", "entropy_live", "cross_entropy"):
        return "bits" if log_base == "2" else "nats"
    if metric == "psi":
        return "nats"  # PSI is always in natural log
    if metric == "wasserstein":
        return "reference SDs"
    if metric == "p_value":
        return "probability"
    return "distance in [0, 1]"  # hellinger


@dataclass(frozen=True)
class AlertView:
    """One rule applied to one monitor, as the evaluation left it."""

    rule: str
    metric: str
    severity: str
    threshold: float
    clear_below: float
    for_s: float
    min_samples: int
    max_p_value: float | None
    p_value_correction: str
    p_value: float  # the p-value the rule judged (corrected when it corrects); NaN: none
    state: str
    active_at: float  # NaN when inactive
    fired_at: float  # NaN unless firing

    @property
    def since(self) -> float:
        """When the current state began: firing since ``fired_at``, pending since ``active_at``."""
        return self.fired_at if self.state == "firing" else self.active_at


@dataclass(frozen=True)
class MonitorView:
    """One monitor of an evaluation: its values, rules and the counts the evaluation saw."""

    stream: str
    feature: str
    type: str
    index: int
    samples: int
    reference_samples: int
    values: dict[str, float]
    alerts: tuple[AlertView, ...]
    labels: tuple[str, ...]
    reference_counts: np.ndarray
    live_counts: np.ndarray
    smoothing: float
    edges: np.ndarray | None  # numeric monitors: the regular bins' edges

    @property
    def state(self) -> str:
        """The most urgent state of its rules (``firing`` > ``pending`` > ``inactive``), or
        ``none`` when no rule matches it."""
        return state_of(self.alerts)

    @property
    def rule_metric(self) -> str:
        """The metric the page charts: the first firing rule's, else the first pending
        rule's, else the first rule's, else ``js``."""
        for wanted in ("firing", "pending", "inactive"):
            for alert in self.alerts:
                if alert.state == wanted:
                    return alert.metric
        return "js"

    def proportions(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference and live proportions per bin (raw counts over their totals; 0 when empty)."""
        return _share(self.reference_counts), _share(self.live_counts)


def _share(counts: np.ndarray) -> np.ndarray:
    total = float(counts.sum())
    return counts / total if total > 0 else np.zeros_like(counts)


def state_of(alerts: tuple[AlertView, ...] | list[AlertView]) -> str:
    """The most urgent of ``alerts``' states, ``none`` for no alert."""
    if not alerts:
        return "none"
    return min((a.state for a in alerts), key=_STATE_RANK.__getitem__)


def alert_views(evaluation: Evaluation) -> dict[int, list[AlertView]]:
    """The rules of each monitor (by monitor number) with their state, in config order."""
    alerts: dict[int, list[AlertView]] = {}
    table = evaluation.alerts
    for i, pair in enumerate(evaluation.alert_pairs):
        rule = pair.rule
        alerts.setdefault(pair.monitor, []).append(
            AlertView(
                rule=rule.name,
                metric=rule.metric,
                severity=rule.severity,
                threshold=rule.threshold,
                clear_below=rule.clear_threshold,
                for_s=rule.for_s,
                min_samples=rule.min_samples,
                max_p_value=rule.max_p_value,
                p_value_correction=rule.p_value_correction,
                p_value=(
                    float(evaluation.alert_p_values[i])
                    if evaluation.alert_p_values.size
                    else math.nan
                ),
                state=STATES[int(table.state[i])],
                active_at=float(table.active_at[i]),
                fired_at=float(table.fired_at[i]),
            )
        )
    return alerts


def monitor_views(
    evaluation: Evaluation,
    indices: list[int] | None = None,
    alerts: dict[int, list[AlertView]] | None = None,
) -> list[MonitorView]:
    """The monitors of ``evaluation`` numbered ``indices`` (default all, in config order)."""
    if alerts is None:
        alerts = alert_views(evaluation)
    views = []
    has_counts = evaluation.live_counts.size > 0
    chosen = evaluation.monitors if indices is None else [evaluation.monitors[i] for i in indices]
    for monitor in chosen:
        i = monitor.index
        binner = monitor.binner
        if has_counts:
            reference = np.asarray(evaluation.reference_counts[monitor.bins], dtype=np.float64)
            live = np.asarray(evaluation.live_counts[monitor.bins], dtype=np.float64)
        else:
            reference = live = np.zeros(monitor.n_bins)
        views.append(
            MonitorView(
                stream=monitor.stream,
                feature=monitor.feature,
                type=monitor.type,
                index=i,
                samples=int(evaluation.window_samples[i]),
                reference_samples=int(evaluation.reference_samples[i]),
                values={name: float(evaluation.values[name][i]) for name in SHOWN_METRICS},
                alerts=tuple(alerts.get(i, ())),
                labels=tuple(binner.bin_labels()),
                reference_counts=reference,
                live_counts=live,
                smoothing=monitor.smoothing,
                edges=(
                    np.asarray(binner.edges, dtype=np.float64)
                    if isinstance(binner, NumericBinner)
                    else None
                ),
            )
        )
    return views


def firing_first(views: list[MonitorView]) -> list[MonitorView]:
    """``views`` with firing monitors first, then pending, inactive, unwatched (stable)."""
    return sorted(views, key=lambda v: _STATE_RANK[v.state])


def per_bin_contributions(view: MonitorView, metric: str, log_base: str) -> np.ndarray | None:
    """Each bin's term of ``metric`` for this monitor, or ``None`` when it has none.

    The terms add up to the published value: ``kl``, ``kl_reverse``, ``js`` and
    ``psi`` are sums over bins of the smoothed proportions (DESIGN of the
    divergences); for ``hellinger`` the terms ``½(√p − √q)²`` add up to its
    square; for ``wasserstein`` the term of a value bin is ``|F_P − F_Q|``
    times the gap to the next bin position, over the reference SD (``missing``
    and ``invalid`` take no part: 0). ``None`` for an empty side or
    ``p_value``.
    """
    reference, live = view.reference_counts, view.live_counts
    r_total, l_total = float(reference.sum()), float(live.sum())
    if r_total <= 0 or l_total <= 0 or metric == "p_value":
        return None
    if metric == "wasserstein":
        return _wasserstein_terms(view)
    k = reference.size
    a = view.smoothing
    p = (reference + a) / (r_total + k * a)
    q = (live + a) / (l_total + k * a)
    scale = 1.0 / math.log(2) if log_base == "2" else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "kl":
            terms = np.where(p > 0, p * np.log(p / q), 0.0) * scale
        elif metric == "kl_reverse":
            terms = np.where(q > 0, q * np.log(q / p), 0.0) * scale
        elif metric == "js":
            m = (p + q) / 2
            left = np.where(p > 0, p * np.log(p / m), 0.0)
            right = np.where(q > 0, q * np.log(q / m), 0.0)
            terms = (left + right) / 2 * scale
        elif metric == "psi":
            terms = np.where((p > 0) | (q > 0), (q - p) * np.log(q / p), 0.0)
        elif metric == "hellinger":
            terms = (np.sqrt(p) - np.sqrt(q)) ** 2 / 2
        else:
            raise ValueError(f"no per-bin terms for metric {metric!r}")
    return np.asarray(terms, dtype=np.float64)


def _wasserstein_terms(view: MonitorView) -> np.ndarray | None:
    if view.edges is None:
        return None
    edges = view.edges
    n_value_bins = edges.size + 1  # underflow, regular bins, overflow
    positions = np.concatenate(([edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]))
    reference = view.reference_counts[:n_value_bins]
    live = view.live_counts[:n_value_bins]
    if reference.sum() <= 0 or live.sum() <= 0:
        return None
    p = reference / reference.sum()
    q = live / live.sum()
    mean = float(np.dot(p, positions))
    sd = math.sqrt(float(np.dot(p, (positions - mean) ** 2)))
    if sd <= 0:
        return None
    gaps = np.diff(positions)
    terms = np.zeros(view.reference_counts.size)
    terms[: n_value_bins - 1] = np.abs(np.cumsum(p)[:-1] - np.cumsum(q)[:-1]) * gaps / sd
    return terms
