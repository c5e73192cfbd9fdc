"""Benchmark of ``/metrics`` at scale: the scrape, and what the daemon still answers during it.

For each M (``--monitors``, default 10 000 and 100 000 monitors of 32 bins,
one alert rule over all), a server process builds the engine
(bench_engine.build_engine, 200 rows a monitor, one evaluation) inside a
real :class:`~driftmon.daemon.Daemon` and serves the daemon's real HTTP
app, plus one route for the baseline:

- **old**: ``GET /metrics-old``, what ``/metrics`` did before: the status
  taken and ``prometheus_client.generate_latest`` run over the same
  :class:`~driftmon.exporter.DriftCollector`, on the event loop, uncompressed
  (it ignored ``Accept-Encoding``);
- **new**: ``GET /metrics`` with ``Accept-Encoding: gzip`` as Prometheus
  sends it: rendered from columns in a thread, gzip level 1.

Both with Prometheus's ``Accept`` header (OpenMetrics first), or text 0.0.4
with ``--accept text``.

During every scrape this process pings ``GET /-/healthy`` every 10 ms and
posts a 10-row ingest body every 20 ms (each on its own keep-alive
connection), and samples the server's RSS every 20 ms. Per path, medians
over ``--rounds`` scrapes (the new path first, on the fresh server, then the
old one, each after one warm-up scrape): scrape time, body size
(new: gzipped, and plain once), the longest ``/-/healthy`` answer and the
longest ingest answer during the scrape, ingest requests answered during
it, and RSS before, peak during and after. Ratios are old ÷ new. The
machine may be shared: the load average is printed. Run::

    python bench/bench_scrape.py [--monitors 10000 100000] [--rounds 3] [--accept prometheus|text]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import child_environment, rss_bytes  # noqa: E402

HEALTH_EVERY_S = 0.010
INGEST_EVERY_S = 0.020
RSS_EVERY_S = 0.020
ROWS_PER_MONITOR = 200
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
"""What Prometheus 2.x sends (OpenMetrics first); ``--accept text`` asks for text 0.0.4."""


# --- the server process --------------------------------------------------------------------------


def serve(n_monitors: int) -> None:
    """Build a daemon of ``n_monitors`` monitors and serve its app until stdin closes."""
    from aiohttp import web
    from bench_engine import build_engine, fill

    from driftmon.cli import http_app
    from driftmon.config import TimeWindow
    from driftmon.daemon import Daemon
    from driftmon.exporter import exposition
    from driftmon.http.app import HttpListener
    from driftmon.kernels import warm_up_all

    warm_up_all()  # as the daemon does before it serves: no request pays for compiling
    engine = build_engine(n_monitors, TimeWindow(length_s=900.0, panes=15))
    fill(engine, ROWS_PER_MONITOR)
    daemon = Daemon(Path("bench-scrape.yaml"), engine.config)
    daemon.gate.engine = engine
    daemon.ready = True
    daemon.ready_once = True
    daemon.evaluate()

    async def old_metrics(request: web.Request) -> web.StreamResponse:
        body, content_type = exposition(daemon.registry, request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def main() -> None:
        app = http_app(daemon)
        app.router.add_get("/metrics-old", old_metrics)
        listener = HttpListener(app, "127.0.0.1", 0)
        url = await listener.start()
        heartbeat = asyncio.create_task(daemon.gate.loop_watch.beat())
        print(f"URL {url}", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes it
        heartbeat.cancel()
        await listener.stop()

    asyncio.run(main())
    daemon.gate.close()


# --- the measuring side --------------------------------------------------------------------------


@dataclass
class Round:
    """One scrape and what happened around it."""

    scrape_s: float = 0.0
    body_bytes: int = 0
    health_max_s: float = 0.0
    health_count: int = 0
    ingest_max_s: float = 0.0
    ingest_ok: int = 0
    ingest_other: list[int] = field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0


class Background(threading.Thread):
    """Repeats ``action`` every ``every_s`` until stopped; records each duration and result."""

    def __init__(self, action: object, every_s: float) -> None:
        super().__init__(daemon=True)
        self.action = action
        self.every_s = every_s
        self.stop = threading.Event()
        self.durations: list[float] = []
        self.results: list[object] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            result = self.action()  # type: ignore[operator]
            self.durations.append(time.perf_counter() - started)
            self.results.append(result)
            self.stop.wait(self.every_s)


def connection(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=600)


def requester(url: str, method: str, path: str, body: bytes | None, headers: dict[str, str]):
    conn = connection(url)

    def call() -> int:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    return call


def scrape_round(url: str, pid: int, path: str, headers: dict[str, str]) -> tuple[Round, bytes]:
    body = json.dumps([{"f0000": 0.1 * i, "f0001": -0.2 * i} for i in range(10)]).encode()
    health = Background(requester(url, "GET", "/-/healthy", None, {}), HEALTH_EVERY_S)
    ingest = Background(
        requester(
            url, "POST", "/v1/streams/s0000/rows", body, {"Content-Type": "application/json"}
        ),
        INGEST_EVERY_S,
    )
    rss = Background(lambda: rss_bytes(pid), RSS_EVERY_S)
    result = Round(rss_before=rss_bytes(pid))
    for thread in (health, ingest, rss):
        thread.start()
    time.sleep(0.2)  # the pingers settle into their rhythm
    marks = (len(health.durations), len(ingest.durations))
    conn = connection(url)
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    result.scrape_s = time.perf_counter() - started
    assert response.status == 200, response.status
    # The requests that were under way while the scrape ran, the last one included.
    for thread in (health, ingest, rss):
        thread.stop.set()
    for thread in (health, ingest, rss):
        thread.join(600)
    conn.close()
    during_health = health.durations[marks[0] :]
    during_ingest = ingest.durations[marks[1] :]
    statuses = ingest.results[marks[1] :]
    result.body_bytes = len(payload)
    result.health_max_s = max(during_health, default=0.0)
    result.health_count = len(during_health)
    result.ingest_max_s = max(during_ingest, default=0.0)
    result.ingest_ok = sum(1 for status in statuses if status == 200)
    result.ingest_other = [int(status) for status in statuses if status != 200]  # type: ignore[call-overload]
    result.rss_peak = max([result.rss_before, *[int(v) for v in rss.results]])  # type: ignore[call-overload]
    result.rss_after = rss_bytes(pid)
    return result, payload


def median(rounds: list[Round], name: str) -> float:
    return statistics.median(float(getattr(r, name)) for r in rounds)


def measure(n_monitors: int, rounds: int, accept: str) -> dict[str, object]:
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(n_monitors)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_environment(),
    )
    assert server.stdout is not None and server.stdin is not None
    line = server.stdout.readline()
    if not line.startswith("URL "):
        server.kill()
        raise SystemExit(f"server for {n_monitors} monitors did not start: {line!r}")
    url = line.split()[1]
    print(
        f"  {n_monitors} monitors: server ready in {time.monotonic() - started:.1f} s", flush=True
    )
    try:
        old: list[Round] = []
        new: list[Round] = []
        gzip_headers = {"Accept-Encoding": "gzip", "Accept": accept}
        fresh = rss_bytes(server.pid)
        # The new path first, on the fresh server, so that its RSS is not the old path's
        # leftovers; the first scrape of each path is a warm-up, not counted.
        scrape_round(url, server.pid, "/metrics", gzip_headers)
        plain_new, _ = scrape_round(url, server.pid, "/metrics", {"Accept": accept})
        for _ in range(rounds):
            result, zipped = scrape_round(url, server.pid, "/metrics", gzip_headers)
            assert gzip.decompress(zipped).startswith(b"# HELP ")
            new.append(result)
        after_new = rss_bytes(server.pid)
        scrape_round(url, server.pid, "/metrics-old", gzip_headers)
        for _ in range(rounds):
            result, _ = scrape_round(url, server.pid, "/metrics-old", gzip_headers)
            old.append(result)
        after_old = rss_bytes(server.pid)
    finally:
        server.stdin.close()
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            server.kill()
    rss = {"fresh": fresh, "after_new": after_new, "after_old": after_old}
    return {"old": old, "new": new, "plain_bytes": plain_new.body_bytes, "rss": rss}


RATIOS = ("scrape_s", "body_bytes", "health_max_s", "ingest_max_s")


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def report(n_monitors: int, found: dict[str, object]) -> None:
    old: list[Round] = found["old"]  # type: ignore[assignment]
    new: list[Round] = found["new"]  # type: ignore[assignment]
    rows = [
        ("scrape time", "scrape_s", lambda v: f"{v:.3f} s"),
        ("body (old plain, new gzip)", "body_bytes", mb),
        ("longest /-/healthy during", "health_max_s", lambda v: f"{v * 1000:.1f} ms"),
        ("longest ingest POST during", "ingest_max_s", lambda v: f"{v * 1000:.1f} ms"),
        ("ingest answered 200 during", "ingest_ok", lambda v: f"{v:.0f}"),
        ("RSS before", "rss_before", mb),
        ("RSS peak during - before", "rss_growth", mb),
        ("RSS after - before", "rss_kept", mb),
    ]
    for group in (old, new):
        for r in group:
            r.rss_growth = r.rss_peak - r.rss_before  # type: ignore[attr-defined]
            r.rss_kept = r.rss_after - r.rss_before  # type: ignore[attr-defined]
    print(f"\nM = {n_monitors} monitors, medians of {len(old)} scrapes each")
    print(f"  {'':<28} {'old':>12} {'new':>12} {'old/new':>9}")
    for label, name, show in rows:
        a, b = median(old, name), median(new, name)
        ratio = f"{a / b:.1f}x" if name in RATIOS and b > 0 and a > 0 else ""
        print(f"  {label:<28} {show(a):>12} {show(b):>12} {ratio:>9}")
    print(f"  new body plain: {mb(found['plain_bytes'])}")  # type: ignore[arg-type]
    rss: dict[str, int] = found["rss"]  # type: ignore[assignment]
    print(
        f"  RSS of the server: fresh {mb(rss['fresh'])}, after {len(new) + 2} new scrapes "
        f"{mb(rss['after_new'])}, after {len(old) + 1} old ones {mb(rss['after_old'])}"
    )
    others = [s for r in new for s in r.ingest_other]
    if others:
        print(f"  new: ingest answers other than 200 during scrapes: {sorted(set(others))}")
    verdicts = [
        ("scrape within 2 s", median(new, "scrape_s") <= 2.0),
        ("/-/healthy within 100 ms during it", median(new, "health_max_s") <= 0.100),
        ("ingest answered during it", median(new, "ingest_ok") > 0),
    ]
    for text, ok in verdicts:
        print(f"  {'ok ' if ok else 'MISS'} {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--monitors", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--accept",
        choices=["prometheus", "text"],
        default="prometheus",
        help="the Accept header: Prometheus's (OpenMetrics first), or text 0.0.4",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"({os.cpu_count()} cores)"
    )
    accept = PROMETHEUS_ACCEPT if args.accept == "prometheus" else "text/plain;version=0.0.4"
    print(f"Accept: {accept}")
    for n_monitors in args.monitors:
        found = measure(n_monitors, args.rounds, accept)
        report(n_monitors, found)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
