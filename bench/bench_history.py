"""Benchmark of the history ring (driftmon.history): memory, evaluation cost, checkpoint size.

For M = 10 000 numeric monitors (K = 32, bench_engine's engine), with the
history off (``engine.history: {length: 0s}``, the baseline), at the default
(``{length: 1h, every: 1m}``: 60 entries) and at ``{length: 6h}`` evaluating
every 15 s (1 440 entries), once the ring is full:

- the ring's bytes (its arrays' ``nbytes``) and the resident memory it adds
  (VmRSS of this process after filling it, minus before building it);
- an evaluation pass (``Engine.evaluate``, which records into the ring),
  median over interleaved rounds, as a ratio to the pass without history;
- the checkpoint's size, and its write time, against the one without history.

Run::

    python bench/bench_history.py [--monitors 10000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import build_engine, fill, median_s  # noqa: E402

from driftmon.checkpoint import write_checkpoint  # noqa: E402
from driftmon.config import EngineConfig, SampleWindow  # noqa: E402
from driftmon.engine import Engine, reusable_references  # noqa: E402

CASES = {
    "off (length 0s)": EngineConfig(evaluate_every_s=15.0, history_length_s=0.0),
    "default (1h, every 1m)": EngineConfig(evaluate_every_s=15.0),
    "6h at every 15 s eval": EngineConfig(
        evaluate_every_s=15.0, history_length_s=6 * 3600.0, history_every_s=15.0
    ),
}


def rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    assert found is not None
    return int(found.group(1)) * 1024


def engine_with(n_monitors: int, engine_config: EngineConfig) -> Engine:
    engine = build_engine(n_monitors, SampleWindow(samples=1000))
    config = dataclasses.replace(engine.config, engine=engine_config)
    # Same references, new engine config: a fresh engine sized by it.
    return Engine(config, now=0.0, references=reusable_references(engine, config))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monitors", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    m = args.monitors
    print(f"history ring, M = {m} monitors (K = 32), evaluate_every 15 s")
    engines: dict[str, Engine] = {}
    step = 15.0
    for name, engine_config in CASES.items():
        before = rss_bytes()
        engine = engine_with(m, engine_config)
        fill(engine, 200)
        capacity = engine.history.capacity
        every = max(engine_config.history_every_s, step)
        for k in range(capacity):  # fill the ring: every entry written once
            engine.evaluate(k * every)
        grown = rss_bytes() - before
        engines[name] = engine
        print(
            f"  {name:24s} entries {capacity:5d}  ring {engine.history.nbytes / 2**20:8.1f} MiB"
            f"  RSS added by the engine {grown / 2**20:8.1f} MiB"
        )
    clock = {name: [engine.now] for name, engine in engines.items()}

    def evaluate(name: str) -> None:
        engine = engines[name]
        every = max(CASES[name].history_every_s, step)
        clock[name][0] += every  # each pass is due: it records
        engine.evaluate(clock[name][0])

    passes = median_s({n: (lambda n=n: evaluate(n)) for n in engines}, args.rounds)
    base = passes["off (length 0s)"]
    print("evaluation pass (records one entry), median:")
    for name, seconds in passes.items():
        print(f"  {name:24s} {seconds * 1e3:8.2f} ms   x{seconds / base:5.2f}")
    print("checkpoint:")
    with tempfile.TemporaryDirectory() as folder:
        base_size = base_s = 0.0
        for name, engine in engines.items():
            started = time.perf_counter()
            path = write_checkpoint(Path(folder) / name.split()[0], engine.export_state(),
                                    saved_at=1.0)
            took = time.perf_counter() - started
            size = path.stat().st_size
            if not base_size:
                base_size, base_s = size, took
            print(
                f"  {name:24s} {size / 2**20:8.1f} MiB  x{size / base_size:6.2f}"
                f"   write {took * 1e3:7.1f} ms  x{took / base_s:5.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
