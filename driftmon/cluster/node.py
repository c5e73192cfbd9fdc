"""One daemon's part in a shared-mode cluster: the store, its flusher and its lease.

The daemon keeps doing what it does in single-node mode (parse, bin, count,
serve) and calls this object at a few points:

- ingest: :meth:`ClusterNode.submit` instead of adding counts to the local
  window, then :meth:`ClusterNode.wait_stored` before answering;
- evaluation: :meth:`ClusterNode.read` (outside the engine lock),
  :meth:`ClusterNode.install` (inside it) and :meth:`ClusterNode.evaluated`;
- status: :meth:`ClusterNode.status`, :meth:`ClusterNode.is_leader`,
  :meth:`ClusterNode.store_reachable`;
- lifecycle: :meth:`ClusterNode.start`, :meth:`ClusterNode.stop`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import redis

from driftmon.cluster.leader import (
    Leadership,
    alert_states_document,
    install_windows,
    load_alert_states,
    stream_layouts,
)
from driftmon.cluster.replica import (
    FLUSH_BUCKETS_S,
    ClockSkew,
    Flusher,
    Outcome,
    TooManyPending,
)
from driftmon.cluster.status import ClusterStatus
from driftmon.cluster.store import Store, StreamLayout, connect, read_password
from driftmon.config import ClusterConfig
from driftmon.engine import Engine
from driftmon.evaluation import Evaluation
from driftmon.ingest import QueueFull

log = logging.getLogger("driftmon.cluster")

class StoreUnavailable(QueueFull):
    """The store did not confirm a request's rows in time (answered 503 + Retry-After)."""


def default_replica_id() -> str:
    """``hostname-pid-random``: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WindowsRead:
    """What the leader read for one evaluation (see :meth:`ClusterNode.read`)."""

    now: float
    epoch: int
    counts: dict[str, tuple[str, np.ndarray]]
    alert_states: dict[str, object] | None
    load_alerts: bool


class ClusterNode:
    """The cluster machinery of one daemon (see the module docstring)."""

    def __init__(
        self,
        settings: ClusterConfig,
        *,
        clock: Callable[[], float] = time.time,
        on_new_lease: Callable[[], object] | None = None,
    ) -> None:
        """``on_new_lease`` runs (in the lease thread) as soon as this replica takes the
        lease: the daemon evaluates at once rather than at its next tick."""
        self.settings = settings
        self.on_new_lease = on_new_lease
        self.replica_id = settings.replica_id or default_replica_id()
        password = read_password(settings.redis.password_file)
        try:
            client = connect(settings.redis.url, password, cluster=settings.redis.cluster)
        except redis.RedisError as exc:  # a Redis Cluster client asks for the nodes at once
            raise ValueError(f"cluster.redis: cannot reach {settings.redis.url}: {exc}") from None
        self.store = Store(client, settings.redis.key_prefix)
        self.flusher = Flusher(
            self.store,
            self.replica_id,
            flush_every_s=settings.flush_every_s,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            max_clock_skew_s=settings.max_clock_skew_s,
            clock=clock,
        )
        self.leadership = Leadership(self.store, self.replica_id, settings.lease_ttl_s)
        self._lock = threading.Lock()  # the counters and the layouts cache below
        self._deduplicated = 0
        self._layouts: tuple[object, dict[str, tuple[StreamLayout, slice]]] | None = None
        self._alerts_loaded_epoch = 0
        self._installed_now = -math.inf  # store time of the newest read installed
        self._stopped = threading.Event()
        self._lease_thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start flushing and competing for the lease."""
        log.info(
            "cluster mode shared: replica %s, store %s, prefix %s",
            self.replica_id,
            self.settings.redis.url.split("@")[-1],
            self.settings.redis.key_prefix,
        )
        self.flusher.start()
        self._lease_thread = threading.Thread(
            target=self._hold_lease, name="driftmon-lease", daemon=True
        )
        self._lease_thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what is pending, give the lease up and end the threads."""
        self._stopped.set()
        self.flusher.stop(timeout_s)
        if self._lease_thread is not None:
            self._lease_thread.join(timeout_s)
        self.leadership.release()

    def _hold_lease(self) -> None:
        # The leader renews every third of the TTL; the others look ten times per TTL, so
        # a lease that lapses is taken within a tenth of the TTL.
        ttl_s = self.settings.lease_ttl_s
        while not self._stopped.is_set():
            try:
                taken = self.leadership.tick()
                self.flusher.mark_reachable(True)
            except redis.RedisError as exc:
                taken = False
                log.warning("lease: the store did not answer: %s", exc)
                self.flusher.mark_reachable(False)
            if taken and self.on_new_lease is not None:
                try:
                    self.on_new_lease()
                except Exception:  # the lease must be kept whatever the evaluation does
                    log.exception("evaluation on taking the lease failed")
            self._stopped.wait(ttl_s / 3 if self.leadership.epoch else ttl_s / 10)

    # --- ingest -----------------------------------------------------------------

    def layouts(self, engine: Engine) -> dict[str, tuple[StreamLayout, slice]]:
        """The store layouts of ``engine``'s streams (cached per engine packing)."""
        version = (id(engine), engine.generation)
        with self._lock:
            if self._layouts is not None and self._layouts[0] == version:
                return self._layouts[1]
        layouts = stream_layouts(engine)
        with self._lock:
            self._layouts = (version, layouts)
        return layouts

    def admit(self, engine: Engine, streams: Sequence[str], key: str | None) -> None:
        """Refuse a whole request up front (:class:`StoreUnavailable`, nothing submitted)
        while this replica's clock is too far off the store's, or while the store has been
        away so long that keyed requests fill a stream's pending flush."""
        layouts = self.layouts(engine)
        found = [layouts[name][0] for name in streams if name in layouts]
        try:
            self.flusher.admit(found, key is not None)
        except (ClockSkew, TooManyPending) as exc:
            raise StoreUnavailable(str(exc)) from None

    def submit(
        self, engine: Engine, stream: str, counts: np.ndarray, rows: int, key: str | None
    ) -> Future[Outcome] | None:
        """Hand a batch's counts to the next flush (after :meth:`admit`); ``None`` for a
        stream without a window."""
        found = self.layouts(engine).get(stream)
        if found is None:
            return None
        return self.flusher.submit(found[0], counts, rows, key)

    async def wait_stored(self, acks: Sequence[Future[Outcome]]) -> None:
        """Wait until the store holds every part of one request.

        Raises :class:`StoreUnavailable` after ``cluster.ack_timeout``, or when
        the store refused a part. A request every part of which had been
        counted before (its ``Idempotency-Key``) counts as deduplicated.
        """
        if not acks:
            return
        wrapped = [asyncio.wrap_future(ack) for ack in acks]
        # asyncio.wait, not wait_for: a timeout must not cancel the futures (the flusher
        # still resolves them when the store is back).
        done, pending = await asyncio.wait(wrapped, timeout=self.settings.ack_timeout_s)
        if pending:
            raise StoreUnavailable(
                f"the shared store did not confirm the rows within "
                f"{self.settings.ack_timeout_s:g} s"
            )
        outcomes = [future.result() for future in wrapped]
        failed = [outcome.error for outcome in outcomes if not outcome.stored]
        if failed:
            raise StoreUnavailable(f"the shared store did not take the rows: {failed[0]}")
        if all(outcome.duplicate for outcome in outcomes):
            with self._lock:
                self._deduplicated += 1

    # --- the leader ---------------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether this replica holds the lease now."""
        return self.leadership.is_leader()

    def store_reachable(self) -> bool:
        """Whether the last call to the store succeeded."""
        with self.flusher.lock:
            return self.flusher.stats.store_reachable

    def read(self, engine: Engine) -> WindowsRead | None:
        """As leader: every stream's window from the store (and the alert states on taking
        over); ``None`` as a follower or when the store does not answer."""
        epoch = self.leadership.epoch
        if not self.is_leader():
            return None
        layouts = [layout for layout, _ in self.layouts(engine).values()]
        load = self._alerts_loaded_epoch != epoch
        try:
            reads = self.store.read_windows(layouts)
            now = reads[0].server_time_s if reads else self.store.time()
            states = self.store.load_alerts() if load else None
        except redis.RedisError as exc:
            log.warning("leader: cannot read the windows from the store: %s", exc)
            self.flusher.mark_reachable(False)
            return None
        counts = {
            layout.stream: (layout.fingerprint, read.counts)
            for layout, read in zip(layouts, reads, strict=True)
        }
        return WindowsRead(now, epoch, counts, states, load)

    def install(self, engine: Engine, read: WindowsRead) -> bool:
        """Put what :meth:`read` got into ``engine`` (hold the daemon's engine lock).

        ``False`` (nothing done) for a read older than one already installed:
        two evaluations may read at once (the periodic one and the one on
        taking the lease), and alert timers must never see time go back.
        """
        if read.now < self._installed_now:
            return False
        self._installed_now = read.now
        if read.load_alerts:
            kept = load_alert_states(engine, read.alert_states)
            log.info("leader (epoch %d): took over %d alert states", read.epoch, kept)
            self._alerts_loaded_epoch = read.epoch
        install_windows(engine, read.now, read.counts)
        return True

    def evaluated(self, evaluation: Evaluation, read: WindowsRead) -> None:
        """Write the evaluation's alert states under the epoch; step down if fenced off."""
        try:
            document = alert_states_document(evaluation, read.epoch)
            written = self.store.save_alerts(read.epoch, document)
        except redis.RedisError as exc:
            log.warning("leader: cannot write the alert states: %s", exc)
            return
        if not written:
            self.leadership.step_down()

    def status(self) -> ClusterStatus:
        """The picture one scrape shows."""
        with self.flusher.lock:
            stats = self.flusher.stats
            cumulative = np.cumsum(stats.bucket_counts).tolist()
            labels = [repr(float(b)) for b in FLUSH_BUCKETS_S] + ["+Inf"]
            buckets = tuple(zip(labels, (float(c) for c in cumulative), strict=True))
            picture = (
                stats.duration_sum_s,
                stats.failures,
                stats.late_rows,
                stats.clock_offset_s,
                stats.store_reachable,
            )
        with self._lock:
            deduplicated = self._deduplicated
        return ClusterStatus(
            leader=self.is_leader(),
            epoch=self.leadership.epoch,
            store_reachable=picture[4],
            flush_buckets=buckets,
            flush_duration_sum_s=picture[0],
            flush_failures=picture[1],
            deduplicated_requests=deduplicated,
            late_rows=picture[2],
            clock_offset_s=picture[3],
        )
