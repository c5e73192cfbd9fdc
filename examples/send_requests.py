"""Send predict requests to the example model service, optionally drifted.

    python examples/send_requests.py --url http://127.0.0.1:8080 --requests 200
    python examples/send_requests.py --url http://127.0.0.1:8080 --requests 100 --drift

Each request carries ``--batch`` instances ``[age, income, region]`` drawn
from a fixed population: age normal(42, 12) within [18, 90), income
log-normal (median 50 000, log-sd 0.5), region north/south/east/west at
40/30/20/10 %. ``--drift`` shifts it the way a new customer segment would:
incomes up 60 % and the regions at 10/20/30/40 %. With
``examples/driftmon.yaml`` the first 1000 rows become the reference, so send
at least 100 requests of 10 before drifting.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import urllib.request

MODEL_NAME = "income-model"
REGIONS = ("north", "south", "east", "west")


def instance(rng: random.Random, drift: bool) -> list[object]:
    """One ``[age, income, region]`` row of the population (drifted or not)."""
    age = min(89.0, max(18.0, rng.gauss(42.0, 12.0)))
    income = 50_000.0 * rng.lognormvariate(0.0, 0.5) * (1.6 if drift else 1.0)
    weights = (0.1, 0.2, 0.3, 0.4) if drift else (0.4, 0.3, 0.2, 0.1)
    region = rng.choices(REGIONS, weights)[0]
    return [round(age, 1), round(income, 2), region]


def main(argv: list[str] | None = None) -> int:
    """Send the requests; print how many predictions came back."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the model service")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10, help="instances per request")
    parser.add_argument("--drift", action="store_true", help="send the shifted population")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    endpoint = f"{args.url.rstrip('/')}/v1/models/{MODEL_NAME}:predict"
    predictions = 0
    for _ in range(args.requests):
        body = {"instances": [instance(rng, args.drift) for _ in range(args.batch)]}
        request = urllib.request.Request(
            endpoint,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            predictions += len(json.load(response)["predictions"])
    print(f"{predictions} predictions from {endpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
