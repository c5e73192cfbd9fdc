"""Benchmark of shared mode: rows/s, flush latency and store CPU for 1, 2, 3 replicas.

A real ``redis-server`` (AOF on, ``appendfsync everysec``) and real
``driftmon run`` replicas (``cluster.mode: shared``) are started; the
baseline, measured in the same run, is one single-node daemon on the same
streams. An aiohttp load generator in this process posts ``{"columns": ...}``
bodies of ``--rows`` rows of ``--features`` numeric features, round-robin
over the replicas, from ``--connections`` closed-loop senders for
``--duration`` seconds per configuration. Printed per configuration:

- rows/s answered 200 and its ratio to the single node's;
- request latency p50/p99 (a shared-mode request waits for its flush:
  ``flush_every`` of 50 ms here, so about 25 ms more on average);
- flush latency: mean of ``driftmon_cluster_flush_duration_seconds`` over all
  replicas, and flushes per second;
- store CPU: ``redis-server``'s CPU seconds per second and per flush (from
  ``/proc``), the cost model for more replicas (it grows with flushes, i.e.
  replicas x streams / ``flush_every``, not with rows).

Then the failover time: the leader is killed with SIGKILL and the time until
another replica exports ``driftmon_cluster_leader 1`` is printed, against
``lease_ttl + evaluate_every``.

On a small shared machine the load generator, the replicas and Redis share
the cores: more replicas add no cores here, so compare the store's cost per
flush and the flush latency, not the absolute rates. Run::

    python bench/bench_cluster.py [--duration 6] [--rows 500] [--features 20]
                                  [--connections 8] [--replicas 1 2 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from harness import DaemonProcess, parse_metrics, series, wait_for  # noqa: E402
from redis_server import RedisServer  # noqa: E402

LEASE_TTL_S = 2.0
EVALUATE_EVERY_S = 1.0


def write_config(directory: Path, n_features: int, redis_url: str | None) -> Path:
    names = [f"f{i}" for i in range(n_features)]
    rng = np.random.default_rng(0)
    reference = directory / "reference.csv"
    values = rng.normal(0.5, 0.15, size=(2000, n_features))
    reference.write_text(
        ",".join(names) + "\n" + "\n".join(",".join(f"{v:.5f}" for v in row) for row in values)
    )
    features = "\n".join(
        f"      - {{name: {name}, type: numeric, bins: {{kind: uniform, lo: 0, hi: 1, count: 20}}}}"
        for name in names
    )
    cluster = ""
    if redis_url is not None:
        cluster = (
            f"cluster: {{mode: shared, redis: {{url: \"{redis_url}\"}}, flush_every: 50ms, "
            f"lease_ttl: {LEASE_TTL_S:g}s}}\n"
        )
    path = directory / ("shared.yaml" if redis_url else "single.yaml")
    path.write_text(
        f"engine: {{evaluate_every: {EVALUATE_EVERY_S:g}s}}\n"
        "ingest: {workers: 2}\n"
        f"{cluster}"
        "streams:\n"
        "  - name: bench\n"
        f"    reference: {{file: \"{reference}\"}}\n"
        "    window: {length: 15m, panes: 15}\n"
        "    features:\n"
        f"{features}\n"
    )
    return path


def make_bodies(n_rows: int, n_features: int, count: int = 8) -> list[bytes]:
    rng = np.random.default_rng(1)
    return [
        json.dumps(
            {"columns": {f"f{i}": rng.normal(0.5, 0.2, n_rows).round(5).tolist()
                         for i in range(n_features)}}
        ).encode()
        for _ in range(count)
    ]


@dataclass
class Result:
    label: str
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    flushes_per_s: float = 0.0
    flush_mean_ms: float = 0.0
    store_cpu_per_s: float = 0.0
    store_cpu_per_flush_us: float = 0.0


async def load(
    urls: Sequence[str], bodies: Sequence[bytes], n_rows: int, connections: int, duration_s: float
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    rows = 0
    deadline = time.monotonic() + duration_s
    headers = {"Content-Type": "application/json"}

    async def sender(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal rows
        i = k
        while time.monotonic() < deadline:
            url = urls[i % len(urls)] + "/v1/streams/bench/rows"
            started = time.monotonic()
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as reply:
                await reply.read()
                if reply.status == 200:
                    rows += n_rows
                    latencies.append(time.monotonic() - started)
            i += 1

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(sender(k, session) for k in range(connections)))
    return rows / (time.monotonic() - started), latencies


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flush_totals(replicas: Sequence[DaemonProcess]) -> tuple[float, float]:
    count = total_s = 0.0
    for replica in replicas:
        samples = replica.metrics()
        count += sum(series(samples, "driftmon_cluster_flush_duration_seconds_count").values())
        total_s += sum(series(samples, "driftmon_cluster_flush_duration_seconds_sum").values())
    return count, total_s


def measure(
    label: str,
    daemons: Sequence[DaemonProcess],
    redis: RedisServer | None,
    args: argparse.Namespace,
    bodies: Sequence[bytes],
) -> Result:
    urls = [d.url for d in daemons]
    asyncio.run(load(urls, bodies, args.rows, args.connections, 1.0))  # warm-up
    flushes_before, flush_s_before = flush_totals(daemons) if redis else (0.0, 0.0)
    assert redis is None or redis.process is not None
    cpu_before = cpu_seconds(redis.process.pid) if redis and redis.process else 0.0
    started = time.monotonic()
    rate, latencies = asyncio.run(
        load(urls, bodies, args.rows, args.connections, args.duration)
    )
    elapsed = time.monotonic() - started
    result = Result(
        label,
        rate,
        1000 * statistics.median(latencies),
        1000 * float(np.percentile(latencies, 99)),
    )
    if redis is not None and redis.process is not None:
        flushes, flush_s = flush_totals(daemons)
        n = flushes - flushes_before
        cpu = cpu_seconds(redis.process.pid) - cpu_before
        result.flushes_per_s = n / elapsed
        result.flush_mean_ms = 1000 * (flush_s - flush_s_before) / max(n, 1)
        result.store_cpu_per_s = cpu / elapsed
        result.store_cpu_per_flush_us = 1e6 * cpu / max(n, 1)
    return result


def failover(replicas: Sequence[DaemonProcess]) -> float:
    def leader() -> DaemonProcess | None:
        for replica in replicas:
            if replica.process is None or replica.process.poll() is not None:
                continue
            try:
                samples = parse_metrics(replica.get("/metrics").body.decode())
            except aiohttp.ClientError:
                continue  # the one just killed
            if series(samples, "driftmon_cluster_leader") == {(): 1.0}:
                return replica
        return None

    old = wait_for(leader, 30, "a leader")
    assert old.process is not None
    old.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: (found := leader()) is not None and found is not old, 30, "a new leader")
    return time.monotonic() - killed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    bodies = make_bodies(args.rows, args.features)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        single = DaemonProcess(write_config(directory, args.features, None)).start()
        try:
            results.append(measure("single node", [single], None, args, bodies))
        finally:
            single.kill()
        takeover_s = float("nan")
        for n in args.replicas:
            redis = RedisServer(directory / f"redis-{n}").start()
            shared = write_config(directory, args.features, redis.url)
            replicas = [DaemonProcess(shared) for _ in range(n)]
            try:
                for replica in replicas:
                    replica.start()
                results.append(measure(f"{n} replica(s)", replicas, redis, args, bodies))
                if n == max(args.replicas) and n > 1:
                    takeover_s = failover(replicas)
            finally:
                for replica in replicas:
                    replica.kill()
                redis.kill()
    base = results[0].rows_per_s
    print(
        f"{args.rows} rows x {args.features} features per body, {args.connections} senders, "
        f"{args.duration:g} s per configuration, flush_every 50ms"
    )
    print(
        f"{'':>14} {'rows/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'flush/s':>8} "
        f"{'flush ms':>9} {'redis cpu':>9} {'us/flush':>9}"
    )
    for r in results:
        print(
            f"{r.label:>14} {r.rows_per_s:9.0f} {r.rows_per_s / base:6.2f} {r.p50_ms:7.1f} "
            f"{r.p99_ms:7.1f} {r.flushes_per_s:8.1f} {r.flush_mean_ms:9.2f} "
            f"{r.store_cpu_per_s:9.3f} {r.store_cpu_per_flush_us:9.0f}"
        )
    print(
        f"failover: {takeover_s:.2f} s from SIGKILL of the leader to a new leader "
        f"(lease_ttl {LEASE_TTL_S:g} s + evaluate_every {EVALUATE_EVERY_S:g} s = "
        f"{LEASE_TTL_S + EVALUATE_EVERY_S:g} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
