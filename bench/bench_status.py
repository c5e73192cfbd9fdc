"""Benchmark of what a scrape holds the ingest lock for (warmup freezes: bench_freeze.py).

The per-monitor ingest totals by kind
   (``driftmon_ingest_values_total``) at M = 10 000 / 100 000 monitors. The
   engine's snapshot (:meth:`Engine.value_kinds`: one copy under the lock,
   the totals by one ``np.bincount`` outside it) against the baseline, a
   Python loop over every monitor (what ``Daemon.status`` ran under the lock
   before), both measured here. Columns: the time under the lock, and the
   time until the exporter has every total.

Medians over ``--rounds`` rounds. The machine may be shared: compare the
ratios within one run. Run::

    python bench/bench_status.py [--monitors 10000,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from bench_engine import build_engine, fill

from driftmon.binning import NumericBinner
from driftmon.config import TimeWindow
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--monitors", default="10000,100000", help="comma-separated M")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    counts = [int(m) for m in args.monitors.split(",")]
    for m in counts:
        print(bench_status(m, args.rounds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
