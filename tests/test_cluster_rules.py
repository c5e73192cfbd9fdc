"""``driftmon rules`` and ``driftmon dashboard`` in shared mode: alerts keep their identity
across a leader change (checked by the real promtool)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from test_rules import run_promtool

from driftmon.config import parse_config
from driftmon.dashboard import dashboard_json, panel_exprs
from driftmon.rules import render_rules, rules_document


def _config(tmp_path: Path, mode: str) -> object:
    reference = tmp_path / "r.csv"
    reference.write_text("income\n1\n2\n")
    return parse_config(
        {
            "streams": [
                {
                    "name": "credit",
                    "reference": {"file": str(reference)},
                    "features": [
                        {"name": "income", "type": "numeric",
                         "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5}}
                    ],
                }
            ],
            "alerts": [
                {"name": "js-high", "match": {"stream": "*", "feature": "*"}, "metric": "js",
                 "threshold": 0.1, "for": "5m", "min_samples": 10, "max_p_value": 0.01}
            ],
            "cluster": {"mode": mode},
        },
        base_dir=tmp_path,
    )


def _series(name: str, pod: str, values: str) -> dict[str, str]:
    labels = f'job="driftmon",instance="{pod}:9108",pod="{pod}",stream="credit",feature="income"'
    return {"series": f"{name}{{{labels}}}", "values": values}


def test_a_leader_change_keeps_the_alert_pending_and_then_firing(tmp_path: Path) -> None:
    config = _config(tmp_path, "shared")
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(config))  # type: ignore[arg-type]
    assert "max without (instance, pod) (driftmon_js_divergence)" in rules.read_text()
    checked = run_promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Replica a leads until 4m and dies (its series go stale); replica b leads from 4m on.
    series = []
    for name, value in (
        ("driftmon_js_divergence", "0.5"),
        ("driftmon_window_samples", "100"),
        ("driftmon_drift_p_value", "0.0001"),
    ):
        series.append(_series(name, "a", f"{value}x4 stale"))
        series.append(_series(name, "b", f"_x3 {value}x8"))
    labels = {"job": "driftmon", "stream": "credit", "feature": "income",
              "rule": "js-high", "severity": "warning"}
    rule = rules_document(config)["groups"][0]["rules"][0]  # type: ignore[arg-type]
    annotations = {  # the rule's templates, filled in for this series and value
        name: re.sub(
            r"\{\{ \$labels\.(\w+)(?: \| urlquery)? \}\}",
            lambda m: labels[m.group(1)],
            text.replace("{{ $value }}", "0.5"),
        )
        for name, text in rule["annotations"].items()
    }
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "DriftmonJsHigh", "exp_alerts": []},
                    # for: 5m counted from 0m, across the change of leader at 4m.
                    {"eval_time": "6m", "alertname": "DriftmonJsHigh",
                     "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]},
                ],
            }
        ],
    }
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(tests))
    result = run_promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_single_node_rules_and_dashboards_do_not_aggregate(tmp_path: Path) -> None:
    config = _config(tmp_path, "off")
    assert "max without" not in render_rules(config)  # type: ignore[arg-type]
    exprs = panel_exprs(json.loads(dashboard_json(config)))  # type: ignore[arg-type]
    assert not any("max without" in expr for _, expr in exprs)


def test_shared_mode_dashboards_draw_one_line_per_monitor(tmp_path: Path) -> None:
    config = _config(tmp_path, "shared")
    exprs = panel_exprs(json.loads(dashboard_json(config)))  # type: ignore[arg-type]
    names = ("driftmon_js_divergence", "driftmon_alert_firing", "driftmon_window_samples")
    per_monitor = [
        expr
        for where, expr in exprs
        if not where.startswith("variable") and any(name in expr for name in names)
    ]
    assert len(per_monitor) >= 5
    for expr in per_monitor:
        assert "max without (instance, pod) (" in expr, expr
