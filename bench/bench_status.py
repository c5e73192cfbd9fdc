"""Benchmark of what holds the ingest lock besides ingest: scrape status and warmup freezes.

1. **Scrape status**: the per-monitor ingest totals by kind
   (``driftmon_ingest_values_total``) at M = 10 000 / 100 000 monitors. The
   engine's snapshot (:meth:`Engine.value_kinds`: one copy under the lock,
   the totals by one ``np.bincount`` outside it) against the baseline, a
   Python loop over every monitor (what ``Daemon.status`` ran under the lock
   before), both measured here. Columns: the time under the lock, and the
   time until the exporter has every total.
2. **Warmup freeze**: one 10-feature warmup stream completes beside M packed
   monitors; the ingest call that freezes it (taken under the ingest lock by
   the daemon) against a full :meth:`Engine._repack` of the same engine, the
   baseline (what every freeze did before).

Medians over ``--rounds`` rounds. The machine may be shared: compare the
ratios within one run. Run::

    python bench/bench_status.py [--monitors 10000,100000] [--rounds 5] [--sections status,freeze]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from bench_engine import build_engine, fill

from driftmon.binning import NumericBinner
from driftmon.config import FeatureConfig, ReferenceConfig, StreamConfig, TimeWindow, UniformBins
from driftmon.engine import Engine

WINDOW = TimeWindow(length_s=900.0, panes=15)
WARMUP_FEATURES = 10
WARMUP_ROWS = 200


def loop_value_kinds(engine: Engine) -> list[tuple[str, str, dict[str, float]]]:
    """The baseline: totals by kind, one Python dict per monitor."""
    result = []
    for monitor in engine.monitors:
        counts = engine.ingested[monitor.bins]
        binner = monitor.binner
        if isinstance(binner, NumericBinner):
            n = binner.n_regular
            kinds = {
                "ok": float(np.sum(counts[1 : n + 1])),
                "underflow": float(counts[0]),
                "overflow": float(counts[n + 1]),
                "missing": float(counts[n + 2]),
                "invalid": float(counts[n + 3]),
            }
        else:
            c = len(binner.categories)
            kinds = {
                "ok": float(np.sum(counts[:c])),
                "other": float(counts[c]),
                "missing": float(counts[c + 1]),
                "invalid": float(counts[c + 2]),
            }
        result.append((monitor.stream, monitor.feature, kinds))
    return result


def median_s(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def drain(totals: object) -> None:
    for _stream, _feature, kinds in totals:  # type: ignore[attr-defined]
        for _kind, _count in kinds.items():
            pass


def bench_status(n_monitors: int, rounds: int) -> str:
    engine = build_engine(n_monitors, WINDOW)
    fill(engine, 50)
    loop_s = median_s(lambda: drain(loop_value_kinds(engine)), rounds)
    snapshot = getattr(engine, "value_kinds", None)
    if snapshot is None:
        return f"status  M={n_monitors:>7}: loop {loop_s * 1e3:9.1f} ms under the lock"
    locked_s = median_s(snapshot, rounds)
    total_s = median_s(lambda: drain(snapshot()), rounds)
    assert list(snapshot()) == loop_value_kinds(engine)
    return (
        f"status  M={n_monitors:>7}: loop {loop_s * 1e3:9.1f} ms under the lock | snapshot "
        f"{locked_s * 1e3:7.2f} ms under the lock ({loop_s / locked_s:6.0f}x less), "
        f"{total_s * 1e3:7.1f} ms until every total is out"
    )


def _with_warmup_stream(engine: Engine) -> Engine:
    bins = UniformBins(-4.0, 4.0, 28)
    features = tuple(
        FeatureConfig(name=f"w{i}", type="numeric", smoothing=0.5, bins=bins)
        for i in range(WARMUP_FEATURES)
    )
    stream = StreamConfig(
        name="warming",
        reference=ReferenceConfig(kind="warmup", warmup_rows=WARMUP_ROWS),
        window=WINDOW,
        features=features,
    )
    config = dataclasses.replace(engine.config, streams=(*engine.config.streams, stream))
    references = dict(engine.references())
    return Engine(config, now=0.0, references=references)


def bench_freeze(n_monitors: int, rounds: int) -> str:
    freeze_times, repack_times = [], []
    rng = np.random.default_rng(3)
    columns = {f"w{i}": rng.normal(size=WARMUP_ROWS) for i in range(WARMUP_FEATURES)}
    base = build_engine(n_monitors, WINDOW)
    for _ in range(rounds):
        engine = _with_warmup_stream(base)
        started = time.perf_counter()
        engine.ingest("warming", WARMUP_ROWS, columns, 1.0)
        freeze_times.append(time.perf_counter() - started)
        assert engine.warmup_progress("warming") is None
        started = time.perf_counter()
        engine._repack()
        repack_times.append(time.perf_counter() - started)
    freeze_s, repack_s = statistics.median(freeze_times), statistics.median(repack_times)
    return (
        f"freeze  M={n_monitors:>7}: full repack {repack_s * 1e3:8.1f} ms | freezing ingest "
        f"{freeze_s * 1e3:8.1f} ms ({repack_s / freeze_s:5.1f}x less)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--monitors", default="10000,100000", help="comma-separated M")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sections", default="status,freeze", help="status, freeze or both")
    args = parser.parse_args(argv)
    counts = [int(m) for m in args.monitors.split(",")]
    sections = args.sections.split(",")
    if "status" in sections:
        for m in counts:
            print(bench_status(m, args.rounds), flush=True)
    if "freeze" in sections:
        for m in counts:
            print(bench_freeze(m, args.rounds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
