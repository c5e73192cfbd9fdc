"""The ingest gate: where a request body becomes rows in the engine's windows.

Admission bounds (rows parsed but not applied, bytes of bodies read or
waiting), the parse lock, the event loop's heartbeat (:class:`LoopWatch`),
and routing of a body to a worker thread or a parse process. The HTTP layer
makes one call per request (:meth:`Gate.ingest`,
:meth:`Gate.ingest_cloudevents`) and maps :class:`NotReady`,
:class:`QueueFull` and :class:`~driftmon.sources.BodyError` to answers. The
daemon installs engines (:meth:`Gate.install`); the gate never swaps one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from driftmon.config import Config
from driftmon.engine import BinnedBatch, Engine, UnknownStreamError
from driftmon.parsers import ChildUnavailable, ParseProcesses
from driftmon.reference import numeric_fields
from driftmon.sources import Batch, BodyError, parse_body
from driftmon.sources.cloudevents import CloudEventError, IngestPlan, plan_request

__all__ = [
    "CloudEventsResult",
    "Gate",
    "IngestResult",
    "LoopWatch",
    "NotReady",
    "QueueFull",
    "body_bound_bytes",
]

log = logging.getLogger("driftmon")

T = TypeVar("T")


class QueueFull(Exception):
    """The ingest queue cannot take this request now; retry later."""


class NotReady(Exception):
    """References are still loading or state is being restored."""


MAX_IDEMPOTENCY_KEY_CHARS = 200

FREEZE_TRIES = 3
"""Plans a worker makes for one warmup freeze before it freezes under the lock."""


def check_idempotency_key(key: str | None) -> str | None:
    """The key, or ``ValueError`` naming what is wrong with it (printable ASCII, <= 200)."""
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValueError(
            f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {len(key)}"
        )
    if not (key.isascii() and key.isprintable()):
        raise ValueError("Idempotency-Key: must be printable ASCII")
    return key


class SharedStore(Protocol):
    """What the gate calls in ``cluster.mode: shared`` (:class:`driftmon.cluster.node.ClusterNode`
    is one; the gate imports no cluster code)."""

    def admit(self, engine: Engine, streams: Sequence[str], key: str | None) -> None: ...

    def submit(
        self, engine: Engine, stream: str, counts: Any, rows: int, key: str | None
    ) -> Future[Any] | None: ...

    async def wait_stored(self, acks: Sequence[Future[Any]]) -> None: ...


@dataclass(frozen=True)
class IngestResult:
    """What one accepted request did.

    ``ack`` (``cluster.mode: shared``) resolves once the store holds the rows.
    """

    rows: int
    unknown_fields: int
    ack: Future[Any] | None = None


@dataclass(frozen=True)
class CloudEventsResult:
    """What one accepted CloudEvents request did: rows applied, events read, events dropped."""

    rows: int
    events: int
    dropped: Mapping[str, int] = field(default_factory=dict)


def body_bound_bytes(max_body_bytes: int) -> int:
    """Most bytes of request bodies held at once, read or waiting for a worker.

    ``max(64 MiB, 4 × server.max_body_bytes)``: past it a new body is a 503,
    so a flood of senders, however many, holds no more than that.
    """
    return max(64 * 1024 * 1024, 4 * max_body_bytes)


class Gate:
    """Admission and routing of ingest requests into the installed engine (thread-safe).

    ``lock`` guards the engine and the counters here; the daemon shares it.
    """

    def __init__(self, config: Config, clock: Callable[[], float], lock: threading.Lock) -> None:
        self.config = config
        self.clock = clock
        self.lock = lock
        self.engine: Engine | None = None
        self.ready = False
        # cluster.mode: shared (driftmon/cluster/): counts go to the store, not the window.
        self.cluster: SharedStore | None = None
        self.requests: Counter[int | str] = Counter()
        self.dropped_events: Counter[str] = Counter()
        self.queue_rows = 0
        self.parse_jobs_in_children = 0
        self._pending_bytes = 0
        # Parsing holds the GIL throughout, so two workers parsing at once only take turns,
        # paying for every forced switch (bench/README.md): one parses while another bins.
        self._parse_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(
            max_workers=config.ingest.worker_count, thread_name_prefix="driftmon-ingest"
        )
        self.loop_watch = LoopWatch()
        self.parsers: ParseProcesses | None = None

    # --- what the HTTP layer asks --------------------------------------------------

    @property
    def max_body_bytes(self) -> int:
        """``server.max_body_bytes``."""
        return self.config.server.max_body_bytes

    @property
    def body_bound_bytes(self) -> int:
        """:func:`body_bound_bytes` of this config."""
        return body_bound_bytes(self.config.server.max_body_bytes)

    def has_stream(self, name: str) -> bool:
        """Whether the config names stream ``name``."""
        return any(s.name == name for s in self.config.streams)

    def cloudevents_root(self) -> bool:
        """Whether ``POST /`` takes CloudEvents (``ingest.cloudevents.root``; read per request)."""
        return self.config.ingest.cloudevents_root

    def count_request(self, code: int | str) -> None:
        """Count one ingest request answered with ``code`` (or ``"client_closed"``: the
        client went away before its body ended)."""
        with self.lock:
            self.requests[code] += 1

    def count_dropped_events(self, dropped: Mapping[str, int]) -> None:
        """Count CloudEvents that fed no stream, by reason (``no_stream``, ``not_mapped``, …)."""
        with self.lock:
            for reason, count in dropped.items():
                if count:
                    self.dropped_events[reason] += count

    async def ingest(
        self,
        stream: str,
        body: bytes,
        content_type: str | None,
        idempotency_key: str | None = None,
    ) -> IngestResult:
        """Parse, bin and apply one rows body in the worker pool.

        Raises :class:`~driftmon.sources.BodyError` (nothing applied),
        :class:`QueueFull`, :class:`NotReady` or
        :class:`~driftmon.engine.UnknownStreamError`. In shared mode it
        returns once the store holds the rows; ``idempotency_key`` (the
        ``Idempotency-Key`` header) makes a retried request count once.
        """
        key = self.checked_idempotency_key(idempotency_key)
        result = await self.run_job(len(body), self._ingest_job, stream, body, content_type, key)
        await self.wait_stored([result])
        return result

    def checked_idempotency_key(self, key: str | None) -> str | None:
        """The ``Idempotency-Key`` to use: ``None`` in single-node mode; in shared mode the
        key, or :class:`~driftmon.sources.BodyError` (a 400) for a malformed one."""
        if self.cluster is None:
            return None  # single node: an acknowledged request is never lost to a retry
        try:
            return check_idempotency_key(key)
        except ValueError as exc:
            raise BodyError(str(exc)) from None

    async def wait_stored(self, results: Sequence[IngestResult | None]) -> None:
        """Shared mode: wait until the store holds these results' rows (else returns at once).

        Raises :class:`QueueFull` (a 503) after ``cluster.ack_timeout``.
        """
        acks = [r.ack for r in results if r is not None and r.ack is not None]
        if self.cluster is not None and acks:
            await self.cluster.wait_stored(acks)

    def _apply(
        self,
        engine: Engine,
        batch: BinnedBatch,
        now: float,
        unknown_fields: int,
        key: str | None,
        freezes: list[str] | None = None,
    ) -> Future[Any] | None:
        """Apply a binned batch (hold ``lock``): to the window, or in shared mode to the
        next flush to the store (the returned future resolves once it is stored).

        A warmup this batch completes is appended to ``freezes``: the caller freezes
        it after the lock (:meth:`_freeze`). Without ``freezes``, and in shared mode
        (the store must get the counts of the rows past the warmup now), it freezes here.
        """
        deferred = engine.apply(
            batch,
            now,
            unknown_fields=unknown_fields,
            window=self.cluster is None,
            defer_freeze=freezes is not None and self.cluster is None,
        )
        if deferred:
            assert freezes is not None
            freezes.append(batch.stream)
        if self.cluster is None or batch.counts is None or batch.n_rows == 0:
            return None
        return self.cluster.submit(engine, batch.stream, batch.counts, batch.n_rows, key)

    async def ingest_cloudevents(
        self, headers: Mapping[str, str], body: bytes
    ) -> CloudEventsResult:
        """Read, route and apply every event of one CloudEvents request, or none of them.

        Drops are counted here. Raises
        :class:`~driftmon.sources.cloudevents.CloudEventError` (its ``status``
        is 400 or 415), :class:`QueueFull` or :class:`NotReady`.
        """
        try:
            key = self.checked_idempotency_key(headers.get("Idempotency-Key"))
        except BodyError as exc:
            raise CloudEventError(str(exc), status=400) from None
        try:
            plan = await self.run_job(len(body), plan_request, headers, body, self.config.streams)
        except CloudEventError as exc:
            self.count_dropped_events(exc.dropped)
            raise
        rows, late, results = await self.run_job(0, self._apply_plan, plan, key)
        await self.wait_stored(results)
        dropped = Counter(plan.dropped) + late
        self.count_dropped_events(dropped)
        return CloudEventsResult(rows, plan.events, dict(dropped))

    # --- the worker pool ----------------------------------------------------------

    async def run_job(self, body_bytes: int, job: Callable[..., T], *args: object) -> T:
        """Run ``job(*args)`` in the ingest worker pool, counting ``body_bytes`` as waiting.

        Raises :class:`NotReady` before references are loaded and
        :class:`QueueFull` when the bodies already waiting exceed
        :attr:`body_bound_bytes`.
        """
        if not self.ready:
            raise NotReady()
        bound = self.body_bound_bytes
        with self.lock:
            if self._pending_bytes + body_bytes > bound and self._pending_bytes > 0:
                raise QueueFull("too many request bytes waiting for an ingest worker")
            self._pending_bytes += body_bytes
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, self._after_giving_way, job, *args)
        finally:
            with self.lock:
                self._pending_bytes -= body_bytes

    def _after_giving_way(self, job: Callable[..., T], *args: object) -> T:
        self.loop_watch.give_way()
        return job(*args)

    def _ingest_job(
        self, stream: str, body: bytes, content_type: str | None, key: str | None = None
    ) -> IngestResult:
        engine = self.engine
        if engine is None:
            raise NotReady()
        if self.parsers is not None:
            done = self._ingest_in_child(engine, stream, body, content_type, key)
            if done is not None:
                return done
        stream_config = engine.stream_config(stream)
        fields = [f.name for f in stream_config.features]
        with self._parse_lock:
            batch = parse_body(
                body, content_type, fields, numeric_fields=numeric_fields(stream_config)
            )
        self.loop_watch.give_way()
        return self.ingest_batch(stream, batch, key)

    def _ingest_in_child(
        self,
        engine: Engine,
        stream: str,
        body: bytes,
        content_type: str | None,
        key: str | None = None,
    ) -> IngestResult | None:
        """Parse and bin ``body`` in a parse process and apply it; ``None``: do it here.

        Raises what parsing raises (nothing applied) and :class:`QueueFull`.
        """
        assert self.parsers is not None
        if not engine.bins_in_place(stream):
            return None  # a warmup keeps raw values: only the in-process path has them
        with self.lock:
            if engine is not self.engine:
                return None
            layout = engine.stream_layout(stream)  # under the lock: a warmup may repack
        try:
            binned = self.parsers.run(engine.stream_config(stream), layout, body, content_type)
        except ChildUnavailable as exc:
            log.debug("parsing in the worker: %s", exc)
            return None
        with self.lock:
            current = self.engine
            assert current is not None
            if current.generation != binned.generation:
                return None  # the layout changed while the child binned: bin again here
            self._check_queue_room(binned.n_rows)
            if self.cluster is not None:
                self.cluster.admit(current, [stream], key)  # refused whole, or taken whole
            batch = BinnedBatch(
                stream, binned.n_rows, {}, binned.generation, binned.counts, binned.indices
            )
            ack = self._apply(current, batch, self.clock(), binned.unknown_fields, key)
            self.parse_jobs_in_children += 1
        return IngestResult(binned.n_rows, binned.unknown_fields, ack)

    def _check_queue_room(self, rows: int) -> None:
        """Raise :class:`QueueFull` unless ``rows`` more fit the row queue (hold ``lock``).

        A non-empty queue bounds what joins it; an empty one takes any batch.
        """
        capacity = self.config.ingest.queue_rows
        if self.queue_rows + rows > capacity and self.queue_rows > 0:
            raise QueueFull(f"ingest queue holds {self.queue_rows} of {capacity} rows")

    def _apply_plan(
        self, plan: IngestPlan, key: str | None = None
    ) -> tuple[int, Counter[str], list[IngestResult | None]]:
        """Apply a CloudEvents plan's batches as one; rows applied, extra drops, results."""
        results = self.ingest_batches([(p.stream, p.batch) for p in plan.batches], key)
        rows = 0
        dropped: Counter[str] = Counter()
        for planned, result in zip(plan.batches, results, strict=True):
            if result is None:
                # A reload removed the stream after routing: its events found no stream.
                dropped["no_stream"] += planned.events
            else:
                rows += result.rows
        return rows, dropped, results

    def ingest_batch(self, stream: str, batch: Batch, key: str | None = None) -> IngestResult:
        """Bin and apply an already-parsed batch (worker threads)."""
        result = self.ingest_batches([(stream, batch)], key)[0]
        if result is None:
            raise UnknownStreamError(stream)
        return result

    def ingest_batches(
        self, batches: Sequence[tuple[str, Batch]], key: str | None = None
    ) -> list[IngestResult | None]:
        """Bin and apply several batches as one: all of them are applied, or none.

        The queue bound is checked once for their total rows; binning runs
        outside the engine lock, applying all of them inside one acquisition.
        A batch whose stream a reload removed meanwhile gives ``None`` (the
        others still apply). Raises :class:`QueueFull` or :class:`NotReady`
        with nothing applied.
        """
        engine = self.engine
        if engine is None:
            raise NotReady()
        rows = sum(batch.n_rows for _, batch in batches)
        with self.lock:
            self._check_queue_room(rows)
            self.queue_rows += rows
        freezes: list[str] = []
        try:
            binned = [engine.bin_batch(s, b.n_rows, b.columns) for s, b in batches]
            results: list[IngestResult | None] = []
            with self.lock:
                current = self.engine
                assert current is not None
                now = self.clock()
                if self.cluster is not None:  # refused whole, or taken whole
                    self.cluster.admit(current, [stream for stream, _ in batches], key)
                for (stream, batch), done in zip(batches, binned, strict=True):
                    if current is not engine:
                        # A reload swapped the engine while these batches were binned.
                        try:
                            done = current.bin_batch(stream, batch.n_rows, batch.columns)
                        except UnknownStreamError:
                            results.append(None)
                            continue
                    ack = self._apply(current, done, now, batch.unknown_fields, key, freezes)
                    results.append(IngestResult(batch.n_rows, batch.unknown_fields, ack))
        finally:
            with self.lock:
                self.queue_rows -= rows
        for stream in freezes:
            self._freeze(current, stream)
        return results

    def _freeze(self, engine: Engine, stream: str) -> None:
        """Freeze the warmup this worker completed: the layout and the new packing are
        learnt without the lock, then swapped in under it (rows that came meanwhile
        are held by the engine and binned at the commit).

        Replans when another freeze was committed meanwhile; after
        :data:`FREEZE_TRIES` plans it freezes under the lock. A reload that took
        the engine over froze the warmup itself (:meth:`Engine.export_state`).
        """
        try:
            for _ in range(FREEZE_TRIES):
                plan = engine.plan_freeze(stream)
                with self.lock:
                    if engine is not self.engine or plan is None:
                        return
                    if engine.commit_freeze(plan) and not engine.freeze_due(stream):
                        return
        finally:
            with self.lock:
                if engine is self.engine and engine.freeze_due(stream):
                    engine.freeze(stream)

    def close(self) -> None:
        """Let the jobs in flight finish and stop the worker threads (blocking)."""
        self.pool.shutdown(wait=True)


class LoopWatch:
    """How far behind the event loop runs; ingest workers give way while it lags.

    The event loop answers health checks and scrapes and reads request bodies;
    the workers parse bodies holding the GIL. Under a flood the loop waited
    for the GIL after nearly every socket read and ``/-/healthy`` took
    seconds. So before each GIL-heavy step a worker checks the loop's
    heartbeat and, when it is more than ``lag_limit_s`` late, waits (GIL
    released) for the next beat, at most ``max_wait_s`` so that ingest always
    progresses.
    """

    def __init__(
        self, period_s: float = 0.01, lag_limit_s: float = 0.05, max_wait_s: float = 0.5
    ) -> None:
        self.period_s = period_s
        self.lag_limit_s = lag_limit_s
        self.max_wait_s = max_wait_s
        self.last_beat = time.monotonic()
        self.beating = False  # workers never wait on a loop that runs no heartbeat
        self._beaten = threading.Event()

    async def beat(self) -> None:
        """Run in the event loop: note the time every ``period_s``, as late as the loop is."""
        self.beating = True
        try:
            while True:
                self.last_beat = time.monotonic()
                self._beaten.set()
                await asyncio.sleep(self.period_s)
        finally:
            self.beating = False
            self._beaten.set()

    def lag_s(self) -> float:
        """How much later than due the loop's next beat is now (<= 0 while on time)."""
        return time.monotonic() - self.last_beat - self.period_s

    def give_way(self) -> None:
        """In a worker: wait for the loop's next beat while it is late."""
        if self.beating and self.lag_s() > self.lag_limit_s:
            self._beaten.clear()
            # A beat between the check and the clear costs one period's wait at most.
            self._beaten.wait(self.max_wait_s)
