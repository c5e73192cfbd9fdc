"""Ingest totals by kind: the packed one-pass totals equal a per-monitor count."""

from __future__ import annotations

import numpy as np
from test_engine import CATEGORIES, EDGES, UNIFORM, make_config, stream_doc

from driftmon.binning import NumericBinner
from driftmon.engine import Engine
from driftmon.kinds import VALUE_KINDS


def per_monitor(engine: Engine) -> list[tuple[str, str, dict[str, float]]]:
    """The obvious count: one monitor at a time, by its bin order."""
    result = []
    for monitor in engine.monitors:
        counts = engine.ingested[monitor.bins]
        if isinstance(monitor.binner, NumericBinner):
            n = monitor.binner.n_regular
            kinds = {
                "ok": float(counts[1 : n + 1].sum()),
                "underflow": float(counts[0]),
                "overflow": float(counts[n + 1]),
                "missing": float(counts[n + 2]),
                "invalid": float(counts[n + 3]),
            }
        else:
            c = len(monitor.binner.categories)
            kinds = {
                "ok": float(counts[:c].sum()),
                "other": float(counts[c]),
                "missing": float(counts[c + 1]),
                "invalid": float(counts[c + 2]),
            }
        result.append((monitor.stream, monitor.feature, kinds))
    return result


def test_totals_by_kind_match_a_count_per_monitor() -> None:
    reference = {"warmup": 1}
    config = make_config(
        [
            stream_doc("a", features=(UNIFORM, CATEGORIES, EDGES), reference=reference),
            stream_doc("b", features=(CATEGORIES, UNIFORM), reference=reference),
        ]
    )
    engine = Engine(config, now=0.0)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        engine.ingest(name, 1, {"u": [1.0], "c": ["a"], "e": [0.1]}, 0.0)  # the warmup row
        rows = 200
        numbers: list[object] = list(rng.normal(4.0, 6.0, rows))
        numbers[:5] = [None, "x", float("nan"), -50.0, 50.0]
        words: list[object] = list(rng.choice(["a", "b", "3", "zz"], rows))
        words[:3] = [None, 4.5, 3]
        engine.ingest(name, rows, {"u": numbers, "e": numbers, "c": words}, 1.0)
    totals = engine.value_kinds()
    assert len(totals) == len(engine.monitors) == 5
    assert list(totals) == per_monitor(engine)
    assert {kind for _, _, kinds in totals for kind in kinds} == set(VALUE_KINDS)


def test_totals_are_a_snapshot() -> None:
    config = make_config([stream_doc("a", features=(UNIFORM,), reference={"warmup": 1})])
    engine = Engine(config, now=0.0)
    engine.ingest("a", 1, {"u": [1.0]}, 0.0)
    before = engine.value_kinds()
    engine.ingest("a", 3, {"u": [1.0, 2.0, None]}, 1.0)
    assert list(before)[0][2] == {
        "ok": 1.0,
        "underflow": 0.0,
        "overflow": 0.0,
        "missing": 0.0,
        "invalid": 0.0,
    }
    assert list(engine.value_kinds())[0][2]["missing"] == 1.0
