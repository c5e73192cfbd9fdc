"""JIT start-up cost of every kernel module: cold compile versus warm cache load.

Run ``python bench/bench_startup.py``. Every module of ``driftmon.kernels``
(found with ``pkgutil``, so modules added later are included) is imported and,
if it defines ``warm_up()``, that is called: it runs each kernel of the module
once on tiny inputs. This happens in fresh subprocesses with
``NUMBA_CACHE_DIR`` set to a new temporary directory: the first run compiles
everything (cold: what a first start of the daemon pays), the next runs load
the ``cache=True`` artefacts from that directory (warm: every later start).
The table gives, per module, the import time and the ``warm_up()`` time of the
cold run and the median of the warm runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import importlib, json, pkgutil, sys, time, traceback
started = time.perf_counter()
import numba  # noqa: F401  (the import cost of numba itself, reported apart)
numba_s = time.perf_counter() - started
start = time.perf_counter()
import driftmon.kernels as package
package_s = time.perf_counter() - start
report = {"numba_import_s": numba_s, "package_import_s": package_s, "modules": {}}
for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
    name = f"{package.__name__}.{info.name}"
    entry = {}
    try:
        start = time.perf_counter()
        module = importlib.import_module(name)
        entry["import_s"] = time.perf_counter() - start
        warm_up = getattr(module, "warm_up", None)
        if callable(warm_up):
            start = time.perf_counter()
            warm_up()
            entry["warm_up_s"] = time.perf_counter() - start
    except Exception:
        entry["error"] = traceback.format_exc(limit=3)
    report["modules"][name] = entry
report["total_s"] = time.perf_counter() - started
print(json.dumps(report))
"""


def run_child(cache_dir: str) -> dict[str, object]:
    """One fresh interpreter importing and warming every kernel module."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    result = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"child failed ({result.returncode}):\n{result.stderr}")
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 if a kernel module fails to import or warm up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-runs", type=int, default=3, help="warm runs (median shown)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="driftmon-numba-cache-") as cache_dir:
        cold = run_child(cache_dir)
        warm_runs = [run_child(cache_dir) for _ in range(max(1, args.warm_runs))]

    cold_modules: dict[str, dict[str, object]] = cold["modules"]  # type: ignore[assignment]
    print(f"NUMBA_CACHE_DIR: a fresh temporary directory; cold = first run in it, "
          f"warm = median of {len(warm_runs)} later runs")
    print(f"numba import: {_seconds(float(cold['numba_import_s'])).strip()}; then "
          f"driftmon (which imports the divergence kernels): "
          f"{_seconds(float(cold['package_import_s'])).strip()}; the import column is "
          "each module's time on top of that (cold run)")
    header = (f"{'module':<34} {'import':>9} {'warm_up cold':>13} {'warm_up warm':>13} "
              f"{'speed-up':>9}")
    print(header)
    print("-" * len(header))
    failed = False
    for name, entry in cold_modules.items():
        if "error" in entry:
            failed = True
            print(f"{name:<34} ERROR\n{entry['error']}")
            continue
        warm_entries = [run["modules"][name] for run in warm_runs]  # type: ignore[index]
        if "warm_up_s" not in entry:
            print(f"{name:<34} {_seconds(float(entry['import_s']))}  (no warm_up())")
            continue
        cold_s = float(entry["warm_up_s"])
        warm_s = statistics.median(float(w["warm_up_s"]) for w in warm_entries)
        print(f"{name:<34} {_seconds(float(entry['import_s']))} {_seconds(cold_s):>13} "
              f"{_seconds(warm_s):>13} {cold_s / warm_s:>8.0f}x")
    warm_total = statistics.median(float(run["total_s"]) for run in warm_runs)
    print(f"{'all (numba import included)':<34} {'':>9} {_seconds(float(cold['total_s'])):>13} "
          f"{_seconds(warm_total):>13}")
    return 1 if failed else 0


def _seconds(value: float) -> str:
    return f"{value * 1e3:>7.0f} ms" if value < 10 else f"{value:>7.1f} s "


if __name__ == "__main__":
    sys.exit(main())
