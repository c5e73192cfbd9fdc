"""A normal sender beside stalled and idle ones, before and after issue 13 (docs/http-api.md).

Two builds of the daemon run in turn, each a real ``python -m driftmon run`` on port 0:

- ``before``: the tree just before the slow-client fixes (the parent of the commit that
  added ``driftmon/http/connections.py``), exported with ``git archive`` into a temporary
  folder; skipped when git or the history is not there;
- ``after``: this checkout, with the defaults (``server.body_timeout: 30s``,
  ``header_timeout: 10s``, ``keepalive_timeout: 30s``, ``max_connections: 1000``).

Two scenarios against each:

1. stalled senders: ``--stalled`` connections (default 4) each declare a 16 MiB body,
   send all but its last byte and stall (4 × 16 MiB fills the read bound,
   ``max(64 MiB, 4 × server.max_body_bytes)``). Then a normal sender posts a one-row body
   on a new connection every 0.1 s for ``--duration`` seconds (5 s timeout each): its
   success rate, the median and p95 latency of its 200s, and the time to its first 200.
2. idle sockets: the daemon starts with an open-file limit of 1024 (soft) and
   ``--idle`` connections (default 1100) each send half a request line and wait;
   ``/-/healthy`` is then asked 20 times, 0.25 s apart (2 s timeout each).

    python bench/slow_clients.py [--stalled 4] [--duration 10] [--idle 1100] [--before-ref REF]

It prints one table per scenario with a row per build and the after/before ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flood  # noqa: E402
from harness import DaemonProcess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = 16 * 2**20
ROWS_PATH = f"/v1/streams/{flood.STREAM}/rows"
SMALL_BODY = json.dumps([{"x": 1.5, "y": 0.5, "c": "red", "d": "a"}]).encode()
FD_LIMIT = 1024


@dataclass
class SenderFigures:
    attempts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)  # of the 200s
    first_success_s: float | None = None

    @property
    def success_rate(self) -> float:
        return self.statuses["200"] / self.attempts if self.attempts else 0.0


@dataclass
class HealthFigures:
    attempts: int = 0
    ok: int = 0
    latencies_s: list[float] = field(default_factory=list)  # of the 200s
    open_sockets: int = 0


def before_tree(ref: str | None, folder: Path) -> Path | None:
    """The tree at ``ref`` (default: before the slow-client fixes) in ``folder``, or None."""
    try:
        if ref is None:
            added = subprocess.run(
                ["git", "log", "--diff-filter=A", "--format=%H", "--",
                 "driftmon/http/connections.py"],
                cwd=ROOT, capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            if not added:
                return None
            ref = added[-1] + "^"
        archive = folder / "before.tar"
        subprocess.run(
            ["git", "archive", "--format=tar", "-o", str(archive), ref, "driftmon"],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    tree = folder / "before"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def start(config: Path, tree: Path | None) -> DaemonProcess:
    process = DaemonProcess(config)
    if tree is not None:
        process.env["PYTHONPATH"] = str(tree)  # that tree's driftmon, not this checkout's
    # `python -m` puts its working directory first on sys.path: start it where no driftmon is.
    here = Path.cwd()
    os.chdir(config.parent)
    try:
        return process.start()
    finally:
        os.chdir(here)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def stall(url: str, count: int) -> list[socket.socket]:
    """``count`` connections each holding a 16 MiB body but its last byte."""
    head = (
        f"POST {ROWS_PATH} HTTP/1.1\r\nHost: driftmon\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MAX_BODY_BYTES}\r\n\r\n"
    ).encode()
    chunk = b" " * 2**20
    stalled = []
    for _ in range(count):
        connection = connect(url)
        connection.sendall(head)
        try:
            for _ in range(15):
                connection.sendall(chunk)
            connection.sendall(chunk[:-1])
        except OSError:
            pass  # answered (503) and closed: the bound was full already
        stalled.append(connection)
    return stalled


async def normal_sender(url: str, duration_s: float) -> SenderFigures:
    figures = SenderFigures()
    timeout = aiohttp.ClientTimeout(total=5.0)
    started = time.monotonic()
    while time.monotonic() - started < duration_s:
        sent = time.monotonic()
        figures.attempts += 1
        try:
            # A new connection each time, as a sender behind a load balancer might.
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    url + ROWS_PATH, data=SMALL_BODY, headers={"Content-Type": "application/json"}
                ) as response,
            ):
                await response.read()
                status = str(response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status = type(exc).__name__
        elapsed = time.monotonic() - sent
        figures.statuses[status] += 1
        if status == "200":
            figures.latencies_s.append(elapsed)
            if figures.first_success_s is None:
                figures.first_success_s = time.monotonic() - started
        await asyncio.sleep(max(0.0, 0.1 - elapsed))
    return figures


def stalled_run(config: Path, tree: Path | None, stalled: int, duration_s: float) -> SenderFigures:
    process = start(config, tree)
    try:
        connections = stall(process.url, stalled)
        time.sleep(0.5)  # the daemon reads what the kernel buffered
        try:
            return asyncio.run(normal_sender(process.url, duration_s))
        finally:
            for connection in connections:
                connection.close()
    finally:
        process.kill()


def open_sockets(pid: int) -> int:
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(entry).startswith("socket:")
        except OSError:
            continue
    return count


def idle_run(config: Path, tree: Path | None, idle: int) -> HealthFigures:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, soft), hard))
    try:
        process = start(config, tree)  # inherits the limit of 1024
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    figures = HealthFigures()
    connections = []
    try:
        for _ in range(idle):
            try:
                connection = connect(process.url)
                connection.sendall(b"GET /-/healthy HTTP/1.1\r\n")
                connections.append(connection)
            except OSError:
                break
        time.sleep(1.0)
        assert process.process is not None
        figures.open_sockets = open_sockets(process.process.pid)
        for _ in range(20):
            figures.attempts += 1
            sent = time.monotonic()
            try:
                connection = socket.create_connection(
                    tuple(process.url.removeprefix("http://").rsplit(":", 1)),  # type: ignore[arg-type]
                    timeout=2.0,
                )
                with connection:
                    connection.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = connection.recv(100)
                if answer.startswith(b"HTTP/1.1 200"):
                    figures.ok += 1
                    figures.latencies_s.append(time.monotonic() - sent)
            except OSError:
                pass
            time.sleep(0.25)
        return figures
    finally:
        for connection in connections:
            connection.close()
        process.kill()


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalled", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--idle", type=int, default=1100)
    parser.add_argument("--before-ref", default=None, help="git ref of the 'before' build")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    with tempfile.TemporaryDirectory(prefix="driftmon-slow-") as folder:
        base = Path(folder)
        builds: list[tuple[str, Path | None]] = []
        tree = before_tree(args.before_ref, base)
        if tree is not None:
            builds.append(("before", tree))
        else:
            print("(no 'before' build: git or its history is not available)")
        builds.append(("after", None))
        config = flood.write_config(
            base, queue_rows=1_000_000, workers=2, max_body_bytes=MAX_BODY_BYTES
        )
        print(
            f"\n1. {args.stalled} stalled senders (16 MiB declared, all but 1 byte sent); "
            f"a normal sender posts one row every 0.1 s for {args.duration:g} s"
        )
        print(f"{'build':<8} {'tries':>6} {'success':>8} {'first 200 s':>12} "
              f"{'median ms':>10} {'p95 ms':>8}  statuses")  # fmt: skip
        sender: dict[str, SenderFigures] = {}
        for name, build in builds:
            figures = stalled_run(config, build, args.stalled, args.duration)
            sender[name] = figures
            first = "-" if figures.first_success_s is None else f"{figures.first_success_s:.2f}"
            print(
                f"{name:<8} {figures.attempts:>6} {figures.success_rate:>8.1%} {first:>12} "
                f"{_ms(figures.latencies_s, 0.5):>10} {_ms(figures.latencies_s, 0.95):>8}  "
                f"{dict(figures.statuses)}"
            )
        if "before" in sender:
            print(
                f"success rate after / before: {sender['after'].success_rate:.1%} vs "
                f"{sender['before'].success_rate:.1%}"
            )
        print(
            f"\n2. {args.idle} idle half-request connections, daemon open-file limit "
            f"{FD_LIMIT}; 20 x GET /-/healthy"
        )
        print(f"{'build':<8} {'sockets held':>13} {'healthy ok':>11} {'median ms':>10}")
        health: dict[str, HealthFigures] = {}
        for name, build in builds:
            figures_h = idle_run(config, build, args.idle)
            health[name] = figures_h
            print(
                f"{name:<8} {figures_h.open_sockets:>13} "
                f"{f'{figures_h.ok}/{figures_h.attempts}':>11} "
                f"{_ms(figures_h.latencies_s, 0.5):>10}"
            )
        if sender["after"].latencies_s:
            print(
                f"\nafter: normal sender median latency "
                f"{statistics.median(sender['after'].latencies_s) * 1000:.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
