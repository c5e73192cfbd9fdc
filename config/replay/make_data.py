"""Write config/replay/payments.csv, the event log that config/replay/payments.yaml replays.

Two hours of a payment model's inputs, one row every 2 seconds of event time
(3600 rows, ``ts`` in RFC 3339 UTC), whose distribution shifts at the
one-hour mark (:data:`SHIFT_AT_S`):

- ``amount``: log-normal, median 40 before the shift and 64 after it
  (log-sd 0.5), 2 decimals, 1% missing (empty cell);
- ``latency_ms``: normal(120, 30) clipped at 0, 1 decimal; does not drift;
- ``channel``: web/ios/android 50/30/20 % before, 30/30/40 % after;
- ``country``: Zipf(1.1) over DE FR ES IT NL PL; does not drift.

Deterministic: every draw comes from ``random.Random.random()`` (a sequence
Python keeps stable for a given seed) through the inverse transforms below,
and every number is written with a fixed number of decimals, so re-running
the script rewrites a byte-identical file (tests/test_replay.py checks it).

    python config/replay/make_data.py            # rewrite the file next to this script
    python config/replay/make_data.py --out DIR  # write it somewhere else
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

START = datetime(2024, 5, 1, tzinfo=UTC)
"""Event time of the first row."""
ROW_EVERY_S = 2
"""Event-time spacing of the rows, in seconds."""
ROWS = 3600
"""Rows in the file: two hours at one row every ``ROW_EVERY_S`` seconds."""
SHIFT_AT_S = 3600
"""Seconds after ``START`` from which rows follow the shifted distribution."""
SEED = 20240503

CHANNELS = ("web", "ios", "android")
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "PL")
COLUMNS = ("ts", "amount", "latency_ms", "channel", "country")


def normal(rng: random.Random, mean: float, sd: float) -> float:
    """One normal draw by Box-Muller on two uniform draws."""
    u1 = 1.0 - rng.random()  # in (0, 1]: log(0) must not happen
    u2 = rng.random()
    return mean + sd * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def choice(rng: random.Random, options: Sequence[str], weights: Sequence[float]) -> str:
    """One of ``options`` with probability proportional to ``weights``."""
    cumulative = list(itertools.accumulate(weights))
    return options[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


def payment_rows(seed: int = SEED) -> list[dict[str, str]]:
    """Every row of the file, as the text of each cell."""
    rng = random.Random(seed)
    country_weights = [1.0 / rank**1.1 for rank in range(1, len(COUNTRIES) + 1)]
    rows = []
    for i in range(ROWS):
        offset_s = i * ROW_EVERY_S
        shifted = offset_s >= SHIFT_AT_S
        median = 64.0 if shifted else 40.0
        channel_weights = (0.3, 0.3, 0.4) if shifted else (0.5, 0.3, 0.2)
        amount = math.exp(normal(rng, math.log(median), 0.5))
        missing_amount = rng.random() < 0.01
        latency = max(0.0, normal(rng, 120.0, 30.0))
        stamp = (START + timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            {
                "ts": stamp,
                "amount": "" if missing_amount else f"{amount:.2f}",
                "latency_ms": f"{latency:.1f}",
                "channel": choice(rng, CHANNELS, channel_weights),
                "country": choice(rng, COUNTRIES, country_weights),
            }
        )
    return rows


def write_all(out_dir: Path) -> list[Path]:
    """Write the data file into ``out_dir``; returns its path in a list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "payments.csv"
    # Written by hand rather than with csv.writer, whose line ending depends on
    # options; no cell needs quoting.
    lines = [",".join(COLUMNS)] + [",".join(row[c] for c in COLUMNS) for row in payment_rows()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return [path]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--out DIR`` (default: this script's folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
