"""The replica's side of shared mode: group commit of pane deltas into the store.

Ingest workers bin a request as in single-node mode and hand its counts to
:meth:`Flusher.submit`, which adds them to the stream's pending group and
returns a future. Every ``flush_every`` one thread sends every pending group
(one script call per stream, pipelined, :meth:`Store.flush`) and resolves
the futures of the requests it held: a request is answered 200 only once its
flush returned. A flush that fails (store down, timeout) is sent again, with
the same sequence number, until it is applied: a resend after a lost reply
is a no-op in the store, so nothing is counted twice and nothing handed over
is dropped while the process lives. Requests waiting longer than
``ack_timeout`` are answered 503 by the caller; their rows stay in the
group and are counted once the store is back (at least once, exactly once
with an ``Idempotency-Key``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import redis

from driftmon.cluster.store import Flush, FlushResult, Store, StreamLayout

log = logging.getLogger("driftmon.cluster")

FLUSH_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


@dataclass(frozen=True)
class Outcome:
    """How one submitted part of a request ended: stored, or not (``error`` says why)."""

    stored: bool
    duplicate: bool = False
    error: str | None = None


@dataclass
class _Waiter:
    future: Future[Outcome]
    rows: int
    arrival_s: float  # on the store's clock, as estimated when submitted
    keyed_index: int | None


MAX_PENDING_KEYS = 10_000
"""Most keyed requests one stream's pending flush holds (each keeps its own counts until
the store says whether it was counted before); past it, requests are refused (503)."""


@dataclass
class _Group:
    """The pending rows of one stream layout since the last flush."""

    layout: StreamLayout
    plain: np.ndarray | None = None
    keyed: list[tuple[str, np.ndarray]] = field(default_factory=list)
    key_index: dict[str, int] = field(default_factory=dict)
    waiters: list[_Waiter] = field(default_factory=list)


@dataclass
class FlushStats:
    """Counters the exporter shows (read under :attr:`Flusher.lock`)."""

    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(FLUSH_BUCKETS_S) + 1))
    duration_sum_s: float = 0.0
    flushes: int = 0
    failures: int = 0
    late_rows: int = 0
    clock_offset_s: float = 0.0
    store_reachable: bool = False

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(FLUSH_BUCKETS_S):
            if seconds <= bound:
                self.bucket_counts[i] += 1
                break
        else:
            self.bucket_counts[-1] += 1
        self.duration_sum_s += seconds
        self.flushes += 1


class ClockSkew(Exception):
    """This replica's clock is further from the store's than ``max_clock_skew``."""


class TooManyPending(Exception):
    """The pending flush of a stream holds :data:`MAX_PENDING_KEYS` keyed requests already."""


class Flusher:
    """Group commit of one replica's pane deltas (see the module docstring).

    ``clock`` is the local wall clock (Unix seconds); the store's clock is
    estimated as ``clock() + offset``, the offset measured at every flush.
    """

    def __init__(
        self,
        store: Store,
        replica_id: str,
        *,
        flush_every_s: float,
        idempotency_ttl_s: float,
        max_clock_skew_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.flush_every_s = flush_every_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.max_clock_skew_s = max_clock_skew_s
        self.clock = clock
        self.lock = threading.Lock()  # the groups, sequences and stats
        self.stats = FlushStats()
        self._groups: dict[tuple[str, str], _Group] = {}
        # Sequences start at the local time in microseconds, so that a replica id
        # reused after a restart (replica_id set in the config) still only grows.
        self._sequence = int(time.time() * 1e6)
        self._wake = threading.Event()
        self._stopping = False
        self._stop_deadline = math.inf  # monotonic; set by stop()
        self._thread: threading.Thread | None = None

    # --- the ingest side ----------------------------------------------------------

    def submit(
        self, layout: StreamLayout, counts: np.ndarray, rows: int, key: str | None
    ) -> Future[Outcome]:
        """Add a request's counts over ``layout``'s bins to the next flush.

        Call :meth:`admit` first: this never refuses. A key already pending
        (a client retrying during an outage) joins the pending request's
        outcome instead of adding its counts again.
        """
        future: Future[Outcome] = Future()
        delta = np.asarray(counts).astype(np.int64)
        with self.lock:
            offset = self.stats.clock_offset_s
            group = self._groups.get((layout.stream, layout.fingerprint))
            if group is None:
                group = self._groups[(layout.stream, layout.fingerprint)] = _Group(layout)
            index = None
            if key is None:
                group.plain = delta if group.plain is None else group.plain + delta
            elif key in group.key_index:
                index = group.key_index[key]
            else:
                index = group.key_index[key] = len(group.keyed)
                group.keyed.append((key, delta))
            group.waiters.append(_Waiter(future, rows, self.clock() + offset, index))
        return future

    def admit(self, layouts: Sequence[StreamLayout], keyed: bool) -> None:
        """Check that a request over ``layouts`` may be submitted, before any part of it is.

        Raises :class:`ClockSkew` while this replica's clock is further than
        ``max_clock_skew`` from the store's, and :class:`TooManyPending` when
        a stream's pending flush holds :data:`MAX_PENDING_KEYS` keyed requests
        (the store has been away a while).
        """
        with self.lock:
            offset = self.stats.clock_offset_s
            if abs(offset) > self.max_clock_skew_s:
                side = "ahead of" if offset < 0 else "behind"
                raise ClockSkew(
                    f"this replica's clock is {abs(offset):.3f} s {side} the store's "
                    f"(cluster.max_clock_skew is {self.max_clock_skew_s:g} s)"
                )
            if not keyed:
                return
            for layout in layouts:
                group = self._groups.get((layout.stream, layout.fingerprint))
                if group is not None and len(group.keyed) >= MAX_PENDING_KEYS:
                    raise TooManyPending(
                        f"{len(group.keyed)} keyed requests of stream {layout.stream!r} are "
                        "waiting for the store already"
                    )

    # --- the flushing thread ------------------------------------------------------

    def start(self) -> None:
        """Measure the clock offset, then start the flushing thread."""
        self.measure_offset()
        self._thread = threading.Thread(target=self._run, name="driftmon-flush", daemon=True)
        self._thread.start()

    def measure_offset(self) -> None:
        """Estimate the store's clock minus ours (half a round trip of error at most)."""
        try:
            sent = self.clock()
            store_time = self.store.time()
            received = self.clock()
        except redis.RedisError as exc:
            self._failed(exc)
            return
        with self.lock:
            self.stats.clock_offset_s = store_time - (sent + received) / 2
            self.stats.store_reachable = True

    def stop(self, timeout_s: float) -> None:
        """Flush what is pending (retrying up to ``timeout_s``), then end the thread."""
        self._stopping = True
        self._stop_deadline = time.monotonic() + timeout_s
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s + 5)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_every_s)
            stopping = self._stopping
            self.flush_pending()
            if stopping:
                return

    def flush_pending(self) -> None:
        """Send every pending group until the store applied it (or the stop deadline)."""
        with self.lock:
            groups = list(self._groups.values())
            self._groups = {}
            flushes = []
            for group in groups:
                self._sequence += 1
                flushes.append(
                    Flush(
                        group.layout,
                        self.replica_id,
                        self._sequence,
                        group.plain,
                        tuple(group.keyed),
                    )
                )
        if not flushes:
            return
        backoff_s = 0.05
        while True:
            sent = self.clock()
            started = time.perf_counter()
            try:
                results = self.store.flush(flushes, self.idempotency_ttl_s)
            except redis.ResponseError as exc:
                # Not the store being away: a flush it refuses (a bug, or keys written by
                # something else). Retrying would block every later flush.
                log.error("the store refused a flush; its rows are not counted: %s", exc)
                self._failed(exc)
                self._resolve(groups, None, str(exc))
                return
            except redis.RedisError as exc:
                self._failed(exc)
                if self._stopping and time.monotonic() > self._stop_deadline:
                    self._resolve(groups, None, f"the store is unreachable: {exc}")
                    return
                time.sleep(backoff_s)
                backoff_s = min(1.0, backoff_s * 2)
                continue
            elapsed = time.perf_counter() - started
            received = self.clock()
            with self.lock:
                self.stats.observe(elapsed)
                self.stats.store_reachable = True
                store_time = results[0].server_time_s
                self.stats.clock_offset_s = store_time - (sent + received) / 2
            self._resolve(groups, results, None)
            return

    def mark_reachable(self, reachable: bool) -> None:
        """Record whether a call to the store (a flush, a lease tick, a read) succeeded."""
        with self.lock:
            self.stats.store_reachable = reachable

    def _failed(self, exc: Exception) -> None:
        with self.lock:
            self.stats.failures += 1
            self.stats.store_reachable = False
        log.warning("flush to the store failed (will retry): %s", exc)

    def _resolve(
        self, groups: list[_Group], results: list[FlushResult] | None, error: str | None
    ) -> None:
        late = 0
        for i, group in enumerate(groups):
            result = None if results is None else results[i]
            for waiter in group.waiters:
                if result is None:
                    outcome = Outcome(False, error=error)
                else:
                    duplicate = (
                        waiter.keyed_index is not None
                        and waiter.keyed_index < len(result.duplicates)
                        and result.duplicates[waiter.keyed_index]
                    )
                    arrival_pane = math.floor(
                        waiter.arrival_s * 1e6 / group.layout.pane_width_us
                    )
                    if result.applied and not duplicate and result.pane > arrival_pane:
                        late += waiter.rows
                    outcome = Outcome(True, duplicate=duplicate)
                waiter.future.set_result(outcome)
        if late:
            with self.lock:
                self.stats.late_rows += late
