"""A toy model service that logs every prediction to driftmon with ``driftmon.client``.

    driftmon run -c examples/driftmon.yaml                    # in one terminal
    python examples/model_service.py --port 8080              # in another
    python examples/send_requests.py --url http://127.0.0.1:8080 --requests 200

It speaks KServe's V1 protocol over the standard library's HTTP server (no
web framework), so the same requests work against this service and against
the InferenceService of ``kserve-inferenceservice.yaml``:

- ``POST /v1/models/income-model:predict`` with ``{"instances": [...]}``,
  each instance ``[age, income, region]`` or
  ``{"age": ..., "income": ..., "region": ...}``; answers
  ``{"predictions": [score, ...]}``, a probability per instance.
- ``GET /v1/models/income-model``: ``{"name": "income-model", "ready": true}``.
- ``GET /stats``: the driftmon client's counters (rows logged, sent, dropped, ...).

Each instance and its score go to driftmon as one row,
``{"age", "income", "region", "score"}``, with ``Client.log``: a copy into a
buffer, so a slow or absent driftmon never slows a prediction down. The
client batches the rows in a background thread; on exit (Ctrl-C or SIGTERM)
it flushes what is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from driftmon.client import Client

MODEL_NAME = "income-model"
FEATURES = ("age", "income", "region")
REGION_WEIGHT = {"north": 0.3, "south": -0.2, "east": 0.1, "west": -0.4}
MAX_BODY_BYTES = 1 << 20


def score(age: float, income: float, region: str) -> float:
    """The toy model: a logistic regression with made-up weights; a probability in (0, 1).

    An unknown region weighs 0, the way a one-hot encoder that ignores
    unknown categories would treat it.
    """
    z = -0.5 + 0.03 * (age - 40.0) + 0.00002 * (income - 50_000.0) + REGION_WEIGHT.get(region, 0.0)
    return 1.0 / (1.0 + math.exp(-max(-500.0, min(500.0, z))))


class BadRequest(Exception):
    """A predict body this model cannot score; the message names the instance."""


def features_of(instance: object, index: int) -> dict[str, Any]:
    """``{"age", "income", "region"}`` of one V1 instance (a list by position, or an object)."""
    if isinstance(instance, list):
        if len(instance) != len(FEATURES):
            raise BadRequest(f"instances[{index}]: expected [age, income, region]")
        row = dict(zip(FEATURES, instance, strict=True))
    elif isinstance(instance, dict):
        missing = [name for name in FEATURES if name not in instance]
        if missing:
            raise BadRequest(f"instances[{index}]: missing {', '.join(missing)}")
        row = {name: instance[name] for name in FEATURES}
    else:
        raise BadRequest(f"instances[{index}]: expected a list or an object")
    for name in ("age", "income"):
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"instances[{index}].{name}: expected a number")
    if not isinstance(row["region"], str):
        raise BadRequest(f"instances[{index}].region: expected a string")
    return row


class ModelServer(ThreadingHTTPServer):
    """The HTTP server, holding the driftmon client its handlers log to."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], monitor: Client) -> None:
        super().__init__(address, ModelHandler)
        self.monitor = monitor


class ModelHandler(BaseHTTPRequestHandler):
    """KServe V1 predict and model-status endpoints, and ``/stats``."""

    server: ModelServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        if self.path != f"/v1/models/{MODEL_NAME}:predict":
            self._answer(404, {"error": f"no route {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self._answer(400, {"error": "expected a JSON body with a Content-Length"})
            return
        try:
            body = json.loads(self.rfile.read(length))
            instances = body["instances"] if isinstance(body, dict) else None
            if not isinstance(instances, list):
                raise BadRequest('expected {"instances": [...]}')
            rows = [features_of(instance, i) for i, instance in enumerate(instances)]
        except (ValueError, KeyError, BadRequest) as exc:
            self._answer(400, {"error": str(exc)})
            return
        predictions = []
        for row in rows:
            row["score"] = score(row["age"], row["income"], row["region"])
            predictions.append(row["score"])
        # One buffer append for the whole request; never blocks on driftmon.
        self.server.monitor.log_many(rows)
        self._answer(200, {"predictions": predictions})

    def do_GET(self) -> None:
        if self.path == f"/v1/models/{MODEL_NAME}":
            self._answer(200, {"name": MODEL_NAME, "ready": True})
        elif self.path == "/stats":
            self._answer(200, dataclasses.asdict(self.server.monitor.stats))
        else:
            self._answer(404, {"error": f"no route {self.path}"})

    def _answer(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log: a model service's log has better things to show


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C or SIGTERM, then flush the driftmon client and print its stats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--driftmon", default="http://127.0.0.1:9108", help="driftmon's URL")
    parser.add_argument("--stream", default=MODEL_NAME, help="the driftmon stream to feed")
    parser.add_argument("--token", help="driftmon's bearer token, if it sets auth_token_file")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with Client(args.driftmon, args.stream, token=args.token) as monitor:
        with ModelServer((args.host, args.port), monitor) as server:
            host, port = server.server_address[:2]
            print(f"model service listening on http://{host}:{port}", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
        print("flushing rows to driftmon...", flush=True)
    stats = monitor.stats
    print(
        f"driftmon client: {stats.rows_logged} rows logged, {stats.rows_accepted} accepted, "
        f"{stats.rows_dropped} dropped, {stats.rows_rejected} rejected"
        + (f" (last error: {stats.last_error})" if stats.last_error else ""),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
