"""Flood the running daemon with more rows than it can take (issue 7, promise 4; docs/http-api.md).

A real daemon (``python -m driftmon run``, port 0) with a small ingest queue
(``ingest.queue_rows``) is posted to by ``--senders`` closed-loop senders on
keep-alive connections, each posting its next body the moment the previous
one is answered, 503 or not (no back-off: rude clients). Bodies carry
between 55 % and 95 % of the queue's rows (or of ``--body-rows``), in the
three body formats, so two bodies being binned at once overflow the queue.
Meanwhile a prober process of its own times ``GET /-/healthy`` and
``GET /metrics`` (each on a new connection, as a health checker does) every
0.25 s and reads the VmRSS of the daemon and of its parse processes, if any
(``ingest.processes``), from ``/proc/PID/status``.

Promises (any one broken makes the exit status 1):

- the queue stays bounded: ``driftmon_ingest_queue_rows`` <=
  ``driftmon_ingest_queue_capacity_rows`` at every scrape;
- surplus requests get 503 with a ``Retry-After`` of at least one second, and
  no answer is any other status, nor a transport error, nor missing;
- ``/-/healthy`` and ``/metrics`` each answer within 1 s, every time;
- RSS stays under the bound: the idle RSS (before the flood) plus
  ``--rss-allowance-mib`` (default 256 MiB). What a flood may make the daemon
  hold: bodies being read, at most ``max(64 MiB, 4 × max_body_bytes)``
  (``driftmon/server.py`` ``read_body``), bodies waiting for a worker, as much
  again (``Daemon.run_job``), and the rows each worker parses and bins, some
  ten times its body's size in Python objects; plus the allocator's slack;
- every row acknowledged with a 200 is counted exactly once: once the queue
  has drained, ``driftmon_ingest_rows_total`` and the live window grew by
  exactly the rows of the 200 answers, and ``driftmon_ingest_requests_total``
  by exactly the answers per code;
- the flood was one: some requests got 200 and some 503.

``tests/test_flood.py`` runs it for 15 s; the long run is::

    python bench/flood.py [--duration 300] [--senders 32] [--queue-rows 20000]
                          [--body-rows N] [--workers 2] [--processes 0] [--max-body-bytes B]
                          [--rss-allowance-mib 256]

It prints the figures: requests by status, rows acknowledged, health and
metrics latency (median, p99, max), largest queue seen against its capacity,
idle, peak and final RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import DaemonProcess, parse_metrics, rss_bytes, sample, series  # noqa: E402

STREAM = "flood"
FEATURES = ("x", "y", "c", "d")
LATENCY_BOUND_S = 1.0
"""``/-/healthy`` and ``/metrics`` must each answer within this during a flood."""
REQUEST_TIMEOUT_S = 60.0
"""A flood request not answered within this is a failure (a hang)."""


def write_config(
    folder: Path, *, queue_rows: int, workers: int, max_body_bytes: int, processes: int = 0
) -> Path:
    """The flooded daemon's config (and reference file) in ``folder``."""
    rng = np.random.default_rng(1)
    rows = [
        {
            "x": round(float(v), 4),
            "y": round(float(w), 4),
            "c": ("red", "green", "blue")[i % 3],
            "d": ("a", "b")[i % 2],
        }
        for i, (v, w) in enumerate(zip(rng.normal(5, 2, 500), rng.uniform(0, 1, 500), strict=True))
    ]
    (folder / "reference.ndjson").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": max_body_bytes},
        "ingest": {"workers": workers, "queue_rows": queue_rows, "processes": processes},
        "engine": {"evaluate_every": "1s"},
        "state": {"dir": str(folder / "state"), "checkpoint_every": "5s"},
        "defaults": {"window": {"length": "1h", "panes": 4}},
        "streams": [
            {
                "name": STREAM,
                "reference": {"file": "reference.ndjson"},
                "features": [
                    {"name": "x", "type": "numeric",
                     "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 20}},
                    {"name": "y", "type": "numeric", "bins": {"kind": "quantile", "count": 10}},
                    {"name": "c", "type": "categorical", "categories": ["red", "green", "blue"]},
                    {"name": "d", "type": "categorical", "top_k": 2},
                ],
            }
        ],
    }  # fmt: skip
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass(frozen=True)
class Body:
    """One request body, its content type and its rows."""

    data: bytes
    content_type: str
    rows: int


def make_bodies(queue_rows: int, count: int, seed: int = 2) -> list[Body]:
    """``count`` bodies of 55-95 % of ``queue_rows`` rows each, the three formats in turn.

    Two such bodies binned at once overflow the queue; one alone never does
    (a single request larger than the whole queue is admitted when the queue
    is empty, so that it can be taken at all: see ``Daemon.ingest_batches``).
    """
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(count):
        n = int(rng.integers(int(0.55 * queue_rows) + 1, int(0.95 * queue_rows) + 1))
        xs = np.round(rng.normal(5.5, 2, n), 3).tolist()
        ys = np.round(rng.uniform(0, 1.2, n), 3).tolist()
        cs = rng.choice(["red", "green", "blue", "pink"], n).tolist()
        ds = rng.choice(["a", "b", "c"], n).tolist()
        kind = i % 3
        if kind == 0:
            rows = [
                {"x": x, "y": y, "c": c, "d": d} for x, y, c, d in zip(xs, ys, cs, ds, strict=True)
            ]
            bodies.append(Body(json.dumps(rows).encode(), "application/json", n))
        elif kind == 1:
            columns = {"x": xs, "y": ys, "c": cs, "d": ds}
            bodies.append(Body(json.dumps({"columns": columns}).encode(), "application/json", n))
        else:
            text = "".join(
                json.dumps({"x": x, "y": y, "c": c, "d": d}) + "\n"
                for x, y, c, d in zip(xs, ys, cs, ds, strict=True)
            )
            bodies.append(Body(text.encode(), "application/x-ndjson", n))
    return bodies


@dataclass
class FloodResult:
    """What one flood saw."""

    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    acked_rows: int = 0
    transport_errors: list[str] = field(default_factory=list)
    bad_retry_after: list[str] = field(default_factory=list)
    other_answers: list[str] = field(default_factory=list)
    health_s: list[float] = field(default_factory=list)
    metrics_s: list[float] = field(default_factory=list)
    slow_probes: list[str] = field(default_factory=list)
    queue_rows: list[float] = field(default_factory=list)
    queue_capacity_rows: float = 0.0
    rss_idle_bytes: int = 0
    rss_samples: list[int] = field(default_factory=list)
    rss_final_bytes: int = 0
    rows_total_grew: float = 0.0
    live_grew: float = 0.0
    requests_grew: dict[str, float] = field(default_factory=dict)

    @property
    def rss_peak_bytes(self) -> int:
        """The largest RSS sampled during the flood (the idle one if none)."""
        return max(self.rss_samples, default=self.rss_idle_bytes)


def _requests_by_code(text: str) -> dict[str, float]:
    samples = parse_metrics(text)
    return {
        dict(labels)["code"]: value
        for labels, value in series(samples, "driftmon_ingest_requests_total").items()
    }


async def _scrape(session: aiohttp.ClientSession, url: str) -> tuple[float, str]:
    started = time.perf_counter()
    async with session.get(url + "/metrics") as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
    return time.perf_counter() - started, text


async def _live_total(session: aiohttp.ClientSession, url: str) -> float:
    """Rows in the live window of the stream's first feature (every row reaches it)."""
    async with session.get(f"{url}/api/v1/monitors/{STREAM}/{FEATURES[0]}") as response:
        if response.status != 200:
            raise RuntimeError(f"monitor detail answered {response.status}")
        return float(sum((await response.json())["live_counts"]))


async def flood(
    url: str,
    pid: int,
    bodies: Sequence[Body],
    *,
    senders: int,
    duration_s: float,
    probe_every_s: float = 0.25,
) -> FloodResult:
    """Flood ``url`` for ``duration_s`` seconds; the figures (judge them with :func:`problems`)."""
    result = FloodResult(rss_idle_bytes=rss_bytes(pid))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    # Scrapes before and after have their own session: never queued behind the senders'.
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=senders), timeout=timeout
        ) as flood_session,
        aiohttp.ClientSession(timeout=timeout) as probe_session,
    ):
        _, text = await _scrape(probe_session, url)
        before_rows = sample(parse_metrics(text), "driftmon_ingest_rows_total", stream=STREAM) or 0
        before_requests = _requests_by_code(text)
        before_live = await _live_total(probe_session, url)
        started = time.monotonic()
        deadline = started + duration_s

        async def sender(index: int) -> None:
            n = index
            while time.monotonic() < deadline:
                body = bodies[n % len(bodies)]
                n += senders
                try:
                    async with flood_session.post(
                        f"{url}/v1/streams/{STREAM}/rows",
                        data=body.data,
                        headers={"Content-Type": body.content_type},
                    ) as response:
                        payload = await response.read()
                        status = response.status
                        retry_after = response.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.transport_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.statuses[status] += 1
                if status == 200:
                    rows = json.loads(payload)["rows"]
                    if rows != body.rows:
                        result.other_answers.append(f"200 with {rows} rows for {body.rows}")
                    result.acked_rows += rows
                elif status == 503:
                    if retry_after is None or not retry_after.isdigit() or int(retry_after) < 1:
                        result.bad_retry_after.append(repr(retry_after))
                else:
                    result.other_answers.append(f"{status}: {payload[:200]!r}")

        # The prober is a process of its own: what it measures is the daemon, not this
        # process's event loop, busy pushing the flood.
        prober = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--probe",
            url,
            str(pid),
            str(probe_every_s),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.gather(*(sender(i) for i in range(senders)))
        result.seconds = time.monotonic() - started
        assert prober.stdin is not None
        prober.stdin.close()
        probed, _ = await prober.communicate()
        for line in probed.decode().splitlines():
            seen = json.loads(line)
            if "error" in seen:
                result.slow_probes.append(seen["error"])
                continue
            if seen["healthy"] != 200:
                result.slow_probes.append(f"/-/healthy answered {seen['healthy']}")
            result.health_s.append(seen["health_s"])
            result.metrics_s.append(seen["metrics_s"])
            result.queue_rows.append(seen["queue_rows"])
            result.queue_capacity_rows = seen["queue_capacity_rows"]
            result.rss_samples.append(seen["rss_bytes"])

        # Every answer is in: the queue drains, and the counters must add up exactly.
        settle_deadline = time.monotonic() + 30
        while True:
            _, text = await _scrape(probe_session, url)
            samples = parse_metrics(text)
            if sample(samples, "driftmon_ingest_queue_rows") == 0:
                break
            if time.monotonic() > settle_deadline:
                result.other_answers.append("the queue did not drain within 30 s")
                break
            await asyncio.sleep(0.05)
        after_rows = sample(samples, "driftmon_ingest_rows_total", stream=STREAM) or 0
        result.rows_total_grew = after_rows - before_rows
        result.live_grew = await _live_total(probe_session, url) - before_live
        after_requests = _requests_by_code(text)
        result.requests_grew = {
            code: after_requests.get(code, 0.0) - before_requests.get(code, 0.0)
            for code in set(after_requests) | set(before_requests)
        }
        result.rss_final_bytes = rss_bytes(pid)
    return result


_QUEUE_LINE = re.compile(r"^(driftmon_ingest_queue(?:_capacity)?_rows) (\S+)$", re.MULTILINE)


def probe(url: str, pid: int, every_s: float) -> int:
    """``--probe``: time ``/-/healthy`` and ``/metrics`` until standard input closes.

    Prints one JSON object per probe: the two latencies in seconds (each on
    a new connection, as a health checker makes them), the health status,
    the queue gauge and capacity from the scrape, and the daemon's RSS.
    """
    import http.client
    import select
    from urllib.parse import urlsplit

    address = urlsplit(url)

    def get(path: str) -> tuple[int, bytes, float]:
        began = time.perf_counter()
        connection = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=30
        )
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read(), time.perf_counter() - began
        finally:
            connection.close()

    while True:
        began = time.perf_counter()
        try:
            healthy, _, health_s = get("/-/healthy")
            status, text, metrics_s = get("/metrics")
            if status != 200:
                raise RuntimeError(f"/metrics answered {status}")
            gauges = {name: float(value) for name, value in _QUEUE_LINE.findall(text.decode())}
            line: dict[str, object] = {
                "healthy": healthy,
                "health_s": health_s,
                "metrics_s": metrics_s,
                "queue_rows": gauges["driftmon_ingest_queue_rows"],
                "queue_capacity_rows": gauges["driftmon_ingest_queue_capacity_rows"],
                "rss_bytes": rss_bytes(pid),
            }
        except (OSError, RuntimeError, KeyError, http.client.HTTPException) as exc:
            line = {"error": f"probe failed: {type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)
        wait_s = max(0.0, every_s - (time.perf_counter() - began))
        if select.select([sys.stdin], [], [], wait_s)[0] and not sys.stdin.read(1):
            return 0  # standard input closed: the flood is over


def problems(result: FloodResult, rss_allowance_bytes: int) -> list[str]:
    """Every broken promise of a flood, as messages (empty when all held)."""
    found = []
    if result.statuses[200] == 0 or result.statuses[503] == 0:
        found.append(f"not a flood: answers {dict(result.statuses)} (needs both 200 and 503)")
    if result.transport_errors:
        found.append(
            f"{len(result.transport_errors)} transport errors: {result.transport_errors[:3]}"
        )
    if result.other_answers:
        found.append(f"unexpected answers: {result.other_answers[:5]}")
    if result.bad_retry_after:
        found.append(f"503 without a valid Retry-After: {result.bad_retry_after[:5]}")
    if result.slow_probes:
        found.append(f"probes failed: {result.slow_probes[:5]}")
    if not result.health_s:
        found.append("no probe completed")
    for name, latencies in (("/-/healthy", result.health_s), ("/metrics", result.metrics_s)):
        slow = [s for s in latencies if s > LATENCY_BOUND_S]
        if slow:
            found.append(
                f"{name} took over {LATENCY_BOUND_S} s {len(slow)} times: max {max(slow):.3f} s"
            )
    over = [q for q in result.queue_rows if q > result.queue_capacity_rows]
    if over or result.queue_capacity_rows <= 0:
        found.append(
            f"queue over its capacity {result.queue_capacity_rows:g} at {len(over)} scrapes: "
            f"max {max(result.queue_rows, default=0):g}"
        )
    bound = result.rss_idle_bytes + rss_allowance_bytes
    if result.rss_peak_bytes > bound:
        found.append(
            f"RSS peaked at {result.rss_peak_bytes / 2**20:.0f} MiB, over the bound "
            f"{bound / 2**20:.0f} MiB (idle {result.rss_idle_bytes / 2**20:.0f} MiB)"
        )
    if result.rows_total_grew != result.acked_rows:
        found.append(
            f"driftmon_ingest_rows_total grew by {result.rows_total_grew:g}, "
            f"200 answers acknowledged {result.acked_rows} rows"
        )
    if result.live_grew != result.acked_rows:
        found.append(
            f"the live window of {STREAM}/{FEATURES[0]} grew by {result.live_grew:g} rows, "
            f"200 answers acknowledged {result.acked_rows}"
        )
    answered = {str(code): float(n) for code, n in result.statuses.items()}
    grown = {code: n for code, n in result.requests_grew.items() if n}
    if grown != answered:
        found.append(f"driftmon_ingest_requests_total grew by {grown}, answers were {answered}")
    return found


def _quantiles(values: Sequence[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms over {len(ordered)} probes"
    )


def print_figures(result: FloodResult, rss_allowance_bytes: int) -> None:
    """The figures of a flood, for the issue's closing note."""
    mib = 2**20
    total = sum(result.statuses.values())
    print(f"flood:                 {result.seconds:.1f} s, {total} requests, "
          f"{total / max(result.seconds, 1e-9):.0f}/s")  # fmt: skip
    print(f"answers by status:     {dict(sorted(result.statuses.items()))}")
    print(f"rows acknowledged:     {result.acked_rows} "
          f"({result.acked_rows / max(result.seconds, 1e-9):.0f}/s); "
          f"rows_total grew by {result.rows_total_grew:g}, "
          f"the live window by {result.live_grew:g}")  # fmt: skip
    print(f"/-/healthy latency:    {_quantiles(result.health_s)}")
    print(f"/metrics latency:      {_quantiles(result.metrics_s)}")
    print(f"queue rows:            max {max(result.queue_rows, default=0):g} "
          f"of capacity {result.queue_capacity_rows:g}")  # fmt: skip
    print(f"RSS:                   idle {result.rss_idle_bytes / mib:.0f} MiB, "
          f"peak {result.rss_peak_bytes / mib:.0f} MiB, final {result.rss_final_bytes / mib:.0f} "
          f"MiB (bound {(result.rss_idle_bytes + rss_allowance_bytes) / mib:.0f} MiB)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Start a daemon, flood it, print the figures; the exit status."""
    with tempfile.TemporaryDirectory(prefix="driftmon-flood-") as folder:
        config = write_config(
            Path(folder),
            queue_rows=args.queue_rows,
            workers=args.workers,
            max_body_bytes=args.max_body_bytes,
            processes=args.processes,
        )
        bodies = make_bodies(args.body_rows or args.queue_rows, 12)
        largest = max(len(body.data) for body in bodies)
        if largest > args.max_body_bytes:
            print(f"--max-body-bytes {args.max_body_bytes} < largest body {largest}")
            return 2
        with DaemonProcess(config) as process:
            assert process.process is not None
            result = asyncio.run(
                flood(
                    process.url,
                    process.process.pid,
                    bodies,
                    senders=args.senders,
                    duration_s=args.duration,
                )
            )
            alive = process.process.poll() is None
        allowance = args.rss_allowance_mib * 2**20
        print(f"bodies:                {len(bodies)}, {min(b.rows for b in bodies)}-"
              f"{max(b.rows for b in bodies)} rows, up to {largest / 1024:.0f} KiB")  # fmt: skip
        print_figures(result, allowance)
        found = problems(result, allowance)
        if not alive:
            found.append("the daemon exited during the flood")
    for problem in found:
        print(f"BROKEN PROMISE: {problem}", file=sys.stderr)
    print("PASS" if not found else "FAIL")
    return 0 if not found else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: see the module docstring."""
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--probe":  # the prober process that flood() starts
        return probe(argv[1], int(argv[2]), float(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of flood")
    parser.add_argument("--senders", type=int, default=32, help="concurrent senders")
    parser.add_argument("--queue-rows", type=int, default=20_000, help="ingest.queue_rows")
    parser.add_argument("--workers", type=int, default=2, help="ingest.workers")
    parser.add_argument(
        "--processes", type=int, default=0, help="ingest.processes (parse processes)"
    )
    parser.add_argument(
        "--body-rows",
        type=int,
        default=0,
        help="bodies of 55-95 %% of this many rows (default: --queue-rows; a larger queue "
        "then makes the byte bounds, not the row bound, turn the surplus away)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=4 * 2**20, help="server.max_body_bytes"
    )
    parser.add_argument("--rss-allowance-mib", type=int, default=256, help="RSS over idle")
    args = parser.parse_args(argv)
    if args.body_rows > args.queue_rows:
        parser.error("--body-rows over --queue-rows: the queue bound could not hold")
    if min(args.senders, args.queue_rows, args.workers, args.rss_allowance_mib) < 1:
        parser.error("--senders, --queue-rows, --workers, --rss-allowance-mib must be positive")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return run(args)


if __name__ == "__main__":
    # A TERM (from `timeout`, CI) unwinds the `with` blocks, so the daemon is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
