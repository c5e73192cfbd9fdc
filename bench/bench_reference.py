"""Loading a numeric reference: the columnar loader against the row loader and bare pyarrow.

Run ``python bench/bench_reference.py`` (``--rows`` to change the size;
default 1,000,000 rows x 20 float columns, 10 quantile bins each). The data
is written once as CSV and Parquet to a temporary folder. Times: per format,
one fresh interpreter (binning kernels warmed on a tiny input first) runs the
bare read and the columnar loader in turn, ``--repeat`` rounds, and reports
each one's median, so a load spike on a shared machine hits both alike. Peak
RSS: each loader once more, alone in a fresh interpreter (imports included).
Loaders:

- ``rows-csv``: the row loader this replaced (``driftmon.parse.read_table``,
  the csv module and ``float()``, then ``build_reference``); once, as it is slow;
- ``columnar-csv`` / ``columnar-parquet``: ``load_reference_file``, the
  loader the daemon, ``reference build`` and ``replay`` use (Arrow read,
  quantile edges learned, every column binned);
- ``bare-csv`` / ``bare-parquet``: ``pyarrow.csv.read_csv`` /
  ``pyarrow.parquet.read_table`` alone, the floor for any Arrow-based loader.

Ratios printed: row loader / columnar CSV (goal >= 10), columnar / bare for
each format (goal <= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, statistics, sys, time
from pathlib import Path
kinds, path = sys.argv[1].split(","), Path(sys.argv[2])
repeat, n_features = int(sys.argv[3]), int(sys.argv[4])
from driftmon.config import FeatureConfig, QuantileBins, ReferenceConfig, SampleWindow, StreamConfig
names = [f"f{i}" for i in range(n_features)]
stream = StreamConfig(
    name="bench",
    reference=ReferenceConfig(kind="file", path=path),
    window=SampleWindow(1000),
    features=tuple(FeatureConfig(n, "numeric", 0.5, bins=QuantileBins(10)) for n in names),
)
def load(kind):
    if kind == "bare-csv":
        import pyarrow.csv
        return pyarrow.csv.read_csv(path).num_rows
    if kind == "bare-parquet":
        import pyarrow.parquet
        return pyarrow.parquet.read_table(path).num_rows
    if kind == "rows-csv":
        from driftmon.parse import read_table
        from driftmon.reference import build_reference
        batch = read_table(path, names, numeric_fields=names)
        return build_reference(stream, batch.n_rows, batch.columns).rows
    from driftmon.reference import load_reference_file
    return load_reference_file(stream, path).rows
if any(not kind.startswith("bare") for kind in kinds):
    from driftmon.binning import NumericBinner
    import numpy as np
    NumericBinner.from_edges([0.0, 1.0, 2.0]).add(np.zeros(3), np.zeros(6))  # compile/load kernels
times = {kind: [] for kind in kinds}
for _ in range(repeat):
    for kind in kinds:  # interleaved: a load spike hits every loader alike
        started = time.perf_counter()
        load(kind)
        times[kind].append(time.perf_counter() - started)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"median_s": {k: statistics.median(v) for k, v in times.items()},
                  "peak_rss_bytes": peak}))
"""


def write_data(folder: Path, rows: int, features: int) -> tuple[Path, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    columns = {}
    for i in range(features):
        # Six significant digits, as training data exported to CSV usually has.
        columns[f"f{i}"] = np.round(rng.normal(i, 1.0 + i / 10, rows), 4)
    table = pa.table(columns)
    csv_path, parquet_path = folder / "reference.csv", folder / "reference.parquet"
    pa_csv.write_csv(table, csv_path)
    pq.write_table(table, parquet_path)
    return csv_path, parquet_path


def measure(kinds: list[str], path: Path, repeat: int, features: int) -> dict[str, object]:
    """Run ``kinds`` interleaved ``repeat`` times in one fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(kinds), str(path), str(repeat), str(features)],
        capture_output=True, text=True, check=False, env=dict(os.environ),
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{kinds} failed:\n{result.stderr}")
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="loads per fast measurement")
    parser.add_argument("--skip-rows-loader", action="store_true", help="leave the slow one out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        csv_path, parquet_path = write_data(Path(folder), args.rows, args.features)
        mib = 1 << 20
        print(
            f"{args.rows} rows x {args.features} float columns: CSV "
            f"{csv_path.stat().st_size / mib:.0f} MiB, Parquet "
            f"{parquet_path.stat().st_size / mib:.0f} MiB"
        )
        times: dict[str, float] = {}
        for pair, path in (
            (["bare-csv", "columnar-csv"], csv_path),
            (["bare-parquet", "columnar-parquet"], parquet_path),
        ):
            times.update(measure(pair, path, args.repeat, args.features)["median_s"])  # type: ignore[arg-type]
        loaders = [("bare-csv", csv_path), ("columnar-csv", csv_path),
                   ("bare-parquet", parquet_path), ("columnar-parquet", parquet_path)]  # fmt: skip
        if not args.skip_rows_loader:
            loaders.append(("rows-csv", csv_path))
        for kind, path in loaders:
            # Peak memory: one load in a fresh interpreter of its own.
            alone = measure([kind], path, 1, args.features)
            if kind == "rows-csv":
                times[kind] = alone["median_s"][kind]  # type: ignore[index]
            rss = alone["peak_rss_bytes"] / mib  # type: ignore[operator]
            rounds = 1 if kind == "rows-csv" else args.repeat
            print(
                f"  {kind:17s} median {times[kind]:7.3f} s over {rounds}   "
                f"peak RSS {rss:6.0f} MiB"
            )
        t = times
        ratio = t["columnar-csv"] / t["bare-csv"]
        print(f"columnar CSV / bare read_csv:       {ratio:.2f}x (<= 2)")
        print(
            f"columnar Parquet / bare read_table: "
            f"{t['columnar-parquet'] / t['bare-parquet']:.2f}x (<= 2)"
        )
        if "rows-csv" in t:
            ratio = t["rows-csv"] / t["columnar-csv"]
            print(f"row loader / columnar CSV:          {ratio:.1f}x (>= 10)")
            print(
                f"row loader / columnar Parquet:      {t['rows-csv'] / t['columnar-parquet']:.1f}x"
            )
        print(f"machine load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

if __name__ == "__main__":
    main()
