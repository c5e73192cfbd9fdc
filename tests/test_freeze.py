"""A warmup freeze planned without the lock and committed under it (Engine.plan_freeze,
Engine.commit_freeze, and the ingest gate that runs them).

Whatever happens between the plan and the commit (rows, another freeze, a
reload, a checkpoint), the counts end up those of a one-shot build over the
same rows: the reference of the first N rows and a window of the others.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import DaemonProcess, sample, wait_for
from test_engine import (
    CATEGORIES,
    EDGES,
    QUANTILE,
    SAMPLES,
    TOP_K,
    UNIFORM,
    make_config,
    stream_doc,
)

from driftmon.alerting import AlertState
from driftmon.checkpoint import read_checkpoint, write_checkpoint
from driftmon.config import Config
from driftmon.engine import Engine, FreezePlan
from driftmon.evaluation import ALL_METRICS
from driftmon.ingest import Gate
from driftmon.reference import build_reference
from driftmon.sources import Batch

N = 40  # warmup rows
WARM_FEATURES = (UNIFORM, EDGES, QUANTILE, CATEGORIES, TOP_K)
RULES = [
    {"name": "any-js", "metric": "js", "threshold": 0.01, "min_samples": 1},
    {
        "name": "w-psi",
        "metric": "psi",
        "threshold": 0.01,
        "min_samples": 1,
        "match": {"stream": "w"},
    },
]


def rows(seed: int, n: int) -> dict[str, list[object]]:
    rng = np.random.default_rng(seed)
    return {
        "u": [float(v) for v in rng.uniform(-1, 11, n)],
        "e": [float(v) for v in rng.normal(1, 2, n)],
        "q": [float(v) for v in rng.normal(0, 1, n)],
        "c": [str(v) for v in rng.choice(["a", "b", "3", "zz"], n)],
        "t": [str(v) for v in rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2])],
    }


def part(columns: Mapping[str, Sequence[object]], start: int, stop: int) -> dict[str, list[object]]:
    return {name: list(values[start:stop]) for name, values in columns.items()}


def config(window: Mapping[str, Any]) -> Config:
    """Stream a (fixed bins) before the warmup stream w, stream b after it: w's bins go in
    between, so both the offsets and the monitor indices of b move at the freeze."""
    fixed = (UNIFORM, EDGES, CATEGORIES)
    return make_config(
        [
            stream_doc("a", features=fixed, window=window, reference={"warmup": 3}),
            stream_doc("w", features=WARM_FEATURES, window=window, reference={"warmup": N}),
            stream_doc("b", features=fixed, window=window, reference={"warmup": 3}),
        ],
        RULES,
    )


def started(cfg: Config) -> Engine:
    """An engine whose streams a and b are frozen and have rows and alert states."""
    engine = Engine(cfg, now=0.0)
    for name, seed in (("a", 1), ("b", 2)):
        engine.ingest(name, 3, part(rows(seed, 3), 0, 3), 1.0)
        engine.ingest(name, 20, part(rows(seed + 10, 20), 0, 20), 2.0)
    engine.evaluate(3.0)
    assert AlertState.FIRING in engine.alerts.state.tolist()
    return engine


def one_shot(cfg: Config, warm: Mapping[str, Sequence[object]], batches: Sequence[tuple]) -> Engine:
    """Stream w built with its reference from the start, then fed the rows past the N-th."""
    reference = build_reference(cfg.streams[1], N, part(warm, 0, N))
    engine = Engine(cfg, now=0.0, references={"w": reference, "a": None, "b": None})
    # a and b: the same warmups, the same rows.
    for name, seed in (("a", 1), ("b", 2)):
        engine.ingest(name, 3, part(rows(seed, 3), 0, 3), 1.0)
        engine.ingest(name, 20, part(rows(seed + 10, 20), 0, 20), 2.0)
    engine.evaluate(3.0)
    for columns, n, now in batches:
        engine.ingest("w", n, columns, now)
    return engine


def with_warmup_ingested(expected: Engine) -> np.ndarray:
    """A one-shot build's ingested counts plus w's warmup rows (a freeze counts them too)."""
    w = [m for m in expected.monitors if m.stream == "w"]
    warmup = slice(w[0].offset, w[-1].offset + w[-1].n_bins)
    ingested = expected.ingested.copy()
    ingested[warmup] += expected.reference[warmup]
    return ingested


def assert_same_counts(engine: Engine, expected: Engine, at: float) -> None:
    assert [(m.stream, m.feature, m.offset, m.index) for m in engine.monitors] == [
        (m.stream, m.feature, m.offset, m.index) for m in expected.monitors
    ]
    np.testing.assert_array_equal(engine.reference, expected.reference)
    np.testing.assert_array_equal(engine.live, expected.live)
    ingested = with_warmup_ingested(expected)
    np.testing.assert_array_equal(engine.ingested, ingested)
    expected.ingested[:] = ingested
    assert list(engine.value_kinds()) == list(expected.value_kinds())
    one, two = engine.evaluate(at), expected.evaluate(at)
    for name in ALL_METRICS:
        np.testing.assert_array_equal(one.values[name], two.values[name])
    np.testing.assert_array_equal(one.window_samples, two.window_samples)


def after_the_warmup(seed: int) -> tuple[dict[str, list[object]], list[tuple]]:
    """N + 25 rows for w: the warmup's and three later batches (the first one straddles)."""
    warm = rows(seed, N + 25)
    batches = [
        (part(warm, N, N + 5), 5, 4.0),
        (part(warm, N + 5, N + 15), 10, 5.0),
        (part(warm, N + 15, N + 25), 10, 14.0),
    ]
    return warm, batches


@pytest.mark.parametrize(
    "window", [{"length": "60s", "panes": 6}, SAMPLES], ids=["panes", "samples"]
)
def test_a_freeze_with_rows_in_between_counts_as_a_one_shot_build(
    window: Mapping[str, Any],
) -> None:
    cfg = config(window)
    warm, later = after_the_warmup(5)
    engine = started(cfg)
    kept_alerts = {k: v for k, v in engine.alert_states().items() if k[1] != "w"}
    kept_history = engine.history.monitor(engine.monitor("b", "u").index)
    engine.apply(engine.bin_batch("w", N - 10, part(warm, 0, N - 10)), 4.0)
    # This batch completes the warmup (and brings 5 rows more): the freeze waits.
    first = engine.bin_batch("w", 15, part(warm, N - 10, N + 5))
    assert engine.apply(first, 4.0, defer_freeze=True)
    assert engine.freeze_due("w") and engine.warmup_progress("w") == (N, N)
    plan = engine.plan_freeze("w")
    assert plan is not None
    for columns, n, now in later[1:]:  # rows that come while the plan is made
        assert not engine.apply(engine.bin_batch("w", n, columns), now, defer_freeze=True)
    assert engine.commit_freeze(plan)
    assert not engine.freeze_due("w") and engine.warmup_progress("w") is None
    assert_same_counts(engine, one_shot(cfg, warm, later), 15.0)
    # Every other monitor kept its alert states and history.
    assert {
        k: v for k, v in engine.alert_states().items() if k[1] != "w"
    }.keys() == kept_alerts.keys()
    for key, value in kept_alerts.items():
        assert engine.alert_states()[key][1] == value[1]
    moved = engine.history.monitor(engine.monitor("b", "u").index)
    assert moved.times.tolist()[: len(kept_history.times)] == kept_history.times.tolist()
    np.testing.assert_array_equal(
        moved.values["js"][: len(kept_history.times)], kept_history.values["js"]
    )
    assert np.isnan(engine.history.monitor(engine.monitor("w", "u").index).values["js"]).all()


def test_history_recorded_between_the_plan_and_the_commit_is_kept() -> None:
    docs = [
        stream_doc("a", features=(UNIFORM, CATEGORIES), reference={"warmup": 3}),
        stream_doc("w", features=WARM_FEATURES, reference={"warmup": N}),
        stream_doc("b", features=(UNIFORM, CATEGORIES), reference={"warmup": 3}),
    ]
    cfg = make_config(
        docs, RULES, engine={"evaluate_every": "1s", "history": {"length": "6s", "every": "1s"}}
    )
    engine = Engine(cfg, now=0.0)
    for name, seed in (("a", 1), ("b", 2)):
        engine.ingest(name, 10, part(rows(seed, 10), 0, 10), 1.0)
    for t in (1.0, 2.0, 3.0):
        engine.evaluate(t)
    engine.apply(engine.bin_batch("w", N, part(rows(3, N), 0, N)), 3.5, defer_freeze=True)
    plan = engine.plan_freeze("w")
    assert plan is not None
    meanwhile = [engine.evaluate(t) for t in (4.0, 5.0)]
    assert engine.commit_freeze(plan)
    engine.ingest("w", 5, part(rows(4, 5), 0, 5), 5.5)
    for t in (6.0, 7.0, 8.0):  # the ring (6 entries) wraps around
        engine.evaluate(t)
    b_u = engine.monitor("b", "u")
    history = engine.history.monitor(b_u.index)
    assert history.times.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    for evaluation, value in zip(meanwhile, history.values["js"][1:3], strict=True):
        before = [m for m in evaluation.monitors if (m.stream, m.feature) == ("b", "u")][0]
        assert value == pytest.approx(evaluation.values["js"][before.index], rel=1e-6)
    w_u = engine.history.monitor(engine.monitor("w", "u").index)
    assert np.isnan(w_u.values["js"][:3]).all() and not np.isnan(w_u.values["js"][3:]).any()


def test_the_freeze_in_apply_equals_plan_and_commit() -> None:
    cfg = config({"length": "60s", "panes": 6})
    warm, later = after_the_warmup(6)
    engine = started(cfg)
    engine.ingest("w", N + 5, part(warm, 0, N + 5), 4.0)  # freezes in the call
    assert engine.warmup_progress("w") is None
    for columns, n, now in later[1:]:
        engine.ingest("w", n, columns, now)
    assert_same_counts(engine, one_shot(cfg, warm, later), 15.0)


def test_a_freeze_in_apply_gives_the_batch_the_counts_of_its_rows_past_the_warmup() -> None:
    """Shared mode (``window=False``) sends ``batch.counts`` to the store: the rows of the
    batch that completes the warmup past the N-th must be in them."""
    cfg = config({"length": "60s", "panes": 6})
    warm, later = after_the_warmup(17)
    engine = started(cfg)
    live = engine.live.copy()
    batch = engine.bin_batch("w", N + 5, part(warm, 0, N + 5))
    assert not engine.apply(batch, 4.0, window=False)
    expected = one_shot(cfg, warm, later[:1])
    stream_bins = [m for m in expected.monitors if m.stream == "w"]
    w = slice(stream_bins[0].offset, stream_bins[-1].offset + stream_bins[-1].n_bins)
    assert batch.counts is not None
    np.testing.assert_array_equal(batch.counts, expected.live[w])
    np.testing.assert_array_equal(engine.ingested, with_warmup_ingested(expected))
    assert not engine.live[w].any()  # the window is left alone
    np.testing.assert_array_equal(np.delete(engine.live, np.arange(w.start, w.stop)), live)


def test_a_stale_plan_is_refused_and_changes_nothing() -> None:
    cfg = make_config(
        [
            stream_doc("w", features=WARM_FEATURES, reference={"warmup": N}),
            stream_doc("v", features=WARM_FEATURES, reference={"warmup": N}),
        ],
        RULES,
    )
    engine = Engine(cfg, now=0.0)
    warm_w, warm_v = rows(7, N), rows(8, N)
    assert engine.apply(engine.bin_batch("w", N, warm_w), 1.0, defer_freeze=True)
    assert engine.apply(engine.bin_batch("v", N, warm_v), 1.0, defer_freeze=True)
    plan_w, plan_v = engine.plan_freeze("w"), engine.plan_freeze("v")
    assert plan_w is not None and plan_v is not None
    assert engine.commit_freeze(plan_v)
    generation, live = engine.generation, engine.live.copy()
    assert not engine.commit_freeze(plan_w)  # planned against the packing before v's freeze
    assert engine.generation == generation and engine.freeze_due("w")
    np.testing.assert_array_equal(engine.live, live)
    assert not engine.commit_freeze(plan_v)  # already done
    replanned = engine.plan_freeze("w")
    assert replanned is not None and engine.commit_freeze(replanned)
    assert engine.plan_freeze("w") is None
    expected = Engine(
        cfg,
        now=0.0,
        references={
            "w": build_reference(cfg.streams[0], N, warm_w),
            "v": build_reference(cfg.streams[1], N, warm_v),
        },
    )
    np.testing.assert_array_equal(engine.reference, expected.reference)
    np.testing.assert_array_equal(engine.ingested, expected.reference)


def test_a_reload_during_a_freeze_does_not_apply_the_stale_plan() -> None:
    cfg = config({"length": "60s", "panes": 6})
    warm, later = after_the_warmup(9)
    engine = started(cfg)
    assert engine.apply(engine.bin_batch("w", N + 5, part(warm, 0, N + 5)), 4.0, defer_freeze=True)
    plan = engine.plan_freeze("w")
    assert plan is not None
    # A reload (smoothing only: every reference is reused) while the plan was made.
    reloaded_cfg = make_config(
        [
            {**doc, "features": [{**f, "smoothing": 1.0} for f in doc["features"]]}
            for doc in (
                stream_doc("a", features=(UNIFORM, EDGES, CATEGORIES), reference={"warmup": 3}),
                stream_doc("w", features=WARM_FEATURES, reference={"warmup": N}),
                stream_doc("b", features=(UNIFORM, EDGES, CATEGORIES), reference={"warmup": 3}),
            )
        ],
        RULES,
    )
    new = engine.successor(reloaded_cfg, 4.5)
    new.take_over(engine, 4.5)  # the old engine's due freeze is done for the export
    assert not engine.commit_freeze(plan)
    assert new.warmup_progress("w") is None and not new.freeze_due("w")
    for columns, n, now in later[1:]:
        new.ingest("w", n, columns, now)
    expected = one_shot(cfg, warm, later)
    np.testing.assert_array_equal(new.reference, expected.reference)
    np.testing.assert_array_equal(new.live, expected.live)
    np.testing.assert_array_equal(new.ingested, with_warmup_ingested(expected))


def test_a_checkpoint_during_a_freeze_keeps_the_held_rows(tmp_path: Path) -> None:
    cfg = config(SAMPLES)
    warm, later = after_the_warmup(11)
    engine = started(cfg)
    assert engine.apply(engine.bin_batch("w", N + 5, part(warm, 0, N + 5)), 4.0, defer_freeze=True)
    plan = engine.plan_freeze("w")
    assert plan is not None
    columns, n, now = later[1]
    engine.apply(engine.bin_batch("w", n, columns), now, defer_freeze=True)  # held
    write_checkpoint(tmp_path, engine.export_state(), saved_at=6.0)
    assert not engine.commit_freeze(plan)  # the export froze the warmup itself
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None
    restored = Engine(cfg, now=6.0)
    restored.adopt(loaded.state, 6.0)
    columns, n, now = later[2]
    for target in (engine, restored):
        target.ingest("w", n, columns, now)
    expected = one_shot(cfg, warm, later)
    for target in (engine, restored):
        np.testing.assert_array_equal(target.reference, expected.reference)
        np.testing.assert_array_equal(target.live, expected.live)
    np.testing.assert_array_equal(engine.ingested, with_warmup_ingested(expected))


def test_a_warmup_that_defines_no_layout_starts_again_with_the_held_rows() -> None:
    cfg = make_config([stream_doc("w", features=(TOP_K,), reference={"warmup": 3})])
    engine = Engine(cfg, now=0.0)
    assert engine.apply(
        engine.bin_batch("w", 4, {"t": [None, None, None, "x"]}), 1.0, defer_freeze=True
    )
    plan = engine.plan_freeze("w")
    assert plan is not None and plan.reference is None
    engine.apply(engine.bin_batch("w", 1, {"t": ["y"]}), 1.0, defer_freeze=True)
    assert engine.commit_freeze(plan)
    assert engine.warmup_progress("w") == (2, 3)  # "x" and "y" start the next warmup
    engine.ingest("w", 2, {"t": ["x", "z"]}, 2.0)
    assert engine.monitor("w", "t").binner.categories == ("x", "y")  # type: ignore[union-attr]
    assert engine.live.sum() == 1  # "z", past the new warmup's 3 rows


# --- through the ingest gate -----------------------------------------------------------------


def gate_over(engine: Engine, clock: list[float]) -> Gate:
    gate = Gate(engine.config, lambda: clock[0], threading.Lock())
    gate.engine = engine
    gate.ready = True
    return gate


def during_the_plan(engine: Engine, action: Any) -> list[FreezePlan | None]:
    """Make ``engine.plan_freeze`` run ``action`` in another thread (once) after planning,
    and wait for it: a plan made under the gate's lock would never see it finish."""
    plans: list[FreezePlan | None] = []
    plan = engine.plan_freeze
    acted: list[bool] = []

    def planning(name: str) -> FreezePlan | None:
        planned = plan(name)
        if not acted:
            acted.append(True)
            other = threading.Thread(target=action)
            other.start()
            other.join(30.0)
            assert not other.is_alive(), "the plan holds the ingest lock"
        plans.append(planned)
        return planned

    engine.plan_freeze = planning  # type: ignore[method-assign]
    return plans


def test_the_gate_plans_without_the_lock_and_counts_the_rows_posted_meanwhile() -> None:
    cfg = config({"length": "60s", "panes": 6})
    warm, later = after_the_warmup(13)
    engine, clock = started(cfg), [4.0]
    gate = gate_over(engine, clock)

    def post_more() -> None:
        for columns, n, now in later[1:]:
            clock[0] = now
            gate.ingest_batch("w", Batch(n, columns, 0))
            assert engine.freeze_due("w")  # held: the freeze is not committed yet

    plans = during_the_plan(engine, post_more)
    result = gate.ingest_batch("w", Batch(N + 5, part(warm, 0, N + 5), 0))
    assert result.rows == N + 5 and len(plans) == 1
    assert not engine.freeze_due("w") and engine.warmup_progress("w") is None
    assert_same_counts(engine, one_shot(cfg, warm, later), 15.0)


def test_the_gate_drops_its_plan_when_a_reload_took_over_meanwhile() -> None:
    cfg = config({"length": "60s", "panes": 6})
    warm, later = after_the_warmup(15)
    engine, clock = started(cfg), [4.0]
    gate = gate_over(engine, clock)
    reloaded: list[Engine] = []

    def reload() -> None:  # what Daemon.reload does
        new = engine.successor(cfg, 4.5)
        with gate.lock:
            new.take_over(engine, 4.5)
            gate.engine = new
        reloaded.append(new)

    plans = during_the_plan(engine, reload)
    gate.ingest_batch("w", Batch(N + 5, part(warm, 0, N + 5), 0))
    # The gate's plan (the last one: the reload froze the warmup itself meanwhile) is stale.
    stale = plans[-1]
    assert stale is not None and not engine.commit_freeze(stale)
    new = reloaded[0]
    assert gate.engine is new and new.warmup_progress("w") is None
    for columns, n, now in later[1:]:
        clock[0] = now
        gate.ingest_batch("w", Batch(n, columns, 0))
    expected = one_shot(cfg, warm, later)
    np.testing.assert_array_equal(new.reference, expected.reference)
    np.testing.assert_array_equal(new.live, expected.live)
    np.testing.assert_array_equal(new.ingested, with_warmup_ingested(expected))


# --- through the daemon -------------------------------------------------------------------


@pytest.fixture
def warming_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A warmup stream of 300 rows beside a fixed stream of 400 monitors."""
    features = [
        {
            "name": f"f{i}",
            "type": "numeric",
            "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 8},
        }
        for i in range(400)
    ]
    doc = {
        "ingest": {"workers": 4, "queue_rows": 1_000_000},
        "engine": {"evaluate_every": "100ms"},
        "defaults": {"window": {"length": "1h", "panes": 6}},
        "streams": [
            {"name": "wide", "reference": {"warmup": 1}, "features": features},
            {
                "name": "w",
                "reference": {"warmup": 300},
                "features": [
                    {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 5}}
                ],
            },
        ],
        "alerts": [{"name": "js", "metric": "js", "threshold": 0.05}],
    }
    path = tmp_path / "driftmon.yaml"
    path.write_text(json.dumps(doc))
    with DaemonProcess(path) as process:
        yield process


def test_rows_posted_around_a_freeze_are_all_counted(warming_daemon: DaemonProcess) -> None:
    reply = warming_daemon.post_json("wide", json.dumps([{"f0": 0.5}]).encode())
    assert reply.status == 200, reply.body
    senders, batches, size = 6, 20, 7  # 840 rows: the warmup's 300 and 540 after it
    failures: list[object] = []

    def send(k: int) -> None:
        for b in range(batches):
            values = [((k * batches + b) * size + i) % 97 / 97 for i in range(size)]
            body = json.dumps([{"x": v} for v in values]).encode()
            reply = warming_daemon.post_json("w", body)
            if reply.status != 200:
                failures.append((reply.status, reply.body))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    total = senders * batches * size
    monitor = warming_daemon.monitor("w", "x")
    assert sum(monitor["live_counts"]) == total - 300
    assert sum(monitor["reference_counts"]) == 300
    samples = warming_daemon.metrics()
    assert sample(samples, "driftmon_ingest_rows_total", stream="w") == total
    wait_for(
        lambda: (
            sample(warming_daemon.metrics(), "driftmon_window_samples", stream="w", feature="x")
            == total - 300
        ),
        what="an evaluation over every row past the warmup",
    )
