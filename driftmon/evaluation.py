"""What one evaluation pass publishes: every monitor's divergences, p-values and alert states.

An :class:`Evaluation` is immutable: the exporter, the pages, the JSON API
and the alert log all read the same one (docs/divergences.md for the
values, docs/http-api.md for how they are shown).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from driftmon.alerting import AlertState, AlertTable
from driftmon.config import AlertRule
from driftmon.divergence import METRICS
from driftmon.reference import Binner

__all__ = ["ALL_METRICS", "AlertPair", "Evaluation", "Monitor"]

ALL_METRICS: tuple[str, ...] = (*METRICS, "wasserstein")
"""Every per-monitor value an evaluation publishes, in the order of :attr:`Evaluation.values`."""


@dataclass(frozen=True)
class Monitor:
    """One (stream, feature) pair: a view of ``n_bins`` bins at ``offset``."""

    stream: str
    feature: str
    type: str
    index: int
    offset: int
    binner: Binner
    smoothing: float

    @property
    def n_bins(self) -> int:
        """Number of bins, special bins included."""
        return self.binner.n_bins

    @property
    def bins(self) -> slice:
        """This monitor's bins in the packed arrays."""
        return slice(self.offset, self.offset + self.binner.n_bins)


@dataclass(frozen=True)
class AlertPair:
    """One alert rule applied to one monitor."""

    rule: AlertRule
    monitor: int


@dataclass(frozen=True)
class Evaluation:
    """An immutable result of one evaluation pass.

    ``values[name]`` is float64[M] for every name of :data:`ALL_METRICS`; NaN
    means absent (no reference, an empty window, or ``wasserstein`` of a
    categorical monitor). ``alert_p_values[i]`` is the p-value pair ``i``'s
    rule judged with ``max_p_value``: corrected over its family when the rule
    has a ``p_value_correction``, else its monitor's raw p-value (NaN: the
    pair got no verdict). ``stream_p_values`` holds each stream's combined
    p-value (:func:`~driftmon.multiple_testing.combined_p_values`) when at
    least one of its monitors has a p-value.
    """

    time: float
    monitors: tuple[Monitor, ...]
    values: Mapping[str, np.ndarray]
    window_samples: np.ndarray
    reference_samples: np.ndarray
    alert_pairs: tuple[AlertPair, ...]
    alerts: AlertTable
    duration_s: float
    alert_p_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stream_p_values: Mapping[str, float] = field(default_factory=dict)
    # The counts this evaluation saw (float64[B], read-only), so that pages show the
    # same histograms as the divergences they print; empty for an evaluation made by hand.
    live_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reference_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def shifted(self, offset_s: float) -> Evaluation:
        """This evaluation with its time and alert times moved ``offset_s`` seconds.

        The daemon evaluates on its steady clock and publishes wall-clock times
        (:class:`~driftmon.clock.SteadyClock`); NaN times stay NaN.
        """
        if offset_s == 0.0:
            return self
        table = self.alerts
        alerts = AlertTable(
            table.state,
            table.active_at + offset_s,
            table.fired_at + offset_s,
            table.cleared_at + offset_s,
        )
        return dataclasses.replace(self, time=self.time + offset_s, alerts=alerts)

    def firing_rules(self, monitor: int) -> list[str]:
        """Names of the rules firing for monitor number ``monitor``."""
        return [
            pair.rule.name
            for pair, state in zip(self.alert_pairs, self.alerts.state, strict=True)
            if pair.monitor == monitor and state == AlertState.FIRING
        ]

    def drifting_features(self) -> dict[tuple[str, str], int]:
        """(stream, rule) → how many of the stream's monitors the rule fires for.

        One entry for every (stream, rule) where the rule matches at least one
        monitor, 0 included: what a single per-stream alert counts on.
        """
        counts: dict[tuple[str, str], int] = {}
        for pair, state in zip(self.alert_pairs, self.alerts.state, strict=True):
            key = (self.monitors[pair.monitor].stream, pair.rule.name)
            counts[key] = counts.get(key, 0) + (1 if state == AlertState.FIRING else 0)
        return counts
