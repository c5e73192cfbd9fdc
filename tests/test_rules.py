"""``driftmon rules`` (docs/divergences.md): Prometheus rules equivalent to the config's alerts.

The rule files are checked by the real ``promtool``. The equivalence is checked with a
``promtool test rules`` file generated here from a config: every rule kind gets series
(metric, window samples, p-value) over a dozen one-minute evaluations, and the alerts
expected at each evaluation come from driftmon's own state machine
(:func:`driftmon.alerting.advance`) run over the same values. Prometheus must then raise
exactly those alerts, with the labels and expanded annotations the rule file promises; a
deliberately wrong expectation must make ``promtool`` fail.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.alerting import AlertState, AlertTable, RuleParams, advance
from driftmon.config import AlertRule, Config, load_config, match_monitors
from driftmon.tools.rules import (
    METRIC_SERIES,
    P_VALUE_SERIES,
    SAMPLES_SERIES,
    alert_name,
    alert_names,
    glob_regex,
    prometheus_duration,
    promql_string,
    render_rules,
    rules_document,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIGS = sorted((REPO / "config").glob("*.yaml"))
STEP_S = 60.0
SCRAPE_LABELS = {"job": "driftmon", "instance": "127.0.0.1:9108"}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


def promtool() -> str:
    """The ``promtool`` binary; skips when it is absent outside CI (in CI it must be there)."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed, and CI is set: .ci/run installs it")
        pytest.skip("promtool is not installed (Debian package prometheus); CI runs this test")
    return path


def run_promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- names, globs, durations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_name", "expected"),
    [
        ("js-high", "DriftmonJsHigh"),
        ("psi significant", "DriftmonPsiSignificant"),
        ("basketShift", "DriftmonBasketShift"),
        ("3-sigma", "Driftmon3Sigma"),
        ("ünïcode", "DriftmonNCode"),
        ("---", "Driftmon"),
    ],
)
def test_alert_name(rule_name: str, expected: str) -> None:
    assert alert_name(rule_name) == expected


def test_alert_names_deduplicate_in_config_order() -> None:
    rules = [
        AlertRule(name=n, stream_pattern="*", feature_pattern="*", metric="js", threshold=0.1)
        for n in ("js-high", "js_high", "JS high", "js-high-2", "DriftmonJsHigh_2")
    ]
    assert alert_names(rules) == {
        "js-high": "DriftmonJsHigh",
        "js_high": "DriftmonJsHigh_2",
        "JS high": "DriftmonJSHigh",
        "js-high-2": "DriftmonJsHigh2",
        "DriftmonJsHigh_2": "DriftmonDriftmonJsHigh2",
    }
    with pytest.raises(ValueError, match="'js-high' appears twice"):
        alert_names([rules[0], rules[0]])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), unique=True, max_size=12))
def test_alert_names_are_valid_and_distinct(names: list[str]) -> None:
    rules = [
        AlertRule(name=n, stream_pattern="*", feature_pattern="*", metric="js", threshold=0.1)
        for n in names
    ]
    alerts = alert_names(rules)
    assert list(alerts) == names
    assert len(set(alerts.values())) == len(names)
    assert all(METRIC_NAME.match(alert) for alert in alerts.values())


GLOB_CHARS = "ab-.!*?[]\\^$(){}|+ é"


@settings(max_examples=500, deadline=None)
@given(st.text(GLOB_CHARS, max_size=10), st.text("ab-.!*?[]\\^$ é", max_size=8))
def test_glob_regex_matches_what_fnmatch_matches(pattern: str, name: str) -> None:
    # The regexes use only what RE2 and Python's re read alike, so re stands in for Prometheus
    # here; the promtool tests below run some of them through the real RE2.
    regex = glob_regex(pattern)
    assert (re.fullmatch(regex, name) is not None) == fnmatch.fnmatchcase(name, pattern)


@pytest.mark.parametrize(
    ("pattern", "regex"),
    [
        ("*", ".*"),
        ("**", ".*"),
        ("credit", "credit"),
        ("a.b", "a\\.b"),
        ("f?", "f."),
        ("[ab]*", "[ab].*"),
        ("[!a-c]x", "[^a-c]x"),
        ("[z-a]", "[^\\s\\S]"),
        ("[!z-a]", "[\\s\\S]"),
        ("[oops", "\\[oops"),
        ("a\\b", "a\\\\b"),
    ],
)
def test_glob_regex_examples(pattern: str, regex: str) -> None:
    assert glob_regex(pattern) == regex


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.0004, "0s"),
        (0.5, "500ms"),
        (15.0, "15s"),
        (90.0, "1m30s"),
        (5400.0, "1h30m"),
        (7 * 86400.0 + 1.25, "7d1s250ms"),
    ],
)
def test_prometheus_duration(seconds: float, text: str) -> None:
    assert prometheus_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan"), 1e20])
def test_prometheus_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        prometheus_duration(seconds)


def test_metric_series_are_the_exported_families() -> None:
    from driftmon.config import ALERT_METRICS
    from driftmon.exporter import DIVERGENCE_FAMILIES

    exported = {value: metric for value, metric, _help in DIVERGENCE_FAMILIES}
    assert set(METRIC_SERIES) == set(ALERT_METRICS)
    assert all(exported[name] == series for name, series in METRIC_SERIES.items())
    assert exported["p_value"] == P_VALUE_SERIES


# --- promtool check rules ------------------------------------------------------------------


@pytest.mark.parametrize("config_path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_cli_output_passes_promtool_check_rules(config_path: Path) -> None:
    # As a user would: `driftmon rules -c FILE | promtool check rules /dev/stdin`.
    config = load_config(config_path)
    with (
        subprocess.Popen(
            [sys.executable, "-m", "driftmon", "rules", "-c", str(config_path)],
            stdout=subprocess.PIPE,
        ) as rules,
        subprocess.Popen(
            [promtool(), "check", "rules", "/dev/stdin"],
            stdin=rules.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as check,
    ):
        assert rules.stdout is not None
        rules.stdout.close()
        output, _ = check.communicate(timeout=60)
        assert rules.wait(60) == 0
    assert check.returncode == 0, output
    assert f"SUCCESS: {len(config.alerts)} rules found" in output


def test_cli_rules_on_a_bad_config_exits_1_like_check(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "streams:\n"
        "  - name: s\n"
        "    reference: {warmup: 10}\n"
        "    features: [{name: x, type: numeric, bins: {kind: uniform, lo: 0, hi: 1, count: 0}}]\n"
        "alerts:\n"
        "  - {name: a, metric: jss, threshold: 0.1}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "driftmon", "rules", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    errors = done.stderr.splitlines()
    assert any("streams[0].features[0].bins.count" in line for line in errors), errors
    assert any("alerts[0].metric" in line for line in errors), errors


def test_config_without_alerts_gives_an_empty_group(tmp_path: Path) -> None:
    path = tmp_path / "quiet.yaml"
    path.write_text(
        "streams:\n"
        "  - name: s\n"
        "    reference: {warmup: 10}\n"
        "    features: [{name: x, type: categorical, categories: [a]}]\n"
    )
    text = render_rules(load_config(path))
    assert yaml.safe_load(text) == {"groups": [{"name": "driftmon", "rules": []}]}
    (tmp_path / "rules.yml").write_text(text)
    done = run_promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_file_shape_for_the_demo_config() -> None:
    config = load_config(REPO / "config" / "demo.yaml")
    document = rules_document(config)
    [group] = document["groups"]
    assert group["name"] == "driftmon"
    by_rule = {entry["labels"]["rule"]: entry for entry in group["rules"]}
    psi = by_rule["psi-significant"]
    assert psi["alert"] == "DriftmonPsiSignificant"
    assert psi["for"] == "10s"
    assert psi["keep_firing_for"] == "30s"
    assert psi["labels"] == {"severity": "critical", "rule": "psi-significant"}
    assert 'driftmon_psi{stream="shop"} > 0.2' in psi["expr"]
    assert 'and on(stream, feature) (driftmon_window_samples{stream="shop"} >= 100)' in psi["expr"]
    # The demo's rule is Holm-corrected: it gates on the daemon's corrected p-value.
    assert (
        'and on(stream, feature) (driftmon_alert_p_value{rule="psi-significant", stream="shop"}'
        " < 0.001)" in psi["expr"]
    )
    js = by_rule["js-high"]
    assert "keep_firing_for" not in js
    assert 'ALERTS{alertname="DriftmonJsHigh", alertstate="firing"}' in js["expr"]
    assert "driftmon_js_divergence > 0.08" in js["expr"]
    assert "{{ $value }}" in js["annotations"]["summary"]
    assert js["annotations"]["driftmon_url"] == (
        "http://127.0.0.1:9108/monitors?stream={{ $labels.stream | urlquery }}"
        "&feature={{ $labels.feature | urlquery }}"
    )
    assert "driftmon_js_divergence" in js["annotations"]["summary"]
    basket = by_rule["basket-shift"]
    # No clear_below: no hysteresis term.
    assert "> 0.25 and on" not in basket["expr"]
    assert 'feature="basket_value"' in basket["expr"]


# --- promtool test rules, generated from a config ------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One alert rule, the monitors it should and should not select, and their series.

    ``values[i]``, ``p_values[i]``, ``samples[i]`` are the series at evaluation ``i``
    (one per minute), the same for every monitor of the scenario. ``exercises`` names
    what the expected alert states must show at least once (checked, so a scenario
    cannot silently stop testing what it is for).
    """

    rule: dict[str, Any]
    monitors: tuple[tuple[str, str], ...]
    decoys: tuple[tuple[str, str], ...]
    values: tuple[float, ...]
    exercises: tuple[str, ...]
    p_values: tuple[float, ...] | None = None
    samples: tuple[int, ...] | None = None


N_STEPS = 12
PLENTY = 10_000

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        # `for` not yet met: pending twice, dropped, then fires on the third evaluation over.
        rule={
            "name": "js-high",
            "metric": "js",
            "threshold": 0.1,
            "for": "2m",
            "match": {"stream": "js", "feature": "x"},
        },
        monitors=(("js", "x"),),
        decoys=(("js2", "x"),),
        values=(0.05, 0.2, 0.2, 0.05, 0.2, 0.2, 0.2, 0.25, 0.1, 0.05, 0.2, 0.05),
        exercises=("pending-dropped", "fires", "resolves"),
    ),
    Scenario(
        # Hysteresis: between clear_below and threshold keeps firing, at clear_below clears,
        # and does not start an inactive alert.
        rule={
            "name": "psi-hysteresis",
            "metric": "psi",
            "threshold": 0.2,
            "clear_below": 0.1,
            "match": {"stream": "psi", "feature": "*"},
        },
        monitors=(("psi", "x"), ("psi", "cat")),
        decoys=(("psi-other", "x"),),
        values=(0.05, 0.3, 0.15, 0.15, 0.25, 0.15, 0.1, 0.15, 0.3, 0.11, 0.05, 0.15),
        exercises=("fires", "held-by-hysteresis", "resolves", "between-stays-inactive"),
    ),
    Scenario(
        # keep_firing_for: stays firing 3m after the condition clears; a return over the
        # threshold in the meantime cancels the countdown.
        rule={
            "name": "kl-keep",
            "metric": "kl",
            "threshold": 0.5,
            "for": "1m",
            "keep_firing_for": "3m",
            "match": {"stream": "kl", "feature": "x"},
        },
        monitors=(("kl", "x"),),
        decoys=(),
        values=(0.1, 0.8, 0.8, 0.2, 0.2, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2),
        exercises=("fires", "kept-firing", "resolves"),
    ),
    Scenario(
        # min_samples: no verdict below it (nothing starts; a firing alert is held).
        rule={
            "name": "kl-reverse-samples",
            "metric": "kl_reverse",
            "threshold": 0.3,
            "min_samples": 100,
            "match": {"stream": "klr", "feature": "x"},
        },
        monitors=(("klr", "x"),),
        decoys=(),
        values=(0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.9, 0.9, 0.1),
        samples=(50, 99, 100, 50, 40, 150, 50, 30, 100, 99, 500, 500),
        exercises=("fires", "held-below-min-samples", "resolves", "gated-by-min-samples"),
    ),
    Scenario(
        # max_p_value: a large divergence that is not significant does not fire, and a firing
        # alert clears when the p-value rises to the limit.
        rule={
            "name": "hellinger-p",
            "metric": "hellinger",
            "threshold": 0.2,
            "max_p_value": 0.01,
            "severity": "critical",
            "match": {"stream": "hel", "feature": "x"},
        },
        monitors=(("hel", "x"),),
        decoys=(),
        values=(0.5, 0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5),
        p_values=(0.5, 0.001, 0.005, 0.01, 0.001, 0.009, 0.2, 0.0, 0.0, 0.05, 1.0, 0.002),
        exercises=("fires", "gated-by-p-value", "resolves"),
    ),
    Scenario(
        # Everything at once, on a glob with a class, a "?" and a literal ".".
        rule={
            "name": "wasserstein all",
            "metric": "wasserstein",
            "threshold": 0.25,
            "clear_below": 0.2,
            "for": "1m",
            "keep_firing_for": "1m",
            "min_samples": 10,
            "max_p_value": 0.05,
            "match": {"stream": "w[ab]?", "feature": "f.?"},
        },
        monitors=(("wa1", "f.1"), ("wb2", "f.2")),
        decoys=(("wc1", "f.1"), ("wa12", "f.1"), ("wa1", "fx1"), ("wa1", "f.12")),
        values=(0.3, 0.1, 0.3, 0.3, 0.22, 0.1, 0.1, 0.22, 0.3, 0.3, 0.3, 0.3),
        p_values=(0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.06, 0.06, 0.01, 0.01),
        samples=(20, 20, 20, 20, 20, 5, 20, 20, 20, 20, 20, 20),
        exercises=(
            "fires",
            "pending-dropped",
            "held-by-hysteresis",
            "held-below-min-samples",
            "kept-firing",
            "resolves",
        ),
    ),
    Scenario(
        # A name and a severity that Go templates would execute, a name that collides with
        # js-high's alert name, and a stream name that is not a valid PromQL identifier.
        rule={
            "name": 'js {{ "high" }} ü',
            "metric": "js",
            "threshold": 0.05,
            "severity": "page {{ oops }",
            "match": {"stream": "odd-1.x", "feature": "*"},
        },
        monitors=(("odd-1.x", 'v "1"'),),
        decoys=(("odd-1_x", 'v "1"'),),
        values=(0.01, 0.06, 0.06, 0.01, 0.06, 0.01, 0.01, 0.06, 0.06, 0.06, 0.01, 0.01),
        exercises=("fires", "resolves"),
    ),
)


def scenario_config(scenarios: Sequence[Scenario]) -> str:
    """A config holding every scenario's monitors (decoys included) and rules, as YAML."""
    features: dict[str, list[str]] = {}
    for scenario in scenarios:
        for stream, feature in scenario.monitors + scenario.decoys:
            if feature not in features.setdefault(stream, []):
                features[stream].append(feature)
    streams = [
        {
            "name": stream,
            "reference": {"warmup": 10},
            "features": [
                {"name": f, "type": "categorical", "categories": ["a", "b"]}
                if f == "cat"
                else {
                    "name": f,
                    "type": "numeric",
                    "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 4},
                }
                for f in names
            ],
        }
        for stream, names in features.items()
    ]
    return yaml.safe_dump(
        {"streams": streams, "alerts": [s.rule for s in scenarios]}, sort_keys=False
    )


def go_float(value: float) -> str:
    """How a Prometheus template prints ``{{ $value }}`` (Go ``%v``) for the values used here."""
    assert value == 0 or 1e-4 <= abs(value) < 1e6, "outside the range where Go prints decimals"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


_ACTION = re.compile(r"\{\{(.*?)\}\}")


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """The few Go template actions a driftmon rule file uses, expanded as Prometheus does."""
    known = {
        " $labels.stream ": labels["stream"],
        " $labels.feature ": labels["feature"],
        # Go's url.QueryEscape, as Prometheus's urlquery applies it.
        " $labels.stream | urlquery ": urllib.parse.quote_plus(labels["stream"], safe=""),
        " $labels.feature | urlquery ": urllib.parse.quote_plus(labels["feature"], safe=""),
        " $value ": go_float(value),
        '"{"': "{",
    }

    def action(match: re.Match[str]) -> str:
        assert match.group(1) in known, f"unexpected template action {match.group(0)!r}"
        return known[match.group(1)]

    return _ACTION.sub(action, template)


@dataclass(frozen=True)
class Pair:
    """One (rule, monitor) pair and its series over the evaluations."""

    scenario: Scenario
    rule: AlertRule
    alert: str
    stream: str
    feature: str

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self.scenario.values, dtype=np.float64)

    @property
    def p_values(self) -> np.ndarray:
        p = self.scenario.p_values
        return np.full(N_STEPS, 0.5) if p is None else np.asarray(p, dtype=np.float64)

    @property
    def samples(self) -> np.ndarray:
        s = self.scenario.samples
        return np.full(N_STEPS, PLENTY) if s is None else np.asarray(s, dtype=np.int64)


def oracle(pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """driftmon's own verdicts: the state of every pair after every evaluation ``[step, pair]``,
    and the metric value Prometheus's alert carries then (from the last evaluation at which
    the rule's expression returned the series; NaN before any)."""
    params = RuleParams.from_rules([p.rule for p in pairs])
    table = AlertTable.empty(len(pairs))
    states = np.zeros((N_STEPS, len(pairs)), dtype=np.int8)
    carried = np.full((N_STEPS, len(pairs)), np.nan)
    last = np.full(len(pairs), np.nan)
    for step in range(N_STEPS):
        value = np.array([p.values[step] for p in pairs])
        p_value = np.array([p.p_values[step] for p in pairs])
        samples = np.array([p.samples[step] for p in pairs])
        was_firing = table.state == AlertState.FIRING
        table = advance(
            table, params, value=value, p_value=p_value, samples=samples, now=step * STEP_S
        )
        # When the expression returns a series: the condition, or the hysteresis term of a
        # firing alert, or the hold of a firing alert below min_samples.
        judged = samples >= params.min_samples
        significant = np.isnan(params.max_p_value) | (p_value < params.max_p_value)
        over = (value > params.threshold) & significant
        above_clear = (value > params.clear_threshold) & significant
        returned = (judged & (over | (above_clear & was_firing))) | (~judged & was_firing)
        last = np.where(returned, value, last)
        states[step] = table.state
        carried[step] = last
    return states, carried


def check_exercised(pairs: Sequence[Pair], states: np.ndarray) -> None:
    """Fail when a scenario's expected states do not show what the scenario claims to test."""
    for index, pair in enumerate(pairs):
        s = states[:, index]
        v, p, n = pair.values, pair.p_values, pair.samples
        rule = pair.rule
        firing, pending, inactive = (s == AlertState.FIRING), (s == 1), (s == 0)
        previous_firing = np.concatenate([[False], firing[:-1]])
        previous_pending = np.concatenate([[False], pending[:-1]])
        shown = {
            "fires": bool(firing.any()),
            "resolves": bool((previous_firing & inactive).any()),
            "pending-dropped": bool((previous_pending & inactive).any()),
            "held-by-hysteresis": bool(
                (
                    firing & previous_firing & (v <= rule.threshold) & (v > rule.clear_threshold)
                ).any()
            ),
            "between-stays-inactive": bool(
                (
                    inactive & ~previous_firing & (v <= rule.threshold) & (v > rule.clear_threshold)
                ).any()
            ),
            "kept-firing": bool(
                (firing & (v <= rule.clear_threshold) & (n >= rule.min_samples)).any()
            ),
            "held-below-min-samples": bool(
                (firing & (n < rule.min_samples) & (v <= rule.clear_threshold)).any()
            ),
            "gated-by-min-samples": bool(
                (inactive & (n < rule.min_samples) & (v > rule.threshold)).any()
            ),
            "gated-by-p-value": bool(
                (
                    ~firing
                    & (v > rule.threshold)
                    & (p >= (rule.max_p_value if rule.max_p_value is not None else 2.0))
                ).any()
            ),
        }
        missing = [what for what in pair.scenario.exercises if not shown[what]]
        assert not missing, f"{rule.name} on {pair.stream}/{pair.feature}: never shows {missing}"


def series_text(metric: str, stream: str, feature: str) -> str:
    labels = {"stream": stream, "feature": feature, **SCRAPE_LABELS}
    body = ", ".join(f"{name}={promql_string(value)}" for name, value in labels.items())
    return f"{metric}{{{body}}}"


def promtool_test_file(config: Config, scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """The ``promtool test rules`` document: input series and the alerts driftmon expects."""
    names = alert_names(config.alerts)
    rule_by_name = {rule.name: rule for rule in config.alerts}
    document = rules_document(config)
    entry_by_alert = {entry["alert"]: entry for entry in document["groups"][0]["rules"]}
    pairs: list[Pair] = []
    inputs: list[dict[str, str]] = []
    written: set[str] = set()
    for scenario in scenarios:
        rule = rule_by_name[scenario.rule["name"]]
        selected = match_monitors(rule, config)
        # The config's own glob matching (fnmatch) must agree with the scenario's intent.
        assert sorted(selected) == sorted(scenario.monitors), (rule.name, selected)
        for stream, feature in scenario.monitors + scenario.decoys:
            pair = Pair(scenario, rule, names[rule.name], stream, feature)
            if (stream, feature) in scenario.monitors:
                pairs.append(pair)
            # Decoys carry the same values: they would alert if the regex matchers let them in.
            for metric, values in (
                (METRIC_SERIES[rule.metric], pair.values),
                (SAMPLES_SERIES, pair.samples),
                (P_VALUE_SERIES, pair.p_values),
            ):
                series = series_text(metric, stream, feature)
                assert series not in written, f"two scenarios write {series}"
                written.add(series)
                inputs.append(
                    {"series": series, "values": " ".join(repr(float(x)) for x in values)}
                )
    states, carried = oracle(pairs)
    check_exercised(pairs, states)
    tests = []
    for step in range(N_STEPS):
        for alert in names.values():
            entry = entry_by_alert[alert]
            expected = []
            for index, pair in enumerate(pairs):
                if pair.alert != alert or states[step, index] != AlertState.FIRING:
                    continue
                labels = {
                    "stream": pair.stream,
                    "feature": pair.feature,
                    **SCRAPE_LABELS,
                    "rule": pair.rule.name,
                    "severity": pair.rule.severity,
                }
                annotations = {
                    key: expand(template, labels, float(carried[step, index]))
                    for key, template in entry["annotations"].items()
                }
                expected.append({"exp_labels": labels, "exp_annotations": annotations})
            tests.append({"eval_time": f"{step}m", "alertname": alert, "exp_alerts": expected})
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": inputs, "alert_rule_test": tests}],
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Config]:
    """A scenario config, its rule file (from the CLI) and the generated promtool test."""
    folder = tmp_path_factory.mktemp("promtool")
    config_path = folder / "driftmon.yaml"
    config_path.write_text(scenario_config(SCENARIOS))
    config = load_config(config_path)
    done = subprocess.run(
        [sys.executable, "-m", "driftmon", "rules", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (folder / "rules.yml").write_text(done.stdout)
    return folder, promtool_test_file(config, SCENARIOS), config


def test_generated_rules_pass_promtool_check(
    generated: tuple[Path, dict[str, Any], Config],
) -> None:
    folder, _test, config = generated
    done = run_promtool("check", "rules", str(folder / "rules.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(config.alerts)} rules found" in done.stdout


def test_prometheus_raises_exactly_driftmons_alerts(
    generated: tuple[Path, dict[str, Any], Config],
) -> None:
    folder, test, config = generated
    names = alert_names(config.alerts)
    # The colliding name got a suffix, and the rule label keeps the exact name.
    assert names['js {{ "high" }} ü'] == "DriftmonJsHigh_2"
    firing_checks = sum(len(case["exp_alerts"]) for case in test["tests"][0]["alert_rule_test"])
    assert firing_checks >= 30  # the scenarios do fire, often
    (folder / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, allow_unicode=True))
    done = run_promtool("test", "rules", str(folder / "test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("mistake", ["missing-alert", "extra-alert", "wrong-annotation"])
def test_a_wrong_expectation_fails_promtool(
    generated: tuple[Path, dict[str, Any], Config], mistake: str
) -> None:
    folder, test, _config = generated
    wrong = yaml.safe_load(yaml.safe_dump(test))  # a deep copy
    cases = wrong["tests"][0]["alert_rule_test"]
    firing = next(c for c in cases if c["exp_alerts"])
    quiet = next(c for c in cases if not c["exp_alerts"] and c["alertname"] == firing["alertname"])
    if mistake == "missing-alert":
        firing["exp_alerts"] = firing["exp_alerts"][1:]
    elif mistake == "extra-alert":
        quiet["exp_alerts"] = [firing["exp_alerts"][0]]
    else:
        firing["exp_alerts"][0]["exp_annotations"]["summary"] += " "
    path = folder / f"wrong-{mistake}.yml"
    path.write_text(yaml.safe_dump(wrong, sort_keys=False, allow_unicode=True))
    done = run_promtool("test", "rules", str(path))
    assert done.returncode != 0, done.stdout
    assert "FAILED" in done.stdout + done.stderr
