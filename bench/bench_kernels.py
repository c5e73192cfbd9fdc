"""The numeric core's benchmark, one command: ``python bench/bench_kernels.py``.

Runs, in one process and one after the other, the divergence benchmark
(``bench_divergence.py``), the binning benchmark (``bench_binning.py``) and
the JIT start-up benchmark (``bench_startup.py``); each prints its own table of
medians and ratios against baselines measured in the same run, with the
issue's targets marked. ``--only divergence|binning|startup`` runs one part.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_binning  # noqa: E402
import bench_divergence  # noqa: E402
import bench_startup  # noqa: E402

PARTS = {
    "divergence": bench_divergence.main,
    "binning": bench_binning.main,
    "startup": bench_startup.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected parts; the exit status is the first non-zero part's."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(PARTS), action="append")
    args = parser.parse_args(argv)
    status = 0
    for name in args.only or list(PARTS):
        print(f"\n=== {name} ===", flush=True)
        result = PARTS[name]([])
        status = status or int(result or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
