"""``driftmon dashboard`` (docs/metrics.md, docs/cli.md) and the Grafana files in deploy/grafana/.

No Grafana runs here (none is packaged for this machine), so the dashboard is
checked from three sides instead:

- Grafana's own models (grafana-foundation-sdk) decode it back to the same
  JSON, and a schema check covers the fields Grafana needs to load it;
- every metric its PromQL names is one a live daemon exports, with the
  labels the PromQL matches on (``tests/harness.py``);
- with the real Prometheus scraping that daemon, every query of every panel,
  variable and annotation parses and returns series, with the template
  variables replaced as Grafana replaces them.

Thresholds are compared with the config's alert rules, and the committed
dashboard of the demo config with the command's output.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import stat as stat_models
from grafana_foundation_sdk.models import timeseries as timeseries_models
from harness import DaemonProcess, request, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from driftmon.config import Config, load_config, parse_config
from driftmon.tools.dashboard import (
    DIVERGENCE_METRICS,
    build_dashboard,
    dashboard_json,
    default_uid,
    panel_exprs,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "config" / "demo.yaml"
PACKAGED_DEMO_CONFIG = ROOT / "driftmon" / "data" / "demo.yaml"
GRAFANA = ROOT / "deploy" / "grafana"
DEMO_DASHBOARD = GRAFANA / "dashboards" / "driftmon-demo.json"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

METRIC_NAME = re.compile(r"driftmon_[a-z_]+")
SELECTOR = re.compile(r"(driftmon_[a-z_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|ignoring|on)\s*\(([^)]*)\)")
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time, not in /metrics

# The colours the module docstring promises: most severe rule wins.
SEVERITY_COLOURS = {"critical": ("red", 2), "page": ("red", 2), "warning": ("orange", 1)}


def severity_colour(severity: str) -> tuple[str, int]:
    return SEVERITY_COLOURS.get(severity.lower(), ("yellow", 0))


def load(config: Config, **kwargs: str) -> dict[str, Any]:
    return json.loads(dashboard_json(config, **kwargs))  # type: ignore[no-any-return]


def leaf_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that is not a row (rows here are open: their panels follow them)."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_of(dashboard: dict[str, Any], metric: str) -> dict[str, Any]:
    """The one panel whose queries name ``metric``."""
    matches = [
        panel
        for panel in leaf_panels(dashboard)
        if any(metric in METRIC_NAME.findall(t["expr"]) for t in panel.get("targets", []))
    ]
    assert len(matches) == 1, (metric, [p["title"] for p in matches])
    return matches[0]


def steps(panel: dict[str, Any]) -> list[tuple[float | None, str]]:
    thresholds = panel["fieldConfig"]["defaults"]["thresholds"]
    assert thresholds["mode"] == "absolute"
    return [(step["value"], step["color"]) for step in thresholds["steps"]]


def thresholds_style(panel: dict[str, Any]) -> str:
    return str(panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"])


def expected_lines(rules: list[dict[str, Any]], key: str) -> list[tuple[float, str]]:
    """Distinct values of ``key`` over ``rules``, each coloured by its most severe rule."""
    by_value: dict[float, tuple[str, int]] = {}
    for rule in rules:
        value = rule.get(key)
        if value is None or (key == "min_samples" and value == 0):
            continue
        colour = severity_colour(rule.get("severity", "warning"))
        if value not in by_value or colour[1] > by_value[value][1]:
            by_value[value] = colour
    return [(value, by_value[value][0]) for value in sorted(by_value)]


def config_from(document: dict[str, Any], tmp_path: Path, name: str = "drift.yaml") -> Config:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


# --- a config with rules on every metric -------------------------------------------------------

RICH_RULES: list[dict[str, Any]] = [
    {"name": "js-warn", "metric": "js", "threshold": 0.1, "severity": "warning"},
    {"name": "js-crit", "metric": "js", "threshold": 0.3, "severity": "critical", "for": "5m"},
    {"name": "js-info", "metric": "js", "threshold": 0.1, "severity": "info", "min_samples": 50},
    {"name": "kl", "metric": "kl", "threshold": 2, "severity": "ticket"},
    {"name": "kl-rev", "metric": "kl_reverse", "threshold": 1.5, "max_p_value": 0.01},
    {
        "name": "psi",
        "metric": "psi",
        "threshold": 0.25,
        "severity": "critical",
        "max_p_value": 0.001,
        "min_samples": 500,
        "match": {"stream": "credit", "feature": "income"},
    },
    {"name": "hell", "metric": "hellinger", "threshold": 0.4, "severity": "page"},
    {
        "name": "w1",
        "metric": "wasserstein",
        "threshold": 0.5,
        "match": {"stream": "credit", "feature": "income"},
    },
]


def rich_document(tmp_path: Path) -> dict[str, Any]:
    return {
        "engine": {"evaluate_every": "30s", "log_base": 2},
        "state": {"dir": str(tmp_path / "state"), "checkpoint_every": "2m"},
        "streams": [
            {
                "name": "credit",
                "reference": {"warmup": 1000},
                "features": [
                    {"name": "income", "type": "numeric", "bins": {"kind": "quantile", "count": 8}},
                    {"name": "region", "type": "categorical", "top_k": 4},
                ],
            }
        ],
        "alerts": RICH_RULES,
    }


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return load(load_config(DEMO_CONFIG))


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("rich")
    return load(config_from(rich_document(folder), folder))


# --- the JSON is a Grafana dashboard -----------------------------------------------------------


@pytest.mark.parametrize("which", ["demo", "rich"])
def test_grafana_models_decode_the_dashboard_back_to_the_same_json(
    which: str, request: pytest.FixtureRequest
) -> None:
    dashboard = request.getfixturevalue(which)
    register_default_plugins()
    model = dashboard_models.Dashboard.from_json(dashboard)
    assert json.loads(JSONEncoder().encode(model)) == dashboard
    # The panel plugins were found: options and queries decoded to their typed models, so the
    # round trip went through Grafana's schema and not through plain dictionaries.
    panels = [p for p in model.panels or [] if isinstance(p, dashboard_models.Panel)]
    kinds = {p.type_val: type(p.options) for p in panels}
    assert kinds["timeseries"] is timeseries_models.Options
    assert kinds["stat"] is stat_models.Options
    queries = [t for p in panels for t in p.targets or []]
    assert queries and all(isinstance(q, prometheus_models.Dataquery) for q in queries)


@pytest.mark.parametrize("which", ["demo", "rich"])
def test_the_fields_grafana_needs_are_there(which: str, request: pytest.FixtureRequest) -> None:
    dashboard = request.getfixturevalue(which)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert dashboard["schemaVersion"] == 41
    assert dashboard["time"] == {"from": "now-1h", "to": "now"}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "stream", "feature"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["stream"]["query"] == "label_values(driftmon_window_samples, stream)"
    assert (
        variables["feature"]["query"]
        == 'label_values(driftmon_window_samples{stream=~"$stream"}, feature)'
    )
    for name in ("stream", "feature"):
        assert variables[name]["type"] == "query"
        assert variables[name]["multi"] is True and variables[name]["includeAll"] is True
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}

    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells[(x, y)])
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            assert panel["panels"] == [] and grid["w"] == 24 and not panel["collapsed"]
            continue
        assert panel["title"] and panel["description"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        if panel["type"] == "text":
            assert panel["options"]["content"]
            continue
        targets = panel["targets"]
        assert targets and all(t["expr"].strip() for t in targets)
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids))
        assert all(t["datasource"]["uid"] == "${datasource}" for t in targets)
    types = {panel["type"] for panel in dashboard["panels"]}
    assert {"row", "timeseries", "stat", "state-timeline", "table", "text"} <= types
    annotations = dashboard["annotations"]["list"]
    assert annotations[0]["builtIn"] == 1
    assert [a["expr"] for a in annotations[1:]] == [
        'driftmon_alert_firing{stream=~"$stream", feature=~"$feature"} == 1'
    ]


def test_every_metric_family_has_its_row(demo: dict[str, Any]) -> None:
    rows = [panel["title"] for panel in demo["panels"] if panel["type"] == "row"]
    assert rows == [
        "Alerts",
        "Jensen-Shannon divergence",
        "KL divergence",
        "Population stability index",
        "Hellinger distance",
        "Wasserstein distance",
        "Significance and entropy",
        "Samples",
        "Ingest",
        "Daemon",
    ]
    named = {name for _where, expr in panel_exprs(demo) for name in METRIC_NAME.findall(expr)}
    assert (
        set(DIVERGENCE_METRICS.values())
        | {
            "driftmon_drift_p_value",
            "driftmon_stream_drift_p_value",
            "driftmon_stream_drifting_features",
            "driftmon_window_samples",
            "driftmon_reference_samples",
            "driftmon_alert_firing",
            "driftmon_ingest_values_total",
            "driftmon_ingest_requests_total",
            "driftmon_evaluation_duration_seconds_bucket",
            "driftmon_last_evaluation_timestamp_seconds",
        }
        <= named
    )
    timeline = [p for p in leaf_panels(demo) if p["type"] == "state-timeline"]
    assert [t["expr"] for p in timeline for t in p["targets"]] == [
        'driftmon_alert_firing{stream=~"$stream", feature=~"$feature"}'
    ]


# --- thresholds are the config's ---------------------------------------------------------------


def test_divergence_thresholds_are_the_rules_thresholds_dashed(rich: dict[str, Any]) -> None:
    for metric, family in DIVERGENCE_METRICS.items():
        panel = panel_of(rich, family)
        rules = [rule for rule in RICH_RULES if rule["metric"] == metric]
        assert steps(panel) == [(None, "green"), *expected_lines(rules, "threshold")], metric
        assert thresholds_style(panel) == "dashed"
        for rule in rules:
            assert rule["name"] in panel["description"]
    js = panel_of(rich, "driftmon_js_divergence")
    # Two rules at 0.1 (warning and info) merge into one orange line; critical is red.
    assert steps(js) == [(None, "green"), (0.1, "orange"), (0.3, "red")]
    assert "In bits." in js["description"]  # engine.log_base: 2


def test_p_value_and_samples_panels_draw_max_p_value_and_min_samples(
    rich: dict[str, Any],
) -> None:
    p_value = panel_of(rich, "driftmon_drift_p_value")
    # psi (critical) and kl-rev (no severity: warning).
    assert steps(p_value) == [(None, "green"), (0.001, "red"), (0.01, "orange")]
    assert p_value["fieldConfig"]["defaults"]["custom"]["scaleDistribution"]["type"] == "log"
    window = panel_of(rich, "driftmon_window_samples")
    assert steps(window) == [(None, "green"), (50, "yellow"), (500, "red")]
    assert thresholds_style(window) == "dashed"


def test_panels_without_rules_draw_no_threshold(demo: dict[str, Any]) -> None:
    demo_config = yaml.safe_load(DEMO_CONFIG.read_text())
    for metric, family in DIVERGENCE_METRICS.items():
        panel = panel_of(demo, family)
        rules = [rule for rule in demo_config["alerts"] if rule["metric"] == metric]
        assert steps(panel) == [(None, "green"), *expected_lines(rules, "threshold")]
        assert thresholds_style(panel) == ("dashed" if rules else "off")
    assert steps(panel_of(demo, "driftmon_kl_divergence")) == [(None, "green")]
    assert steps(panel_of(demo, "driftmon_js_divergence")) == [(None, "green"), (0.1, "orange")]


METRIC_CEILINGS = {"js": math.log(2), "hellinger": 1.0}

rule_strategy = st.fixed_dictionaries(
    {
        "metric": st.sampled_from(list(DIVERGENCE_METRICS)),
        "fraction": st.floats(0, 0.999, allow_nan=False),
        "severity": st.sampled_from(["warning", "critical", "info", "page", "Warning"]),
        "min_samples": st.integers(0, 3),
        "max_p_value": st.none() | st.sampled_from([0.05, 0.01, 1e-3]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rule_strategy, min_size=0, max_size=8))
def test_thresholds_follow_any_rule_set(specs: list[dict[str, Any]]) -> None:
    rules = []
    for i, spec in enumerate(specs):
        # Thresholds on a coarse grid so that rules often share one, under each metric's ceiling.
        ceiling = METRIC_CEILINGS.get(spec["metric"], 4.0)
        threshold = round(spec["fraction"] * ceiling, 1)
        rule = {
            "name": f"rule-{i}",
            "metric": spec["metric"],
            "threshold": threshold if threshold < ceiling else 0.0,
            "severity": spec["severity"],
            "min_samples": spec["min_samples"] * 100,
        }
        if spec["max_p_value"] is not None:
            rule["max_p_value"] = spec["max_p_value"]
        rules.append(rule)
    document = {
        "streams": [
            {
                "name": "s",
                "reference": {"warmup": 10},
                "features": [
                    {
                        "name": "x",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 4},
                    },
                ],
            }
        ],
        "alerts": rules,
    }
    dashboard = json.loads(dashboard_json(parse_config(document, base_dir=ROOT)))
    for metric, family in DIVERGENCE_METRICS.items():
        on_metric = [rule for rule in rules if rule["metric"] == metric]
        panel = panel_of(dashboard, family)
        assert steps(panel) == [(None, "green"), *expected_lines(on_metric, "threshold")]
        assert thresholds_style(panel) == ("dashed" if on_metric else "off")
    assert steps(panel_of(dashboard, "driftmon_drift_p_value"))[1:] == expected_lines(
        rules, "max_p_value"
    )
    assert steps(panel_of(dashboard, "driftmon_window_samples"))[1:] == expected_lines(
        rules, "min_samples"
    )


# --- what the config switches on and off -------------------------------------------------------


def test_rows_follow_the_config(tmp_path: Path) -> None:
    document = {
        "engine": {"evaluate_every": "2m"},
        "streams": [
            {
                "name": "shop",
                "reference": {"file": str(ROOT / "config" / "data" / "shop_reference.ndjson")},
                "features": [{"name": "device", "type": "categorical", "top_k": 3}],
            }
        ],
    }
    dashboard = load(config_from(document, tmp_path, "categorical only.yaml"))
    titles = [panel["title"] for panel in dashboard["panels"]]
    # No numeric feature: no Wasserstein row; no warmup: no warmup panel; no state.dir: no
    # checkpoint panel; no rules: the rule table says so.
    assert "Wasserstein distance" not in titles
    assert "Warmup rows collected" not in titles
    assert "Last checkpoint age" not in titles
    text = next(p for p in dashboard["panels"] if p["type"] == "text")
    assert "no alert rules" in text["options"]["content"]
    assert dashboard["uid"] == "driftmon-categorical-only"
    assert dashboard["refresh"] == "5m"
    age = next(p for p in dashboard["panels"] if p["title"] == "Last evaluation age")
    assert steps(age) == [(None, "green"), (240, "orange"), (600, "red")]


def test_rich_config_panels(rich: dict[str, Any]) -> None:
    titles = [panel["title"] for panel in rich["panels"]]
    assert "Warmup rows collected" in titles and "Last checkpoint age" in titles
    checkpoint = next(p for p in rich["panels"] if p["title"] == "Last checkpoint age")
    assert steps(checkpoint) == [(None, "green"), (240, "orange"), (600, "red")]
    assert rich["refresh"] == "30s"
    text = next(p for p in rich["panels"] if p["type"] == "text")["options"]["content"]
    assert "| `psi` | psi > 0.25 and p_value < 0.001 | 0s | 0.25 | 500 | 0s | critical |" in text
    assert "| `js-crit` | js > 0.3 | 5m |" in text
    entropy = panel_of(rich, "driftmon_entropy")
    assert "bits" in entropy["description"]


def test_uid_and_title(tmp_path: Path) -> None:
    config = load_config(DEMO_CONFIG)
    assert default_uid(config) == "driftmon-demo"
    assert build_dashboard(config).title == "driftmon: demo"
    custom = load(config, uid="prod_drift-1", title="Production drift")
    assert (custom["uid"], custom["title"]) == ("prod_drift-1", "Production drift")
    for bad in ("", "has space", "x" * 41, "é"):
        with pytest.raises(ValueError, match="uid"):
            build_dashboard(config, uid=bad)
    odd_name = config_from(rich_document(tmp_path), tmp_path, "Prod config (v2)!.yaml")
    assert default_uid(odd_name) == "driftmon-Prod-config-v2"
    long_name = config_from(rich_document(tmp_path), tmp_path, "a" * 60 + ".yml")
    assert default_uid(long_name) == "driftmon-" + "a" * 31
    in_memory = parse_config(rich_document(tmp_path), base_dir=tmp_path)
    assert (default_uid(in_memory), build_dashboard(in_memory).title) == ("driftmon", "driftmon")


def test_output_does_not_depend_on_where_the_config_is(tmp_path: Path) -> None:
    # The packaged copy of the demo config (what `driftmon demo` and docker-compose run) sits
    # elsewhere and names its reference file differently: the same dashboard.
    assert dashboard_json(load_config(PACKAGED_DEMO_CONFIG)) == dashboard_json(
        load_config(DEMO_CONFIG)
    )


# --- the committed files -----------------------------------------------------------------------


def test_committed_demo_dashboard_is_up_to_date(tmp_path: Path) -> None:
    """deploy/grafana/dashboards/driftmon-demo.json is what the command prints, byte for byte.

    Regenerate with ``driftmon dashboard -c config/demo.yaml >
    deploy/grafana/dashboards/driftmon-demo.json``.
    """
    result = subprocess.run(
        [sys.executable, "-m", "driftmon", "dashboard", "-c", str(DEMO_CONFIG)],
        capture_output=True,
        text=True,
        check=False,
        # Any folder but the checkout's: the output must not depend on where it runs. Not the
        # checkout's parent, which may hold folders of its own named driftmon.
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == DEMO_DASHBOARD.read_text(), (
        "deploy/grafana/dashboards/driftmon-demo.json is stale: regenerate it with "
        "`driftmon dashboard -c config/demo.yaml > deploy/grafana/dashboards/driftmon-demo.json`"
    )


def test_cli_errors() -> None:
    bad_uid = subprocess.run(
        [sys.executable, "-m", "driftmon", "dashboard", "-c", str(DEMO_CONFIG), "--uid", "a b"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (bad_uid.returncode, bad_uid.stdout) == (2, "")
    assert "uid" in bad_uid.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "driftmon", "dashboard", "-c", "/nonexistent/driftmon.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "cannot read" in missing.stderr


def test_provisioning_files_parse_and_point_at_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["access"] == "proxy"
    url = urllib.parse.urlsplit(source["url"])
    assert url.scheme == "http" and url.hostname and url.port

    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/driftmon.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    dashboards_path = provider["options"]["path"]
    assert dashboards_path.startswith("/")
    assert sorted(p.name for p in (GRAFANA / "dashboards").iterdir()) == ["driftmon-demo.json"]
    assert json.loads(DEMO_DASHBOARD.read_text())["uid"] == "driftmon-demo"

    if not COMPOSE.exists():
        pytest.skip("deploy/docker-compose.yml is not in this checkout")
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        host, container = volume.split(":")[:2]
        mounts[container] = (COMPOSE.parent / host).resolve()
    # Grafana reads provisioning from /etc/grafana/provisioning; the provider's path must be
    # where compose mounts deploy/grafana/dashboards, and the data source host a service.
    assert mounts["/etc/grafana/provisioning/datasources"] == GRAFANA / "provisioning/datasources"
    assert mounts["/etc/grafana/provisioning/dashboards"] == GRAFANA / "provisioning/dashboards"
    assert mounts[dashboards_path] == GRAFANA / "dashboards"
    assert url.hostname in compose["services"]
    prometheus = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "driftmon"]
    scrape = job.get("scrape_interval", prometheus["global"]["scrape_interval"])
    assert source["jsonData"]["timeInterval"] == scrape


# --- against a live daemon and a real Prometheus ------------------------------------------------


def live_document(state_dir: Path) -> dict[str, Any]:
    """The demo config, evaluating and checkpointing fast, with its reference path absolute."""
    document = yaml.safe_load(DEMO_CONFIG.read_text())
    document["engine"]["evaluate_every"] = "200ms"
    document["state"] = {"dir": str(state_dir), "checkpoint_every": "300ms"}
    shop = next(s for s in document["streams"] if s["name"] == "shop")
    shop["reference"]["file"] = str(DEMO_CONFIG.parent / shop["reference"]["file"])
    return document


def drifted_shop_rows(n: int) -> list[dict[str, Any]]:
    """Shop rows far from the reference (every device android), with some bad values."""
    rows: list[dict[str, Any]] = [
        {"basket_value": 400.0 + i, "items": 19, "device": "android", "country": "XX"}
        for i in range(n)
    ]
    rows[0] = {"basket_value": None, "items": "many", "device": 3.5, "coupon": "SPRING"}
    rows[1] = {"items": 1, "device": "web"}  # basket_value and country missing
    return rows


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Config]]:
    """A daemon on the live demo config, fed until every metric family has series."""
    folder = tmp_path_factory.mktemp("live")
    config_path = folder / "live-demo.yaml"
    config_path.write_text(yaml.safe_dump(live_document(folder / "state")))
    with DaemonProcess(config_path) as daemon:
        reply = daemon.post_json("shop", json.dumps(drifted_shop_rows(200)).encode())
        assert reply.status == 200, reply.body
        fraud = [{"score": 0.05 * (i % 20), "decision": "approve"} for i in range(50)]
        reply = daemon.post_json("fraud-model", json.dumps(fraud).encode())
        assert reply.status == 200, reply.body

        def fed() -> bool:
            samples = exported(daemon)
            names = {name for name, _labels, _value in samples}
            return (
                "driftmon_checkpoint_last_success_timestamp_seconds" in names
                and "driftmon_wasserstein_distance" in names
                and any(v == 1 for n, _, v in samples if n == "driftmon_alert_firing")
            )

        wait_for(fed, 60, "divergences, a firing alert and a checkpoint")
        yield daemon, load_config(config_path)


def exported(daemon: DaemonProcess) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the daemon's /metrics as scraped: ``(name, labels, value)``."""
    reply = daemon.get("/metrics")
    assert reply.status == 200
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    ]


def test_every_promql_metric_is_exported_by_the_live_daemon(
    live: tuple[DaemonProcess, Config],
) -> None:
    daemon, config = live
    labels_of: dict[str, set[str]] = {}
    for name, labels, _value in exported(daemon):
        labels_of.setdefault(name, set()).update(labels)
    dashboards = [load(config), load(load_config(DEMO_CONFIG))]
    checked = set()
    for dashboard in dashboards:
        for where, expr in panel_exprs(dashboard):
            # Every sample name as Prometheus stores it: counters with _total, histograms as
            # _bucket/_sum/_count; a family name alone would have no series.
            names = METRIC_NAME.findall(expr)
            assert names, (where, expr)
            for name in names:
                assert name in labels_of, f"{where}: {name} is not exported ({expr})"
                checked.add(name)
            for name, matchers in SELECTOR.findall(expr):
                for label in MATCHER_LABEL.findall(matchers):
                    assert label in labels_of[name], f"{where}: {name} has no label {label}"
            carried = set().union(*(labels_of[name] for name in names)) | TARGET_LABELS
            for grouping in GROUPING.findall(expr):
                for label in filter(None, (part.strip() for part in grouping.split(","))):
                    assert label in carried, f"{where}: no metric of {expr} has label {label}"
    # The daemon's config turns on the checkpoint panel; the demo's warmup stream the warmup one.
    assert {
        "driftmon_checkpoint_last_success_timestamp_seconds",
        "driftmon_warmup_rows",
        "driftmon_evaluation_duration_seconds_bucket",
        "driftmon_ingest_unknown_fields_total",
    } <= checked


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None
)


@pytest.fixture(scope="module")
def prometheus(
    live: tuple[DaemonProcess, Config], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real Prometheus scraping the live daemon every second; yields its URL."""
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed, and CI must run this test")
        pytest.skip("prometheus is not installed (Debian package `prometheus`)")
    daemon, _config = live
    folder = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlsplit(daemon.url).netloc
    scrape = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "driftmon", "static_configs": [{"targets": [target]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    "prometheus exited:\n" + (folder / "prometheus.log").read_text()
                )
            try:
                return request("GET", url + "/-/ready").status == 200
            except OSError:
                return False

        wait_for(ready, 60, "prometheus /-/ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        log.close()


def as_grafana_sends(expr: str) -> str:
    """``expr`` with the template variables replaced as Grafana does for All and 1 s scrapes."""
    return (
        expr.replace("$__rate_interval", "4s")
        .replace('"$stream"', '".+"')
        .replace('"$feature"', '".+"')
    )


def instant_query(url: str, expr: str) -> tuple[int, dict[str, Any]]:
    reply = request("GET", url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return reply.status, reply.json()


def test_every_query_returns_series_from_a_real_prometheus(
    live: tuple[DaemonProcess, Config], prometheus: str
) -> None:
    _daemon, config = live
    queries = {as_grafana_sends(expr): where for where, expr in panel_exprs(load(config))}
    assert not [q for q in queries if "$" in q], "a template variable was left unreplaced"

    def empty() -> list[str]:
        missing = []
        for query, where in queries.items():
            status, body = instant_query(prometheus, query)
            assert status == 200 and body["status"] == "success", (where, query, body)
            if not body["data"]["result"]:
                missing.append(f"{where}: {query}")
        return missing

    # Rates need two scrapes inside their window: poll until every query has its series.
    last: list[list[str]] = []

    def all_have_series() -> bool:
        last.append(empty())
        return not last[-1]

    try:
        wait_for(all_have_series, 60, "every dashboard query to return series")
    except AssertionError:
        raise AssertionError("queries without series:\n" + "\n".join(last[-1])) from None


def test_panels_link_to_the_daemons_pages(tmp_path: Path) -> None:
    """Every panel links to the overview; every per-monitor series to its monitor's page."""
    document = yaml.safe_load(PACKAGED_DEMO_CONFIG.read_text())
    document["server"]["external_url"] = "https://drift.example/"
    reference = PACKAGED_DEMO_CONFIG.parent / "shop_reference.ndjson"
    (tmp_path / reference.name).write_text(reference.read_text())
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(document))
    dashboard = load(load_config(tmp_path / "demo.yaml"))
    per_monitor = 0
    for panel in leaf_panels(dashboard):
        assert [link["url"] for link in panel["links"]] == ["https://drift.example/"]
        exprs = " ".join(target.get("expr", "") for target in panel.get("targets", []))
        data_links = panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        if "$feature" in exprs and panel["type"] != "text":
            per_monitor += 1
            assert [link["url"] for link in data_links] == [
                "https://drift.example/monitors?stream=${__field.labels.stream:percentencode}"
                "&feature=${__field.labels.feature:percentencode}"
            ], panel["title"]
        else:
            assert data_links == [], panel["title"]
    assert per_monitor >= 8
