"""The ``alerts`` section, and the checks that reject rules that can never fire."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import get_args

from driftmon.config.errors import Errors, format_number, show
from driftmon.config.model import (
    P_VALUE_CORRECTIONS,
    AlertMetric,
    AlertRule,
    LogBase,
    PValueCorrection,
    SampleWindow,
    globs_match,
)
from driftmon.config.readers import (
    NON_NEGATIVE_INT,
    choice_reader,
    duration_reader,
    float_reader,
    open_section,
    read_str,
)
from driftmon.config.streams import Monitor
from driftmon.names import MONITOR_METRIC

# The table's alert metrics typed as the Literal, so a checked name can become an AlertMetric
# (tests/test_config.py checks the two agree).
_METRICS: tuple[AlertMetric, ...] = get_args(AlertMetric)

_ALERT_KEYS = (
    "name",
    "match",
    "metric",
    "threshold",
    "for",
    "clear_below",
    "min_samples",
    "max_p_value",
    "p_value_correction",
    "keep_firing_for",
    "severity",
)


def _metric_ceiling(metric: str, log_base: LogBase) -> tuple[float, str] | None:
    """The largest value ``metric`` can take, when it is bounded, and how to say it."""
    table = MONITOR_METRIC[metric]
    ceiling = table.ceiling_for(log_base)
    if not math.isfinite(ceiling):
        return None
    if not table.in_log_units:
        return ceiling, format_number(ceiling)
    if log_base == "2":
        return ceiling, f"{format_number(round(ceiling, 6))} (log 2 in bits)"
    return ceiling, f"{ceiling:.6f} (log 2)"


def read_alert(
    value: object,
    path: str,
    errs: Errors,
    log_base: LogBase,
    monitors: Sequence[Monitor],
    monitors_complete: bool,
) -> tuple[AlertRule | None, str | None]:
    section = open_section(value, path, errs, _ALERT_KEYS)
    if section is None:
        return None, None
    errors_before = len(errs)
    name = section.require("name", read_str)
    stream_pattern: str | None = "*"
    feature_pattern: str | None = "*"
    match = open_section(section.raw("match"), section.at("match"), errs, ("stream", "feature"))
    if match is None:
        stream_pattern = feature_pattern = None
    else:
        if "stream" in match:
            stream_pattern = match.read("stream", read_str)
        if "feature" in match:
            feature_pattern = match.read("feature", read_str)
    metric_name = section.require("metric", choice_reader("metric", _METRICS))
    metric: AlertMetric | None = next((m for m in _METRICS if m == metric_name), None)
    threshold = section.require("threshold", float_reader(at_least=0.0))
    for_s = section.read("for", duration_reader(positive=False))
    clear_below = section.read("clear_below", float_reader(at_least=0.0))
    min_samples = section.read("min_samples", NON_NEGATIVE_INT)
    max_p_value = section.read("max_p_value", _read_p_value)
    correction_name = section.read(
        "p_value_correction", choice_reader("p_value_correction", P_VALUE_CORRECTIONS)
    )
    correction: PValueCorrection | None = next(
        (c for c in P_VALUE_CORRECTIONS if c == correction_name), None
    )
    if correction not in (None, "none") and "max_p_value" not in section:
        errs.add(
            section.at("p_value_correction"),
            f"{correction} corrects the p-values that max_p_value judges, and this rule "
            "has no max_p_value; add one (e.g. max_p_value: 0.01) or drop the key",
        )
    keep_firing_for_s = section.read("keep_firing_for", duration_reader(positive=False))
    severity = section.read("severity", read_str)
    if threshold is not None and clear_below is not None and clear_below > threshold:
        errs.add(
            section.at("clear_below"),
            f"must be <= threshold ({format_number(threshold)}), "
            f"got {show(section.raw('clear_below'))}",
        )
    if metric is not None and threshold is not None:
        ceiling = _metric_ceiling(metric, log_base)
        if ceiling is not None and threshold >= ceiling[0]:
            errs.add(
                section.at("threshold"),
                f"{metric} never exceeds {ceiling[1]}, so a rule on {metric} > "
                f"{format_number(threshold)} can never fire",
            )
    if stream_pattern is not None and feature_pattern is not None and monitors_complete:
        selected = [
            monitor
            for monitor in monitors
            if globs_match(stream_pattern, feature_pattern, monitor.stream, monitor.feature)
        ]
        if not selected:
            errs.add(
                section.at("match"),
                f"selects no monitor (stream {show(stream_pattern)}, "
                f"feature {show(feature_pattern)})",
            )
        elif metric == "wasserstein" and all(m.type == "categorical" for m in selected):
            shown = ", ".join(f"{m.stream}/{m.feature}" for m in selected[:5])
            errs.add(
                section.at("match"),
                "wasserstein is defined for numeric features only, and this match selects "
                f"only categorical ones ({shown}{', ...' if len(selected) > 5 else ''})",
            )
        elif min_samples is not None and min_samples > 0:
            capacities = [
                m.window.samples if isinstance(m.window, SampleWindow) else None for m in selected
            ]
            if all(c is not None and c < min_samples for c in capacities):
                largest = max(c for c in capacities if c is not None)
                errs.add(
                    section.at("min_samples"),
                    f"every window this rule selects holds at most {largest} rows, "
                    f"so it could never reach {min_samples}",
                )
    if (
        len(errs) > errors_before
        or name is None
        or metric is None
        or threshold is None
        or stream_pattern is None
        or feature_pattern is None
    ):
        return None, name
    rule = AlertRule(
        name=name,
        stream_pattern=stream_pattern,
        feature_pattern=feature_pattern,
        metric=metric,
        threshold=threshold,
        for_s=for_s or 0.0,
        clear_below=clear_below,
        min_samples=min_samples or 0,
        max_p_value=max_p_value,
        keep_firing_for_s=keep_firing_for_s or 0.0,
        severity=severity or "warning",
        p_value_correction=correction or "none",
    )
    return rule, name


def _read_p_value(value: object, path: str, errs: Errors) -> float | None:
    number = float_reader()(value, path, errs)
    if number is not None and not 0.0 < number <= 1.0:
        errs.add(path, f"must be in (0, 1], got {show(value)}")
        return None
    return number
