"""Benchmark of the engine (driftmon.engine): evaluation passes and ingest.

Three measurements, each a median over interleaved rounds:

1. **Evaluation pass** over M = 1 000 / 10 000 / 100 000 numeric monitors of
   K = 32 bins (uniform, 28 regular bins), windows holding rows, one alert rule
   over every monitor: ``Engine.evaluate`` (window rotation, every docs/divergences.md
   divergence, Wasserstein, sample counts, the alert state machine) per pass
   and per monitor, next to the bare packed kernels (``PackedDivergence`` +
   ``PackedWasserstein`` on the same arrays) so the engine's share shows.
2. **Window length**: a pass over 8 monitors while their window holds 10**4 ..
   10**7 rows, for a pane window and a sample window. Target: flat (the
   slowest size within 1.5x of the fastest), since a window keeps its live
   counts up to date as rows arrive and an evaluation reads only counts.
3. **Ingest**: 10**5 rows x 20 numeric features (K = 32) from float64 numpy
   columns through ``Engine.ingest``, pane and sample windows, against the bare
   binning on the same arrays (``NumericBinner.add`` per column, the checked
   wrapper; and the raw kernel). Target: >= 200 M values/s on one core.

References are passed in (``Engine(config, references=...)``), so no file is
read; configs are built from the ``driftmon.config`` dataclasses. The machine
may be shared: compare ratios within one run, not absolute figures across
runs. Run::

    python bench/bench_engine.py [--monitors 1000,10000,100000] [--rounds 7]
                                 [--max-window-rows 10000000] [--threads N] [--strict]

Exits 0; with ``--strict``, 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numba
import numpy as np

from driftmon.binning import NumericBinner
from driftmon.config import (
    AlertRule,
    Config,
    EdgesBins,
    FeatureConfig,
    ReferenceConfig,
    SampleWindow,
    StreamConfig,
    TimeWindow,
    UniformBins,
)
from driftmon.divergence import PARALLEL_MIN_BINS, PackedDivergence, PackedWasserstein
from driftmon.engine import Engine
from driftmon.kernels import binning as kernels
from driftmon.reference import Reference

REGULAR_BINS = 28  # K = 28 + underflow, overflow, missing, invalid = 32
LO, HI = -4.0, 4.0
FEATURES_PER_STREAM = 1000
INGEST_ROWS = 100_000
INGEST_FEATURES = 20
TARGET_VALUES_PER_S = 200e6
FLATNESS_LIMIT = 1.5


def _layout(kind: str) -> tuple[UniformBins | EdgesBins, NumericBinner]:
    if kind == "uniform":
        return UniformBins(LO, HI, REGULAR_BINS), NumericBinner.uniform(LO, HI, REGULAR_BINS)
    # Uneven explicit edges (normal quantiles), the harder lookup.
    edges = np.unique(np.round(np.sort(np.random.default_rng(1).normal(size=REGULAR_BINS + 1)), 6))
    return EdgesBins(tuple(edges.tolist())), NumericBinner.from_edges(edges)


def build_engine(
    n_monitors: int,
    window: TimeWindow | SampleWindow,
    *,
    features_per_stream: int = FEATURES_PER_STREAM,
    kind: str = "uniform",
    seed: int = 0,
) -> Engine:
    """An engine of ``n_monitors`` numeric monitors (K = 32) with random references.

    Monitors are spread over streams of ``features_per_stream`` features each;
    one ``js`` rule matches every monitor.
    """
    bins, binner = _layout(kind)
    rng = np.random.default_rng(seed)
    streams = []
    references = {}
    for s in range(0, n_monitors, features_per_stream):
        n_features = min(features_per_stream, n_monitors - s)
        name = f"s{s // features_per_stream:04d}"
        features = tuple(
            FeatureConfig(name=f"f{i:04d}", type="numeric", smoothing=0.5, bins=bins)
            for i in range(n_features)
        )
        streams.append(
            StreamConfig(
                name=name,
                reference=ReferenceConfig(kind="warmup", warmup_rows=1),
                window=window,
                features=features,
            )
        )
        counts = rng.poisson(40.0, size=(n_features, binner.n_bins)).astype(np.float64)
        references[name] = Reference((binner,) * n_features, tuple(counts), int(counts[0].sum()))
    rule = AlertRule("js-high", "*", "*", "js", threshold=0.1, for_s=60.0, min_samples=100)
    config = Config(streams=tuple(streams), alerts=(rule,))
    return Engine(config, now=0.0, references=references)


def fill(engine: Engine, rows: int, seed: int = 2) -> None:
    """Send ``rows`` rows of normal data to every stream at time 0."""
    rng = np.random.default_rng(seed)
    for name in engine.stream_names():
        features = [f.name for f in engine.stream_config(name).features]
        columns = {f: rng.normal(size=rows) for f in features}
        engine.ingest(name, rows, columns, 0.0)


def median_s(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each candidate, one call of each per round (interleaved)."""
    for run in candidates.values():
        run()  # warm up: JIT caches, first-touch allocations
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(samples) for name, samples in times.items()}


# --- 1. evaluation pass over M monitors ---------------------------------------------------------


def bench_evaluation(monitor_counts: Sequence[int], rounds: int) -> list[str]:
    lines = [
        "1. evaluation pass, K = 32 (numeric, uniform), pane windows with rows, one rule/monitor",
        f"{'monitors':>9} {'pass':>10} {'per monitor':>12} {'kernels':>10} {'engine/kernels':>15}",
    ]
    for m in monitor_counts:
        engine = build_engine(m, TimeWindow(900.0, 15))
        fill(engine, 200)
        result = _time_pass_and_kernels(engine, rounds)
        lines.append(
            f"{m:>9,} {result['pass'] * 1e3:>8.2f}ms {result['pass'] / m * 1e9:>10.0f}ns "
            f"{result['kernels'] * 1e3:>8.2f}ms {result['pass'] / result['kernels']:>14.2f}x"
        )
    return lines


def _time_pass_and_kernels(engine: Engine, rounds: int) -> dict[str, float]:
    """Median ``Engine.evaluate`` pass and the bare packed kernels on the same arrays."""
    # Passes 15 s apart, as evaluate_every: windows rotate as in the daemon.
    clock = iter(range(15, 15 * (10 * rounds + 10), 15))
    n_monitors = len(engine.monitors)
    divergence = PackedDivergence(engine.reference, engine.bin_offsets, np.full(n_monitors, 0.5))
    edges = [m.binner.edges for m in engine.monitors]  # type: ignore[union-attr]
    wasserstein = PackedWasserstein(engine.reference, engine.bin_offsets[:-1], edges)

    def kernels_only() -> None:
        divergence.evaluate(engine.live)
        wasserstein.evaluate(engine.live)

    result = median_s(
        {"pass": lambda: engine.evaluate(float(next(clock))), "kernels": kernels_only}, rounds
    )
    evaluation = engine.evaluate(float(next(clock)))
    assert np.isfinite(evaluation.values["js"]).all()  # every monitor computed, none absent
    return result


# --- 2. pass cost against window length --------------------------------------------------------


def bench_window_length(max_rows: int, rounds: int) -> tuple[list[str], bool]:
    sizes = [n for n in (10**4, 10**5, 10**6, 10**7) if n <= max_rows]
    n_features = 8
    lines = [
        f"2. evaluation pass against window length ({n_features} monitors, K = 32); "
        f"target: flat (slowest <= {FLATNESS_LIMIT}x fastest)",
        f"{'window':>8} " + " ".join(f"{n:>10,}" for n in sizes) + f" {'max/min':>9}  target",
    ]
    chunk = 10**6
    rng = np.random.default_rng(3)
    block = {f"f{i:04d}": rng.normal(size=chunk) for i in range(n_features)}
    all_flat = True
    for label in ("panes", "samples"):
        times = []
        for n in sizes:
            window = TimeWindow(3600.0, 60) if label == "panes" else SampleWindow(n)
            engine = build_engine(n_features, window, features_per_stream=n_features)
            sent = 0
            while sent < n:
                take = min(chunk, n - sent)
                columns = {name: values[:take] for name, values in block.items()}
                # Pane windows: the rows spread over the hour's panes.
                engine.ingest("s0000", take, columns, 3600.0 * sent / n)
                sent += take
            assert engine.evaluate(3599.0).window_samples.min() == n
            times.append(_time_pass(engine, 3599.0, rounds))
            del engine  # a 10**7-row sample ring is large: free it before the next
        ratio = max(times) / min(times)
        flat = ratio <= FLATNESS_LIMIT
        all_flat &= flat
        cells = " ".join(f"{t * 1e6:>8.0f}us" for t in times)
        lines.append(f"{label:>8} {cells} {ratio:>8.2f}x  {'ok' if flat else 'MISSED'}")
    return lines, all_flat


def _time_pass(engine: Engine, now: float, rounds: int) -> float:
    return median_s({"pass": lambda: engine.evaluate(now)}, rounds)["pass"]


# --- 3. ingest ------------------------------------------------------------------------------------


def bench_ingest(rounds: int) -> tuple[list[str], bool]:
    values = INGEST_ROWS * INGEST_FEATURES
    lines = [
        f"3. ingest, {INGEST_ROWS:,} rows x {INGEST_FEATURES} numeric features from float64 "
        f"columns; target >= {TARGET_VALUES_PER_S / 1e6:.0f} M values/s (engine, one core)",
        f"{'bins':>8} {'candidate':<26} {'time':>9} {'M values/s':>11} "
        f"{'vs binner.add':>14}  target",
    ]
    rng = np.random.default_rng(4)
    columns = {f"f{i:04d}": rng.normal(size=INGEST_ROWS) for i in range(INGEST_FEATURES)}
    arrays = list(columns.values())
    met = True
    for kind in ("uniform", "edges"):
        engines = {
            "Engine.ingest, panes": build_engine(
                INGEST_FEATURES, TimeWindow(900.0, 15), features_per_stream=INGEST_FEATURES,
                kind=kind,
            ),
            "Engine.ingest, samples": build_engine(
                INGEST_FEATURES, SampleWindow(10**6), features_per_stream=INGEST_FEATURES,
                kind=kind,
            ),
        }  # fmt: skip
        binner = engines["Engine.ingest, panes"].monitors[0].binner
        assert isinstance(binner, NumericBinner) and binner.n_bins == 32
        candidates: dict[str, Callable[[], object]] = {
            name: (lambda e=engine: e.ingest("s0000", INGEST_ROWS, columns, 1.0))
            for name, engine in engines.items()
        }
        candidates.update(_bare_binning(binner, arrays))
        result = median_s(candidates, rounds)
        for name, seconds in result.items():
            rate = values / seconds
            mark = ""
            if name.startswith("Engine"):
                ok = rate >= TARGET_VALUES_PER_S
                met &= ok
                mark = "ok" if ok else "MISSED"
            ratio = seconds / result["NumericBinner.add x20"]
            lines.append(
                f"{kind:>8} {name:<26} {seconds * 1e3:>7.2f}ms {rate / 1e6:>11.0f} "
                f"{ratio:>13.2f}x  {mark}"
            )
    return lines, met


def _bare_binning(
    binner: NumericBinner, arrays: Sequence[np.ndarray]
) -> dict[str, Callable[[], object]]:
    """The binning alone on the same columns: the checked wrapper, and the raw kernel."""
    counts = np.zeros(binner.n_bins)

    def checked() -> None:
        for array in arrays:
            binner.add(array, counts)

    def raw() -> None:
        scale = REGULAR_BINS / (HI - LO)
        for array in arrays:
            kernels.uniform_count(array, LO, HI, scale, REGULAR_BINS, counts)

    candidates: dict[str, Callable[[], object]] = {"NumericBinner.add x20": checked}
    if binner.kind == "uniform":
        candidates["kernels.uniform_count x20"] = raw
    return candidates


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monitors", default="1000,10000,100000", help="comma-separated M")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per candidate")
    parser.add_argument("--max-window-rows", type=int, default=10**7)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--threads", type=int, default=0, help="numba threads for the parallel pass (0: default)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)
    print(
        f"numba threads: {numba.get_num_threads()} (the divergence pass runs in parallel "
        f"from {PARALLEL_MIN_BINS} bins on)\n"
    )
    monitor_counts = [int(m) for m in args.monitors.split(",") if m]
    started = time.perf_counter()
    report = bench_evaluation(monitor_counts, args.rounds)
    window_lines, flat = bench_window_length(args.max_window_rows, args.rounds)
    ingest_lines, fast = bench_ingest(max(args.rounds, 11))
    for block in (report, window_lines, ingest_lines):
        print("\n".join(block))
        print()
    print(f"(medians of interleaved rounds; {time.perf_counter() - started:.0f} s in all)")
    return 1 if args.strict and not (flat and fast) else 0


if __name__ == "__main__":
    sys.exit(main())
