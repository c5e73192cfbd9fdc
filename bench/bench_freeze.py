"""Benchmark: how long a warmup freeze holds the ingest lock, beside M packed monitors.

One 10-feature warmup stream (200 rows) completes beside M = 10 000 / 100 000
numeric monitors (bench_engine's layout, 1000 features a stream, one ``js``
rule over every monitor, a full default history ring). Two ways, on engines
built alike, in the same run:

- **in one go** (the baseline): the ingest call that completes the warmup
  freezes it itself (``Engine.apply`` with the default ``defer_freeze=False``:
  plan and commit back to back), as replay and single-threaded callers do.
  Before the split, the daemon ran a freeze this way under its ingest lock
  (then a full re-pack of every monitor: bench/README.md has both figures).
- **plan, then commit** (what the ingest gate does now): the apply that
  completes the warmup only holds the rows (``defer_freeze=True``);
  :meth:`Engine.plan_freeze` learns the layout and builds the new packing
  without the lock; :meth:`Engine.commit_freeze` swaps it in under the lock.
  The time under the lock is that apply plus the commit.

Medians over ``--rounds`` rounds. The machine may be shared: compare the
ratios within one run. Run::

    python bench/bench_freeze.py [--monitors 10000,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np
from bench_engine import build_engine, fill

from driftmon.config import FeatureConfig, ReferenceConfig, StreamConfig, TimeWindow, UniformBins
from driftmon.engine import Engine, reusable_references

WINDOW = TimeWindow(length_s=900.0, panes=15)
WARMUP_FEATURES = 10
WARMUP_ROWS = 200


def with_warmup_stream(engine: Engine) -> Engine:
    """``engine``'s config and references plus one warmup stream, packed in the middle."""
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
    streams = list(engine.config.streams)
    streams.insert(len(streams) // 2, stream)
    config = dataclasses.replace(engine.config, streams=tuple(streams))
    warming = Engine(config, now=0.0, references=reusable_references(engine, config))
    fill_others(warming)
    return warming


def fill_others(engine: Engine) -> None:
    rng = np.random.default_rng(2)
    for name in engine.stream_names():
        if name == "warming":
            continue
        features = [f.name for f in engine.stream_config(name).features]
        engine.ingest(name, 50, {f: rng.normal(size=50) for f in features}, 0.0)
    # A full history ring (the default: 60 entries a monitor): a commit copies it whole.
    step = engine.history.every_s
    for k in range(engine.history.capacity):
        engine.evaluate(0.5 + k * step)


def bench(n_monitors: int, rounds: int) -> str:
    rng = np.random.default_rng(3)
    columns = {f"w{i}": rng.normal(size=WARMUP_ROWS + 5) for i in range(WARMUP_FEATURES)}
    base = build_engine(n_monitors, WINDOW)
    fill(base, 10)
    locked, deferred, planned = [], [], []
    deferring = hasattr(Engine, "plan_freeze")
    for _ in range(rounds):
        engine = with_warmup_stream(base)
        started = time.perf_counter()
        engine.ingest("warming", WARMUP_ROWS + 5, columns, 4000.0)  # plan and commit in one go
        locked.append(time.perf_counter() - started)
        assert engine.warmup_progress("warming") is None
        if not deferring:
            continue
        engine = with_warmup_stream(base)
        batch = engine.bin_batch("warming", WARMUP_ROWS + 5, columns)
        started = time.perf_counter()
        assert engine.apply(batch, 4000.0, defer_freeze=True)  # type: ignore[call-arg]
        held = time.perf_counter() - started
        started = time.perf_counter()
        plan = engine.plan_freeze("warming")  # type: ignore[attr-defined]
        planned.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert engine.commit_freeze(plan)  # type: ignore[attr-defined]
        deferred.append(held + time.perf_counter() - started)
        assert engine.warmup_progress("warming") is None
    locked_s = statistics.median(locked)
    line = (
        f"freeze M={n_monitors:>7}: in one go {locked_s * 1e3:8.1f} ms "
        f"(slowest {max(locked) * 1e3:8.1f})"
    )
    if deferred:
        deferred_s, planned_s = statistics.median(deferred), statistics.median(planned)
        line += (
            f" | plan (no lock) {planned_s * 1e3:8.1f} ms, under the lock "
            f"{deferred_s * 1e3:7.2f} ms (slowest {max(deferred) * 1e3:7.2f}; "
            f"{locked_s / deferred_s:6.0f}x less)"
        )
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--monitors", default="10000,100000", help="comma-separated M")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for m in (int(m) for m in args.monitors.split(",")):
        print(bench(m, args.rounds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
