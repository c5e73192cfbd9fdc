"""Write the small reference data files that config/example.yaml and config/demo.yaml name.

Deterministic: the files depend only on the seeds below, never on the
Python or numpy version, because every draw comes from
``random.Random.random()`` (whose sequence Python keeps stable for a given
seed) through explicit inverse transforms written here, and every number
is written with a fixed number of decimals. Re-running the script rewrites
byte-identical files; ``tests/test_config.py`` checks that.

    python config/data/make_data.py            # rewrite the files next to this script
    python config/data/make_data.py --out DIR  # write them somewhere else
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

CREDIT_ROWS = 2000
SHOP_ROWS = 1000

# 14 regions, so that example.yaml's `top_k: 12` leaves two of them to `other`.
REGIONS = (
    "north", "south", "east", "west", "central", "coast", "highlands", "islands",
    "lakes", "valley", "plains", "delta", "forest", "desert",
)  # fmt: skip
DEVICES = ("web", "ios", "android")
COUNTRIES = ("DE", "FR", "ES", "IT", "NL", "PL", "SE")


def normal(rng: random.Random, mean: float, sd: float) -> float:
    """One normal draw by Box-Muller on two uniform draws."""
    u1 = 1.0 - rng.random()  # in (0, 1]: log(0) must not happen
    u2 = rng.random()
    return mean + sd * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def choice(rng: random.Random, options: Sequence[str], weights: Sequence[float]) -> str:
    """One of ``options`` with probability proportional to ``weights``."""
    cumulative = list(itertools.accumulate(weights))
    return options[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


def zipf_weights(count: int, exponent: float = 1.1) -> list[float]:
    """Weights ``1/rank^exponent``: a few frequent categories and a long tail."""
    return [1.0 / (rank**exponent) for rank in range(1, count + 1)]


def credit_rows(seed: int = 20240501) -> list[dict[str, str]]:
    """The `credit` stream's reference (example.yaml): income, age, utilisation, region.

    income: log-normal, median 42000, log-sd 0.5, whole units, 1% missing (empty cell);
    age: normal(42, 12) redrawn until in [18, 98), whole years;
    utilisation: u**1.6 for uniform u, in [0, 1), 4 decimals;
    region: Zipf(1.1) over REGIONS.
    """
    rng = random.Random(seed)
    region_weights = zipf_weights(len(REGIONS))
    rows = []
    for _ in range(CREDIT_ROWS):
        income = math.exp(normal(rng, math.log(42000.0), 0.5))
        missing_income = rng.random() < 0.01
        age = normal(rng, 42.0, 12.0)
        while not 18.0 <= age < 98.0:
            age = normal(rng, 42.0, 12.0)
        rows.append(
            {
                "income": "" if missing_income else f"{income:.0f}",
                "age": f"{math.floor(age)}",
                "utilisation": f"{rng.random() ** 1.6:.4f}",
                "region": choice(rng, REGIONS, region_weights),
            }
        )
    return rows


def shop_rows(seed: int = 20240502) -> list[dict[str, object]]:
    """The `shop` stream's reference (demo.yaml): basket_value, items, device, country.

    basket_value: log-normal, median 35, log-sd 0.6, 2 decimals;
    items: 1 + floor(|normal(0, 3)|), capped at 19;
    device: web 50%, ios 30%, android 20%;
    country: Zipf(1.1) over COUNTRIES.
    """
    rng = random.Random(seed)
    country_weights = zipf_weights(len(COUNTRIES))
    rows: list[dict[str, object]] = []
    for _ in range(SHOP_ROWS):
        basket_value = math.exp(normal(rng, math.log(35.0), 0.6))
        items = min(19, 1 + math.floor(abs(normal(rng, 0.0, 3.0))))
        rows.append(
            {
                "basket_value": round(basket_value, 2),
                "items": items,
                "device": choice(rng, DEVICES, (0.5, 0.3, 0.2)),
                "country": choice(rng, COUNTRIES, country_weights),
            }
        )
    return rows


def write_all(out_dir: Path) -> list[Path]:
    """Write every data file into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    credit_path = out_dir / "credit_reference.csv"
    credit = credit_rows()
    columns = list(credit[0])
    # Written by hand rather than with csv.writer, whose line ending depends on options;
    # no value here needs quoting.
    lines = [",".join(columns)] + [",".join(row[c] for c in columns) for row in credit]
    credit_path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")

    shop_path = out_dir / "shop_reference.ndjson"
    shop_lines = [json.dumps(row, separators=(",", ":")) for row in shop_rows()]
    shop_path.write_text("\n".join(shop_lines) + "\n", encoding="utf-8", newline="\n")
    return [credit_path, shop_path]


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
