"""Multiple-testing corrections (alert rule ``p_value_correction``) and the stream-level view.

The kernel must equal the textbook formulas of ``tests/naive.py`` (and
``scipy.stats.false_discovery_control`` for Benjamini–Hochberg); the engine
must correct over the monitors a rule matches in one stream at one
evaluation, judge ``max_p_value`` on the corrected value, report it, and
export the stream-level p-value and drifting-feature counts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import naive
import numpy as np
import pytest
from harness import DaemonProcess, sample, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from test_engine import make_config, stream_doc

from driftmon.alerting import AlertState
from driftmon.engine import Engine
from driftmon.multiple_testing import (
    CORRECTIONS,
    PValueFamilies,
    adjust_p_values,
    combined_p_values,
)

p_values = st.one_of(
    st.floats(min_value=0.0, max_value=1.0),
    st.sampled_from([0.0, 1.0, 0.01, 0.05, math.nan, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(family=st.lists(p_values, max_size=40), method=st.sampled_from(CORRECTIONS))
def test_each_correction_equals_the_textbook_formula(family: list[float], method: str) -> None:
    adjusted = adjust_p_values(np.array(family, dtype=float), method)
    expected = naive.p_value_correction(family, method)
    np.testing.assert_allclose(adjusted, expected, rtol=1e-15, atol=0)
    assert np.array_equal(np.isnan(adjusted), np.isnan(family))


@settings(max_examples=200, deadline=None)
@given(family=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=60))
def test_benjamini_hochberg_equals_scipy(family: list[float]) -> None:
    expected = stats.false_discovery_control(np.array(family), method="bh")
    np.testing.assert_allclose(adjust_p_values(family, "bh"), expected, rtol=1e-12, atol=0)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(min_value=0, max_value=6),
    size=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    method=st.sampled_from(CORRECTIONS),
)
def test_a_2d_array_is_one_family_per_row(rows: int, size: int, seed: int, method: str) -> None:
    grid = np.random.default_rng(seed).uniform(size=(rows, size)) ** 3
    adjusted = adjust_p_values(grid, method)
    assert adjusted.shape == grid.shape
    for row, out in zip(grid, adjusted, strict=True):
        np.testing.assert_allclose(out, naive.p_value_correction(list(row), method), rtol=1e-15)


def test_known_values_and_ties() -> None:
    family = [0.01, 0.04, 0.03, 0.005]
    assert adjust_p_values(family, "bonferroni").tolist() == [0.04, 0.16, 0.12, 0.02]
    np.testing.assert_allclose(adjust_p_values(family, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(adjust_p_values(family, "bh"), [0.02, 0.04, 0.04, 0.02])
    # Tied p-values get one adjusted value, whatever order a sort leaves them in.
    for method in ("holm", "bh"):
        tied = adjust_p_values([0.02, 0.02, 0.02, 0.9], method)
        assert tied[0] == tied[1] == tied[2]


def test_families_may_interleave_and_pairs_outside_keep_their_p_value() -> None:
    p = np.array([0.01, 0.2, 0.02, 0.3, 0.04, math.nan, 0.5])
    families = PValueFamilies([[0, 2, 4, 5], [6, 1]], ["holm", "bonferroni"], n_pairs=7)
    out = families.adjust(p)
    np.testing.assert_allclose(out[[0, 2, 4]], naive.p_value_correction([0.01, 0.02, 0.04], "holm"))
    assert math.isnan(out[5])  # untested: left out of its family (m = 3, not 4)
    np.testing.assert_allclose(out[[6, 1]], [1.0, 0.4])
    assert out[3] == 0.3  # in no family


def test_combined_p_value_is_the_smallest_holm_adjusted_one() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=30) ** 4
    p[[3, 17, 18]] = math.nan
    offsets = np.array([0, 5, 5, 12, 30])
    combined = combined_p_values(p, offsets)
    for s in range(4):
        segment = list(p[offsets[s] : offsets[s + 1]])
        holm = [v for v in naive.p_value_correction(segment, "holm") if not math.isnan(v)]
        if holm:
            assert combined[s] == pytest.approx(min(holm), rel=1e-15)
        else:
            assert math.isnan(combined[s])
    assert math.isnan(combined_p_values([math.nan, math.nan], [0, 2])[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: adjust_p_values([0.1], "sidak"), "method: must be one of none, bonferroni"),
        (lambda: adjust_p_values([0.1, 1.5], "holm"), r"p_values: .* got 1.5 at \(1,\)"),
        (lambda: adjust_p_values([-0.1], "holm"), "in \\[0, 1\\]"),
        (lambda: adjust_p_values(["a"], "holm"), "real numbers"),
        (lambda: adjust_p_values(np.zeros((2, 2, 2)), "holm"), "1-D or 2-D"),
        (lambda: PValueFamilies([[0, 0]], ["holm"], 2), "distinct"),
        (lambda: PValueFamilies([[0]], ["holm", "bh"], 2), "one per family"),
        (lambda: combined_p_values([0.1, 0.2], [0, 1]), "offsets"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- in the engine ---------------------------------------------------------------------------

ALPHA = 0.01
FEATURES = [
    {"name": f"x{j}", "type": "numeric", "bins": {"kind": "uniform", "lo": -4, "hi": 4, "count": 8}}
    for j in range(5)
]
SHIFTS = [0.0, 0.0, 0.25, 0.3, 0.8]  # in standard deviations, per feature


def rule(name: str, correction: str | None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name, "metric": "psi", "threshold": 0, "max_p_value": ALPHA, **extra,
    }
    if correction is not None:
        entry["p_value_correction"] = correction
    return entry


def drift_engine(seed: int, *, rules: list[dict[str, Any]], live_rows: int = 300) -> Engine:
    """Two streams of five features, live data shifted by SHIFTS; one evaluation pending."""
    rng = np.random.default_rng(seed)
    streams = [
        stream_doc(name, features=FEATURES, window={"samples": 10_000}, reference={"warmup": 2000})
        for name in ("a", "b")
    ]
    engine = Engine(make_config(streams, rules), now=0.0)
    for name in ("a", "b"):
        reference = {f"x{j}": rng.normal(size=2000) for j in range(5)}
        engine.ingest(name, 2000, reference, 0.0)
        live = {f"x{j}": rng.normal(SHIFTS[j], 1.0, size=live_rows) for j in range(5)}
        engine.ingest(name, live_rows, live, 0.5)
    return engine


ALL_RULES = [
    rule("raw", None),
    rule("holm", "holm"),
    rule("bonferroni", "bonferroni"),
    rule("bh", "bh"),
    rule("none", "none"),
]


def test_rules_judge_max_p_value_on_the_p_values_corrected_per_stream() -> None:
    engine = drift_engine(0, rules=ALL_RULES)
    evaluation = engine.evaluate(1.0)
    raw = evaluation.values["p_value"]
    states = evaluation.alerts.state
    firing_sets: dict[str, set[tuple[str, str]]] = {}
    for method, rule_name in [("none", "raw"), ("holm", "holm"), ("bonferroni", "bonferroni"),
                              ("bh", "bh"), ("none", "none")]:
        for stream in ("a", "b"):
            pairs = [
                i
                for i, pair in enumerate(evaluation.alert_pairs)
                if pair.rule.name == rule_name
                and evaluation.monitors[pair.monitor].stream == stream
            ]
            assert len(pairs) == 5  # a family is one rule in one stream
            family_raw = [float(raw[evaluation.alert_pairs[i].monitor]) for i in pairs]
            expected = naive.p_value_correction(family_raw, method)
            np.testing.assert_allclose(evaluation.alert_p_values[pairs], expected, rtol=1e-15)
            for i, corrected in zip(pairs, expected, strict=True):
                assert (states[i] == AlertState.FIRING) == (corrected < ALPHA)
                if corrected < ALPHA:
                    monitor = evaluation.monitors[evaluation.alert_pairs[i].monitor]
                    firing_sets.setdefault(rule_name, set()).add((stream, monitor.feature))
    # The data is chosen so that the corrections matter (the test would be blind otherwise):
    # the raw gate flags more than Holm does, and BH sits between.
    assert firing_sets["raw"] == firing_sets["none"]
    assert firing_sets["holm"] < firing_sets["raw"]
    assert firing_sets["holm"] <= firing_sets["bh"] <= firing_sets["raw"]
    assert firing_sets["bonferroni"] <= firing_sets["holm"]


def test_a_corrected_firing_alert_clears_when_its_corrected_p_value_rises() -> None:
    """State behaviour follows the corrected p-value: more rows of the unshifted kind
    dilute the drift until the corrected p-value passes max_p_value while the raw one
    of the same monitor is still below it."""
    engine = drift_engine(0, rules=[rule("raw", None), rule("holm", "holm")])
    first = engine.evaluate(1.0)
    holm_pairs = {
        (first.monitors[p.monitor].stream, first.monitors[p.monitor].feature): i
        for i, p in enumerate(first.alert_pairs) if p.rule.name == "holm"
    }
    raw_pairs = {
        (first.monitors[p.monitor].stream, first.monitors[p.monitor].feature): i
        for i, p in enumerate(first.alert_pairs) if p.rule.name == "raw"
    }
    firing = {key for key, i in holm_pairs.items() if first.alerts.state[i] == AlertState.FIRING}
    assert firing
    rng = np.random.default_rng(5)
    seen_split = False
    now = 1.0
    for _ in range(40):
        for name in ("a", "b"):
            engine.ingest(name, 100, {f"x{j}": rng.normal(size=100) for j in range(5)}, now)
        now += 1.0
        evaluation = engine.evaluate(now)
        for key in firing:
            holm_i, raw_i = holm_pairs[key], raw_pairs[key]
            corrected = evaluation.alert_p_values[holm_i]
            raw = evaluation.values["p_value"][evaluation.alert_pairs[raw_i].monitor]
            holm_state = evaluation.alerts.state[holm_i]
            assert (holm_state == AlertState.FIRING) == (corrected < ALPHA)
            if raw < ALPHA <= corrected:
                seen_split = True
                assert evaluation.alerts.state[raw_i] == AlertState.FIRING
                assert holm_state == AlertState.INACTIVE
    assert seen_split, "the dilution never separated the raw and the corrected verdicts"


def test_monitors_without_a_verdict_are_left_out_of_the_family() -> None:
    """A feature below min_samples (the rows did not reach it) is not counted in m."""
    rng = np.random.default_rng(2)
    streams = [
        stream_doc("a", features=FEATURES, window={"samples": 10_000}, reference={"warmup": 2000})
    ]
    engine = Engine(make_config(streams, [rule("holm", "holm", min_samples=300)]), now=0.0)
    engine.ingest("a", 2000, {f"x{j}": rng.normal(size=2000) for j in range(5)}, 0.0)
    engine.ingest("a", 300, {f"x{j}": rng.normal(SHIFTS[j], 1.0, size=300) for j in range(4)}, 0.5)
    engine.ingest("a", 100, {"x4": rng.normal(SHIFTS[4], 1.0, size=100)}, 0.5)
    evaluation = engine.evaluate(1.0)
    raw = evaluation.values["p_value"]
    assert evaluation.window_samples.tolist() == [300, 300, 300, 300, 100]
    expected = naive.p_value_correction([float(raw[m]) for m in range(4)], "holm")
    np.testing.assert_allclose(evaluation.alert_p_values[:4], expected, rtol=1e-15)
    assert math.isnan(evaluation.alert_p_values[4])


def test_stream_level_p_value_and_drifting_feature_counts() -> None:
    engine = drift_engine(0, rules=ALL_RULES)
    evaluation = engine.evaluate(1.0)
    raw = evaluation.values["p_value"]
    for stream in ("a", "b"):
        mine = [m.index for m in evaluation.monitors if m.stream == stream]
        expected = min(1.0, len(mine) * min(float(raw[i]) for i in mine))
        assert evaluation.stream_p_values[stream] == pytest.approx(expected, rel=1e-15)
    counts = evaluation.drifting_features()
    assert set(counts) == {(s, r["name"]) for s in ("a", "b") for r in ALL_RULES}
    for (stream, rule_name), count in counts.items():
        assert count == sum(
            1
            for pair, state in zip(evaluation.alert_pairs, evaluation.alerts.state, strict=True)
            if pair.rule.name == rule_name
            and evaluation.monitors[pair.monitor].stream == stream
            and state == AlertState.FIRING
        )
    assert counts[("b", "raw")] > counts[("b", "holm")] > 0


# --- through the daemon: the JSON API and /metrics -------------------------------------------

DAEMON_CONFIG = """\
server: {{listen: 127.0.0.1:0}}
engine: {{evaluate_every: 100ms}}
streams:
  - name: model
    reference: {{file: {reference}}}
    window: {{samples: 10000}}
    features:
{features}
alerts:
  - name: drift
    metric: psi
    threshold: 0
    max_p_value: 0.01
    p_value_correction: holm
  - name: raw
    metric: psi
    threshold: 0
    max_p_value: 0.01
"""


def test_the_daemon_reports_raw_and_corrected_p_values_and_the_stream_view(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(10)  # a draw where Holm drops one of the raw gate's features
    names = [f"x{j}" for j in range(5)]
    reference = tmp_path / "reference.ndjson"
    reference.write_text(
        "".join(
            json.dumps({n: float(v) for n, v in zip(names, row, strict=True)}) + "\n"
            for row in rng.normal(size=(2000, 5))
        )
    )
    features = "".join(
        f"      - {{name: {n}, type: numeric, bins: {{kind: uniform, lo: -4, hi: 4, count: 8}}}}\n"
        for n in names
    )
    config = tmp_path / "driftmon.yaml"
    config.write_text(DAEMON_CONFIG.format(reference=reference, features=features))
    daemon = DaemonProcess(config).start()
    try:
        live = rng.normal(SHIFTS, 1.0, size=(300, 5))
        body = {"columns": {n: live[:, j].tolist() for j, n in enumerate(names)}}
        assert daemon.post_json("model", json.dumps(body).encode()).status == 200

        def evaluated() -> dict[str, Any] | None:
            payload: dict[str, Any] = daemon.get("/api/v1/monitors").json()
            monitors = payload["monitors"]
            if len(monitors) == 5 and all(m["samples"] == 300 for m in monitors):
                return payload
            return None

        payload = wait_for(evaluated, 30, "an evaluation of the posted rows")
        raw = [m["divergences"]["p_value"] for m in payload["monitors"]]
        assert all(isinstance(p, float) for p in raw)
        by_rule: dict[str, list[dict[str, Any]]] = {"drift": [], "raw": []}
        for monitor in payload["monitors"]:
            for alert in monitor["alerts"]:
                by_rule[alert["rule"]].append(alert)
        holm = naive.p_value_correction(raw, "holm")
        for alert, p, corrected in zip(by_rule["drift"], raw, holm, strict=True):
            assert alert["p_value"] == p
            assert alert["p_value_correction"] == "holm"
            assert alert["p_value_corrected"] == pytest.approx(corrected, rel=1e-15)
            assert (alert["state"] == "firing") == (corrected < 0.01)
        for alert, p in zip(by_rule["raw"], raw, strict=True):
            assert alert["p_value_correction"] == "none"
            assert alert["p_value_corrected"] == alert["p_value"] == p
        stream_p = min(1.0, 5 * min(raw))
        firing = {
            rule: sum(a["state"] == "firing" for a in alerts) for rule, alerts in by_rule.items()
        }
        assert payload["streams"]["model"]["drift_p_value"] == pytest.approx(stream_p, rel=1e-15)
        assert payload["streams"]["model"]["drifting_features"] == firing
        assert firing["raw"] > firing["drift"] > 0

        samples = daemon.metrics()
        assert sample(
            samples, "driftmon_stream_drift_p_value", stream="model"
        ) == pytest.approx(stream_p, rel=1e-15)
        for rule_name, count in firing.items():
            assert sample(
                samples, "driftmon_stream_drifting_features", stream="model", rule=rule_name
            ) == count
        for n, corrected in zip(names, holm, strict=True):
            assert sample(
                samples, "driftmon_alert_p_value", stream="model", feature=n, rule="drift"
            ) == pytest.approx(corrected, rel=1e-15)
            # The raw p-value series stays; rules without a correction have no corrected one.
            assert sample(samples, "driftmon_drift_p_value", stream="model", feature=n) is not None
            assert sample(
                samples, "driftmon_alert_p_value", stream="model", feature=n, rule="raw"
            ) is None
    finally:
        daemon.kill()
