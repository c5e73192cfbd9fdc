"""Cost of ``driftmon.client.Client.log`` on the caller's thread, per row.

The client posts to a port nothing listens on, so the figure includes the
buffer bound and no network; the sender thread runs meanwhile (retrying), as
it would in a service. The baseline, measured in the same run, is the least
any buffering logger does: copy the row and append it to a deque under a lock.
Medians of 15 rounds of 20 000 rows each (fewer than ``max_buffer_rows``, so
nothing is dropped).

    python bench/bench_client.py
"""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
from collections import deque

from driftmon.client import Client

ROWS = 20_000
ROUNDS = 15
ROW = {"age": 41, "income": 52_000.0, "region": "north", "score": 0.73}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def per_row_us(action: object, setup: object) -> float:
    """Median microseconds per row of ``action(row)`` over ``ROUNDS`` fresh ``setup()``s."""
    samples = []
    for _ in range(ROUNDS):
        target = setup()  # type: ignore[operator]
        call = action(target)  # type: ignore[operator]
        started = time.perf_counter()
        for _ in range(ROWS):
            call(ROW)
        samples.append((time.perf_counter() - started) / ROWS * 1e6)
        close = getattr(target, "close", None)
        if callable(close):
            close(timeout=0)
    return statistics.median(samples)


class Floor:
    """Copy and append under a lock: the least a buffering logger does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buffer: deque[dict[str, object]] = deque()

    def log(self, row: dict[str, object]) -> None:
        record = row.copy()
        with self.lock:
            self.buffer.append(record)


def main() -> None:
    logging.getLogger("driftmon.client").setLevel(logging.ERROR)
    url = f"http://127.0.0.1:{free_port()}"
    floor = per_row_us(lambda f: f.log, Floor)
    client = per_row_us(
        lambda c: c.log, lambda: Client(url, "bench", max_buffer_rows=ROWS * 2, max_backoff=0.5)
    )
    print(f"log(): {ROWS} rows x {ROUNDS} rounds, daemon down, medians")
    print(f"  copy + locked append (floor)  {floor:6.2f} us/row")
    ratio = client / floor
    print(f"  Client.log                    {client:6.2f} us/row  ({ratio:.1f}x the floor)")


if __name__ == "__main__":
    main()
