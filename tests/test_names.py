"""The one metric table agrees with the kernels, the config's types and its readers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import pytest

from driftmon.config import ALERT_METRICS, AlertMetric, ConfigError, parse_config
from driftmon.divergence import METRICS as KERNEL_ROWS
from driftmon.evaluation import ALL_METRICS
from driftmon.exporter import DIVERGENCE_FAMILIES
from driftmon.names import MONITOR_METRIC, MONITOR_METRICS
from driftmon.tools.replay import RECORD_KEYS


def test_kernel_rows_name_the_kernel_output_rows() -> None:
    for metric in MONITOR_METRICS:
        if metric.kernel_row is not None:
            assert KERNEL_ROWS[metric.kernel_row] == metric.name
        else:
            assert metric.name in ALL_METRICS and metric.name not in KERNEL_ROWS


def test_alert_metrics_are_the_typed_literal() -> None:
    assert tuple(get_args(AlertMetric)) == ALERT_METRICS
    assert ALERT_METRICS == tuple(m.name for m in MONITOR_METRICS if m.alertable)


def test_every_table_entry_is_exported_and_replayed_in_order() -> None:
    assert [(m.name, m.series, m.help) for m in MONITOR_METRICS] == list(DIVERGENCE_FAMILIES)
    names = [m.name for m in MONITOR_METRICS]
    start = RECORD_KEYS.index(names[0])
    assert list(RECORD_KEYS[start : start + len(names)]) == names


@pytest.mark.parametrize("log_base", ["e", "2"])
def test_the_config_refuses_thresholds_at_a_table_ceiling(log_base: str) -> None:
    for metric in MONITOR_METRICS:
        ceiling = metric.ceiling_for(log_base)
        if not metric.alertable or not math.isfinite(ceiling):
            continue
        document = {
            "engine": {"log_base": log_base},
            "streams": [
                {
                    "name": "s",
                    "reference": {"warmup": 10},
                    "features": [
                        {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 4}}
                    ],
                }
            ],
            "alerts": [{"name": "a", "metric": metric.name, "threshold": ceiling}],
        }
        with pytest.raises(ConfigError, match="can never fire"):
            parse_config(document, base_dir=Path("."))
        document["alerts"] = [{"name": "a", "metric": metric.name, "threshold": ceiling * 0.99}]
        parse_config(document, base_dir=Path("."))
    assert MONITOR_METRIC["js"].ceiling_for("2") == pytest.approx(1.0)
