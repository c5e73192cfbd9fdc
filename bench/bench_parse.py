"""Benchmark of the parse stage: ingest bodies into columns (driftmon.sources.bodies).

Bodies of ``--rows`` rows x ``--features`` numeric features in the three
forms (a JSON array of row objects, NDJSON, a ``columns`` object), plus two
harder variants of the row array: one with a ``NaN`` literal (decoded by the
standard-library fallback) and one whose rows carry an unrequested array
field (the exact nesting-depth scan runs). For each, the median time of:

- ``parse_body``: the daemon's parse of the body;
- ``orjson.loads``: the bare decode (per line for NDJSON);
- ``loads+asarray``: the decode plus one ``np.asarray(float64)`` per feature
  column, the ceiling an ingest path could reach with orjson.

The candidates run interleaved (one of each per round), so their ratios are
measured under the same machine load. Run::

    python bench/bench_parse.py [--rows 1000] [--features 20] [--rounds 300]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from driftmon.sources import parse_body

JSON = "application/json"
NDJSON = "application/x-ndjson"


def _rows_ceiling(rows: list[dict[str, object]], names: Sequence[str]) -> list[np.ndarray]:
    return [np.asarray([row[name] for row in rows], dtype=np.float64) for name in names]


def _ndjson_loads(body: bytes) -> list[object]:
    return list(map(orjson.loads, io.BytesIO(body)))


def build_cases(
    n_rows: int, n_features: int, seed: int
) -> list[tuple[str, bytes, str, dict[str, Callable[[], object]]]]:
    """(name, body, content type, candidates) for every body form."""
    rng = np.random.default_rng(seed)
    names = [f"feature_{i:02d}" for i in range(n_features)]
    values = rng.normal(size=(n_rows, n_features))
    rows = [dict(zip(names, map(float, row), strict=True)) for row in values]
    rows_body = orjson.dumps(rows)
    ndjson_body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    columns_body = orjson.dumps(
        {"columns": {name: values[:, i].tolist() for i, name in enumerate(names)}}
    )
    nan_rows = [dict(row) for row in rows]
    nan_rows[-1][names[0]] = float("nan")
    nan_body = json.dumps(nan_rows).encode()
    nested_rows = [dict(row, embedding=[0.5] * 8) for row in rows]
    nested_body = orjson.dumps(nested_rows)

    def rows_candidates(body: bytes) -> dict[str, Callable[[], object]]:
        return {
            "parse_body": lambda: parse_body(body, JSON, names),
            "orjson.loads": lambda: orjson.loads(body),
            "loads+asarray": lambda: _rows_ceiling(orjson.loads(body), names),
        }

    def columns_ceiling() -> list[np.ndarray]:
        columns = orjson.loads(columns_body)["columns"]
        return [np.asarray(columns[name], dtype=np.float64) for name in names]

    return [
        ("json rows", rows_body, JSON, rows_candidates(rows_body)),
        (
            "ndjson",
            ndjson_body,
            NDJSON,
            {
                "parse_body": lambda: parse_body(ndjson_body, NDJSON, names),
                "orjson.loads": lambda: _ndjson_loads(ndjson_body),
                "loads+asarray": lambda: _rows_ceiling(_ndjson_loads(ndjson_body), names),  # type: ignore[arg-type]
            },
        ),
        (
            "json columns",
            columns_body,
            JSON,
            {
                "parse_body": lambda: parse_body(columns_body, JSON, names),
                "orjson.loads": lambda: orjson.loads(columns_body),
                "loads+asarray": columns_ceiling,
            },
        ),
        (
            "json rows, one NaN",
            nan_body,
            JSON,
            {
                "parse_body": lambda: parse_body(nan_body, JSON, names),
                "json.loads": lambda: json.loads(nan_body),
            },
        ),
        ("json rows + array field", nested_body, JSON, rows_candidates(nested_body)),
    ]


def median_seconds(candidates: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time of each candidate, run interleaved for ``rounds`` rounds."""
    for run in candidates.values():  # warm-up: imports, caches, allocator
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows per body (default 1000)")
    parser.add_argument(
        "--features", type=int, default=20, help="numeric features per row (default 20)"
    )
    parser.add_argument("--rounds", type=int, default=300, help="timed rounds (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.features < 1 or args.rounds < 1:
        parser.error("--rows, --features and --rounds must be >= 1")

    n_values = args.rows * args.features
    print(
        f"parse bodies of {args.rows} rows x {args.features} numeric features "
        f"({n_values} values), median of {args.rounds} interleaved rounds"
    )
    header = (
        f"{'body':<24} {'bytes':>9}  {'candidate':<14} {'median ms':>10} "
        f"{'Mvalues/s':>10} {'vs parse_body':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, body, content_type, candidates in build_cases(args.rows, args.features, args.seed):
        batch = parse_body(body, content_type, [f"feature_{i:02d}" for i in range(args.features)])
        assert batch.n_rows == args.rows
        medians = median_seconds(candidates, args.rounds)
        reference = medians["parse_body"]
        for index, (candidate, seconds) in enumerate(medians.items()):
            label = name if index == 0 else ""
            size = f"{len(body):>9}" if index == 0 else " " * 9
            print(
                f"{label:<24} {size}  {candidate:<14} {seconds * 1e3:>10.3f} "
                f"{n_values / seconds / 1e6:>10.2f} {seconds / reference:>13.2f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
