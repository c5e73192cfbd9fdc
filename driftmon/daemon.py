"""The long-running service: ingest workers, evaluation and checkpoint loops, reloads.

:class:`Daemon` owns one :class:`~driftmon.engine.Engine` behind a lock and
everything around it (docs/http-api.md, docs/durability.md):

- **Ingest.** A request's body is parsed and binned in a pool of
  ``ingest.workers`` threads: parsing holds the GIL, binning runs ``nogil``
  kernels into a buffer the batch owns, so several batches bin at once. Only
  the final ``apply`` — adding that buffer to the stream's window, O(bins) —
  takes the engine lock. A request is answered 200 once its rows are
  applied, so an acknowledged row is in the window (and in the next
  checkpoint). Two bounds keep a flood from growing memory: rows parsed but
  not yet applied (``ingest.queue_rows``) and bytes of bodies waiting for a
  worker; past either the answer is 503 with ``Retry-After``.
- **Evaluation** every ``engine.evaluate_every`` on the daemon's clock (the
  wall clock unless a test injects one), in a thread, publishing an immutable
  :class:`~driftmon.engine.Evaluation`.
- **Checkpoints** every ``state.checkpoint_every`` and at shutdown: the
  engine's state is exported under the lock (a copy) and written outside it.
- **Lifecycle.** Signal handlers only enqueue; :meth:`Daemon.serve_forever`
  dispatches: TERM/INT drain and checkpoint, HUP reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from driftmon.checkpoint import (
    CHECKPOINT_NAME,
    remove_stale_temporaries,
    restore_or_move_aside,
    write_checkpoint,
)
from driftmon.config import Config, ConfigError, load_config
from driftmon.engine import BinnedBatch, Engine, Evaluation, UnknownStreamError
from driftmon.exporter import DurationHistogram, Status, new_registry
from driftmon.files import StateDirLock, read_regular
from driftmon.history import MonitorHistory
from driftmon.kernels import warm_up_all
from driftmon.lifecycle import take_pending
from driftmon.parse import Batch, parse_body
from driftmon.parsers import ChildUnavailable, Layout, ParseProcesses
from driftmon.reference import Reference, ReferenceError, load_snapshot, numeric_fields

log = logging.getLogger("driftmon")

T = TypeVar("T")

MAX_TOKEN_BYTES = 64 * 1024
"""A token file larger than this is refused (it is one line)."""

RETRY_AFTER_S = 1
"""What a 503 asks the client to wait before trying again."""


class QueueFull(Exception):
    """The ingest queue cannot take this request now; retry later."""


class NotReady(Exception):
    """References are still loading or state is being restored."""


@dataclass(frozen=True)
class IngestResult:
    """What one accepted request did."""

    rows: int
    unknown_fields: int


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload did: ``errors`` (then nothing changed) and ``notices`` (applied)."""

    errors: list[str]
    notices: list[str]


def restart_only_changes(running: Config, loaded: Config) -> list[str]:
    """One sentence per setting that differs in ``loaded`` but applies only at restart."""
    notices = []
    if (running.server.host, running.server.port, running.server.max_body_bytes) != (
        loaded.server.host,
        loaded.server.port,
        loaded.server.max_body_bytes,
    ):
        notices.append("server.listen and server.max_body_bytes change only at restart")
    if running.state.dir != loaded.state.dir:
        notices.append(
            f"state.dir changes only at restart: checkpoints still go to {running.state.dir}"
        )
    if running.ingest.processes != loaded.ingest.processes:
        notices.append(
            "ingest.processes changes only at restart: "
            f"{running.ingest.processes} parse processes stay"
        )
    if running.ingest.workers != loaded.ingest.workers:
        notices.append(
            f"ingest.workers changes only at restart: {running.ingest.worker_count} workers stay"
        )
    return notices


def read_token(path: Path | None) -> bytes | None:
    """The bearer token in ``path`` (surrounding whitespace stripped), or ``None``."""
    if path is None:
        return None
    token = read_regular(path, max_bytes=MAX_TOKEN_BYTES).strip()
    if not token:
        raise ValueError(f"{path}: the auth token file is empty")
    return token


class Daemon:
    """One driftmon process: the engine, its loops and its configuration.

    ``clock`` returns Unix seconds; tests may pass their own. The periodic
    loops tick at multiples of their period on ``clock`` and wait with
    ``sleep`` (an awaitable taking seconds): pass both, e.g. a
    :class:`~driftmon.clock.SimulatedClock` and its ``sleep``, to run the whole
    daemon through simulated hours. Both default to the wall clock.
    """

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        state_dir: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self.state_dir = state_dir if state_dir is not None else config.state.dir
        self.engine: Engine | None = None
        self.latest: Evaluation | None = None
        self.ready = False
        self.ready_once = False  # state restored at least once: a checkpoint may be written
        self.reload_ok = True
        self.token = read_token(config.server.auth_token_file)
        self._lock = threading.Lock()  # the engine and the counters below
        # One checkpoint at a time: the one written at shutdown must not be overtaken by a
        # periodic one still being written (its older state would be renamed over the newer).
        self._checkpoint_lock = threading.Lock()
        # Parsing holds the GIL throughout, so two workers parsing at once only take turns,
        # paying for every forced switch: bench/bench_ingest.py measured 1.84 ms of daemon CPU
        # per columnar body with two workers parsing side by side, 1.61 ms one at a time.
        # One parses while another bins (the row queue of docs/http-api.md is what waits there).
        self._parse_lock = threading.Lock()
        self._queue_rows = 0
        self._pending_bytes = 0
        self._requests: Counter[int] = Counter()
        self._dropped_events: Counter[str] = Counter()
        self._durations = DurationHistogram()
        self._checkpoint_last_success: float | None = None
        self._checkpoint_failures = 0
        # Both kinds from the start, so that increase() sees the first one.
        self._moved_aside: Counter[str] = Counter({"checkpoint": 0})
        self._pool = ThreadPoolExecutor(
            max_workers=config.ingest.worker_count, thread_name_prefix="driftmon-ingest"
        )
        self._events: asyncio.Queue[str] | None = None
        self.loop_watch = LoopWatch()
        # Parse processes (ingest.processes): started by load_state, fed the engine's layout.
        self._parsers: ParseProcesses | None = None
        self._engine_serial = 0  # counts the engines installed: part of the layout version
        self._layout: Layout | None = None
        # Where users open the monitor pages: server.external_url, else the bound address.
        self.base_url = config.server.base_url()
        # Called with (rule, stream, feature, page URL) for each alert that starts firing.
        self.on_firing: Callable[[str, str, str, str], None] | None = None
        self.registry = new_registry(self.status)
        self._state_lock: StateDirLock | None = None
        # Reloads: one at a time, concurrent callers sharing the next one (reload_coalesced).
        self._reload_lock = threading.Lock()
        self._reload_turn = asyncio.Lock()
        self._reloads_asked = 0
        self._reloads_done = 0
        self._last_reload: ReloadOutcome | None = None

    # --- start ----------------------------------------------------------------

    def load_state(self) -> None:
        """Build the engine: references loaded, checkpoint restored (blocking; call in a thread).

        Raises :class:`~driftmon.reference.ReferenceError` when a ``file``
        reference cannot be loaded, or a ``snapshot`` one when the checkpoint
        kept no copy of its stream's reference (:meth:`_load_snapshots`). A bad
        checkpoint is moved aside (counted in
        ``driftmon_state_files_moved_aside_total``) and the engine starts empty.
        """
        # Compile (or load from numba's cache) every kernel now, so that no
        # request pays for it: a cold cache costs tens of seconds.
        log.info("preparing kernels (compiling them takes up to a minute on a first start only)")
        started = time.monotonic()
        warm_up_all()
        log.info("kernels ready in %.1f s", time.monotonic() - started)
        now = self.clock()
        loaded = None
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale_temporaries(self.state_dir):
                log.info("removed stale temporary file %s", stale)
            loaded, reason = restore_or_move_aside(self.state_dir)
            if reason is not None:
                log.error("checkpoint unusable, starting empty: %s", reason)
                if (self.state_dir / CHECKPOINT_NAME).exists():
                    # It could not be moved aside: never overwrite it.
                    log.error("checkpoints disabled: %s is still in the way", CHECKPOINT_NAME)
                    self.state_dir = None
                else:
                    with self._lock:
                        self._moved_aside["checkpoint"] += 1
        references, unusable = self._load_snapshots()
        engine = Engine(self.config, now=now, references=references)
        if loaded is not None:
            # adopt() also takes over a warmup reference frozen before the restart
            # (and a reference the checkpoint kept for an unusable snapshot).
            engine.adopt(loaded.state, now)
            log.info("restored state from %s (saved at %.3f)", loaded.path, loaded.saved_at)
        packed = {monitor.stream for monitor in engine.monitors}
        for name, reason in unusable.items():
            if name not in packed:
                raise ReferenceError(f"stream {name!r}: {reason}")
            log.error(
                "stream %r: its reference snapshot is unusable (%s); using the copy of the "
                "reference kept in the checkpoint",
                name,
                reason,
            )
        with self._lock:
            self.engine = engine
            self._engine_serial += 1
        self._start_parse_processes()
        self.evaluate()
        _freeze_long_lived_objects()
        self.ready = True
        self.ready_once = True

    def _load_snapshots(self) -> tuple[dict[str, Reference | None], dict[str, str]]:
        """The ``snapshot`` references of the config (``None`` for an unusable one), and why.

        A snapshot is the user's file: whatever is wrong with it (missing,
        unreadable, not a snapshot, built for other features or bins), it is
        never renamed nor deleted. Its stream may carry on with the copy of
        its reference a checkpoint kept (:meth:`load_state` decides); the
        reasons are returned by stream name. Loading executes nothing
        (``allow_pickle=False``).
        """
        references: dict[str, Reference | None] = {}
        unusable: dict[str, str] = {}
        for stream in self.config.streams:
            spec = stream.reference
            if spec.kind != "snapshot" or spec.path is None:
                continue
            try:
                references[stream.name] = load_snapshot(spec.path, stream)
                continue
            except ReferenceError as exc:
                reason = str(exc)
            except Exception as exc:  # a start must survive any file
                log.exception("unexpected error reading reference snapshot %s", spec.path)
                reason = f"unexpected error: {type(exc).__name__}: {exc}"
            references[stream.name] = None
            unusable[stream.name] = reason
        return references, unusable

    # --- ingest ---------------------------------------------------------------

    def check_token(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header passes (always, with no token configured).

        The scheme is matched case-insensitively (RFC 9110 §11.1: ``bearer`` is
        ``Bearer``); a header that is not valid UTF-8 simply does not match.
        """
        if self.token is None:
            return True
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # aiohttp decodes header bytes with surrogateescape: encode them back the same way,
        # so that undecodable bytes compare unequal instead of raising (a 500).
        offered = credentials.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(offered, self.token)

    def has_stream(self, name: str) -> bool:
        """Whether the config names stream ``name``."""
        return any(s.name == name for s in self.config.streams)

    def count_request(self, code: int) -> None:
        """Count one ingest request answered with ``code``."""
        with self._lock:
            self._requests[code] += 1

    def count_dropped_events(self, reason: str, count: int = 1) -> None:
        """Count ``count`` CloudEvents that fed no stream (``no_stream``, ``not_mapped``, …)."""
        with self._lock:
            self._dropped_events[reason] += count

    async def run_job(self, body_bytes: int, job: Callable[..., T], *args: object) -> T:
        """Run ``job(*args)`` in the ingest worker pool, counting ``body_bytes`` as waiting.

        Raises :class:`NotReady` before references are loaded and
        :class:`QueueFull` when the bodies already waiting for a worker exceed
        ``max(64 MiB, 4 × server.max_body_bytes)``: a flood queues no more
        than that in memory.
        """
        if not self.ready:
            raise NotReady()
        limit = max(64 * 1024 * 1024, 4 * self.config.server.max_body_bytes)
        with self._lock:
            if self._pending_bytes + body_bytes > limit and self._pending_bytes > 0:
                raise QueueFull("too many request bytes waiting for an ingest worker")
            self._pending_bytes += body_bytes
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, self._after_giving_way, job, *args)
        finally:
            with self._lock:
                self._pending_bytes -= body_bytes

    def _after_giving_way(self, job: Callable[..., T], *args: object) -> T:
        self.loop_watch.give_way()
        return job(*args)

    async def ingest(self, stream: str, body: bytes, content_type: str | None) -> IngestResult:
        """Parse, bin and apply one request body in the worker pool.

        Raises :class:`~driftmon.parse.BodyError` (nothing applied),
        :class:`QueueFull`, :class:`NotReady` or
        :class:`~driftmon.engine.UnknownStreamError`.
        """
        return await self.run_job(len(body), self._ingest_job, stream, body, content_type)

    def _ingest_job(self, stream: str, body: bytes, content_type: str | None) -> IngestResult:
        engine = self.engine
        if engine is None:
            raise NotReady()
        if self._parsers is not None:
            done = self._ingest_in_child(engine, stream, body, content_type)
            if done is not None:
                return done
        stream_config = engine.stream_config(stream)
        fields = [f.name for f in stream_config.features]
        with self._parse_lock:
            batch = parse_body(
                body, content_type, fields, numeric_fields=numeric_fields(stream_config)
            )
        self.loop_watch.give_way()
        return self.ingest_batch(stream, batch)

    def _start_parse_processes(self) -> None:
        count = self.config.ingest.processes
        if count == 0 or self._parsers is not None:
            return
        parsers = ParseProcesses(count)
        try:
            parsers.start()
        except (OSError, TimeoutError) as exc:
            log.error("parse processes did not start; parsing in the workers: %s", exc)
            parsers.close()
            return
        self._parsers = parsers

    def _current_layout(self, engine: Engine) -> Layout | None:
        """The layout a child must bin with for ``engine``; ``None`` once it is not current."""
        with self._lock:
            if engine is not self.engine:
                return None
            version = (self._engine_serial, engine.generation)
            if self._layout is None or self._layout.version != version:
                self._layout = Layout(version, engine.config, engine.references())
            return self._layout

    def _ingest_in_child(
        self, engine: Engine, stream: str, body: bytes, content_type: str | None
    ) -> IngestResult | None:
        """Parse and bin ``body`` in a parse process and apply it; ``None``: do it here.

        Raises what parsing raises (nothing applied) and :class:`QueueFull`.
        """
        assert self._parsers is not None
        if not engine.bins_in_place(stream):
            return None  # a warmup keeps raw values: only the in-process path has them
        layout = self._current_layout(engine)
        if layout is None:
            return None
        try:
            binned = self._parsers.run(layout, stream, body, content_type)
        except ChildUnavailable as exc:
            log.debug("parsing in the worker: %s", exc)
            return None
        if binned.n_rows and binned.counts is None:
            return None  # nothing binned (cannot happen for a stream with a layout)
        with self._lock:
            current = self.engine
            assert current is not None
            if (self._engine_serial, current.generation) != layout.version:
                return None  # the layout changed while the child binned: bin again here
            self._check_queue_room(binned.n_rows)
            batch = BinnedBatch(
                stream, binned.n_rows, {}, current.generation, binned.counts, binned.indices
            )
            current.apply(batch, self.clock(), unknown_fields=binned.unknown_fields)
        return IngestResult(binned.n_rows, binned.unknown_fields)

    def _check_queue_room(self, rows: int) -> None:
        """Raise :class:`QueueFull` unless ``rows`` more fit the row queue (hold ``_lock``).

        A non-empty queue bounds what joins it; an empty one takes any batch.
        """
        capacity = self.config.ingest.queue_rows
        if self._queue_rows + rows > capacity and self._queue_rows > 0:
            raise QueueFull(f"ingest queue holds {self._queue_rows} of {capacity} rows")

    def ingest_batch(self, stream: str, batch: Batch) -> IngestResult:
        """Bin and apply an already-parsed batch (worker threads)."""
        result = self.ingest_batches([(stream, batch)])[0]
        if result is None:
            raise UnknownStreamError(stream)
        return result

    def ingest_batches(self, batches: Sequence[tuple[str, Batch]]) -> list[IngestResult | None]:
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
        with self._lock:
            self._check_queue_room(rows)
            self._queue_rows += rows
        try:
            binned = [engine.bin_batch(s, b.n_rows, b.columns) for s, b in batches]
            results: list[IngestResult | None] = []
            with self._lock:
                current = self.engine
                assert current is not None
                now = self.clock()
                for (stream, batch), done in zip(batches, binned, strict=True):
                    if current is not engine:
                        # A reload swapped the engine while these batches were binned.
                        try:
                            done = current.bin_batch(stream, batch.n_rows, batch.columns)
                        except UnknownStreamError:
                            results.append(None)
                            continue
                    current.apply(done, now, unknown_fields=batch.unknown_fields)
                    results.append(IngestResult(batch.n_rows, batch.unknown_fields))
        finally:
            with self._lock:
                self._queue_rows -= rows
        return results

    # --- evaluation and status ------------------------------------------------

    def evaluate(self) -> Evaluation:
        """One evaluation pass now; publishes and returns it."""
        with self._lock:
            assert self.engine is not None
            previous = self.latest
            evaluation = self.engine.evaluate(self.clock())
            self.latest = evaluation
            self._durations.observe(evaluation.duration_s)
        fired = _log_transitions(previous, evaluation, self.base_url)
        if self.on_firing is not None:
            for rule, stream, feature, url in fired:
                self.on_firing(rule, stream, feature, url)
        return evaluation

    def status(self) -> Status:
        """The picture one scrape shows (consistent: taken under the lock)."""
        with self._lock:
            engine = self.engine
            if engine is None:
                rows: dict[str, int] = {}
                kinds: Iterable[tuple[str, str, Mapping[str, float]]] = ()
                unknown: dict[str, int] = {}
                warmup: dict[str, tuple[int, int]] = {}
            else:
                names = engine.stream_names()
                rows = {s: engine.stream_rows(s) for s in names}
                unknown = {s: engine.unknown_fields(s) for s in names}
                kinds = engine.value_kinds()
                warmup = {}
                for name in names:
                    progress = engine.warmup_progress(name)
                    if progress is not None:
                        warmup[name] = progress
            return Status(
                evaluation=self.latest,
                stream_rows=rows,
                value_kinds=kinds,
                unknown_fields=unknown,
                requests_by_code=dict(self._requests),
                evaluation_durations=DurationHistogram(
                    self._durations.bounds,
                    list(self._durations.counts),
                    self._durations.total_s,
                    self._durations.n,
                ),
                queue_rows=self._queue_rows,
                queue_capacity_rows=self.config.ingest.queue_rows,
                config_reload_ok=self.reload_ok,
                checkpoint_last_success_s=self._checkpoint_last_success,
                checkpoint_failures=self._checkpoint_failures,
                warmup=warmup,
                dropped_events=dict(self._dropped_events),
                files_moved_aside=dict(self._moved_aside),
                parse_processes=None if self._parsers is None else self._parsers.alive,
            )

    def monitor_detail(self, stream: str, feature: str) -> dict[str, object] | None:
        """Bin labels with reference and live counts of one monitor, or ``None``."""
        with self._lock:
            if self.engine is None:
                return None
            try:
                monitor = self.engine.monitor(stream, feature)
            except KeyError:
                return None
            return {
                "bins": monitor.binner.bin_labels(),
                "reference_counts": self.engine.reference[monitor.bins].tolist(),
                "live_counts": self.engine.live[monitor.bins].tolist(),
            }

    def monitor_history(self, stream: str, feature: str) -> MonitorHistory | None:
        """The recent evaluations of one monitor (a copy), or ``None`` when it has none."""
        with self._lock:
            if self.engine is None:
                return None
            try:
                monitor = self.engine.monitor(stream, feature)
            except KeyError:
                return None
            return self.engine.history.monitor(monitor.index)

    def history_series(
        self, wanted: dict[tuple[str, str], str]
    ) -> dict[tuple[str, str], MonitorHistory]:
        """For each (stream, feature) of ``wanted``, its history of the metric named there."""
        with self._lock:
            if self.engine is None:
                return {}
            index = {(m.stream, m.feature): m.index for m in self.engine.monitors}
            by_metric: dict[str, list[tuple[str, str]]] = {}
            for key, metric in wanted.items():
                if key in index:
                    by_metric.setdefault(metric, []).append(key)
            result: dict[tuple[str, str], MonitorHistory] = {}
            for metric, keys in by_metric.items():
                found = self.engine.history.monitors([index[k] for k in keys], metric)
                result.update(zip(keys, found, strict=True))
            return result

    # --- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> bool:
        """Write a checkpoint now (blocking); ``False`` (logged, counted) when it fails."""
        with self._checkpoint_lock:
            return self._checkpoint_now()

    def _checkpoint_now(self) -> bool:
        if self.state_dir is None:
            return False
        with self._lock:
            if self.engine is None:
                return False
            state = self.engine.export_state()
        saved_at = self.clock()
        try:
            path = write_checkpoint(self.state_dir, state, saved_at=saved_at)
        except (OSError, ValueError) as exc:
            with self._lock:
                self._checkpoint_failures += 1
            log.error("checkpoint failed: %s", exc)
            return False
        with self._lock:
            self._checkpoint_last_success = saved_at
        log.debug("checkpoint written to %s", path)
        return True

    # --- reload ---------------------------------------------------------------

    async def reload_coalesced(self) -> ReloadOutcome:
        """Reload in a thread, one at a time, concurrent callers sharing reloads.

        Every reload request (SIGHUP or any number of concurrent ``POST
        /-/reload``) comes through here, on the event loop: a caller waits
        for the reload running now to end, then is answered by the next one,
        which reads the file after every waiting caller asked. So N requests
        at once cost two reloads, never N side by side (each builds a whole
        engine: thirty overlapping ones multiplied the memory).
        """
        self._reloads_asked += 1
        ticket = self._reloads_asked
        async with self._reload_turn:
            if self._reloads_done >= ticket and self._last_reload is not None:
                return self._last_reload
            covers = self._reloads_asked
            outcome = await asyncio.to_thread(self.reload)
            self._reloads_done = covers
            self._last_reload = outcome
            return outcome

    def reload(self) -> ReloadOutcome:
        """Re-read the config file (blocking); the errors, or none once applied.

        On any error the old config and engine stay in place and
        ``driftmon_config_last_reload_successful`` drops to 0. ``notices``
        name settings that changed but apply only at restart. Serialised:
        a second caller waits for the first.
        """
        with self._reload_lock:
            return self._reload_now()

    def _reload_now(self) -> ReloadOutcome:
        try:
            # A snapshot moved aside at start must not block every later reload.
            config = load_config(self.config_path, snapshots_must_exist=False)
            token = read_token(config.server.auth_token_file)
            with self._lock:
                old = self.engine
            assert old is not None
            engine = old.successor(config, self.clock())
        except ConfigError as exc:
            return self._reload_failed(exc.errors)
        except (ReferenceError, OSError, ValueError) as exc:
            return self._reload_failed([str(exc)])
        notices = restart_only_changes(self.config, config)
        for notice in notices:
            log.warning("reload: %s", notice)
        with self._lock:
            assert self.engine is not None
            engine.take_over(self.engine, self.clock())
            self.engine = engine
            self._engine_serial += 1
            self.config = config
            self.token = token
            self.reload_ok = True
        log.info("config reloaded from %s", self.config_path)
        self.evaluate()
        _freeze_long_lived_objects()
        return ReloadOutcome([], notices)

    def _reload_failed(self, errors: list[str]) -> ReloadOutcome:
        self.reload_ok = False
        for error in errors:
            log.error("reload failed, keeping the running config: %s: %s", self.config_path, error)
        return ReloadOutcome(errors, [])

    # --- the main loop --------------------------------------------------------

    def request(self, event: str) -> None:
        """Ask the main loop to ``"stop"`` or ``"reload"`` (signal-handler safe)."""
        if self._events is not None:
            self._events.put_nowait(event)

    async def serve_forever(self, on_listening: Callable[[str], None] | None = None) -> int:
        """Serve until TERM/INT (or :meth:`request` ``"stop"``); returns the exit status."""
        self._events = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for signum, event in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._events.put_nowait, event)
        for event in take_pending():  # a HUP while the process started: reload once ready
            self._events.put_nowait(event)

        from aiohttp import web

        from driftmon.server import make_app

        if self.state_dir is not None:
            try:
                self._state_lock = StateDirLock(self.state_dir)
                self._state_lock.acquire()
            except OSError as exc:
                log.error("cannot start: %s", exc)
                self._pool.shutdown(wait=False)
                return 1
        app = make_app(self)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        server = self.config.server
        site = web.TCPSite(runner, server.host, server.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", server.host, server.port, exc.strerror or exc)
            await runner.cleanup()
            self._pool.shutdown(wait=False)
            if self._state_lock is not None:
                self._state_lock.release()
            return 1
        url = _bound_url(site, server.host)
        if server.external_url is None:
            self.base_url = url
        log.info("listening on %s", url)
        if on_listening is not None:
            on_listening(url)
        tasks: list[asyncio.Task[None]] = []
        heartbeat = asyncio.create_task(self.loop_watch.beat())
        final_checkpoint_ok = True
        try:
            try:
                deferred = await self._load_unless_stopped()
            except ReferenceError as exc:
                log.error("cannot start: %s", exc)
                return 1
            if deferred is None:
                log.info("stopped while starting: nothing restored, no checkpoint written")
                return 0
            for event in deferred:
                self._events.put_nowait(event)
            log.info("ready: %d monitors", len(self.latest.monitors) if self.latest else 0)
            tasks.append(asyncio.create_task(self._every(self._evaluate_every, self.evaluate)))
            if self.state_dir is not None:
                tasks.append(
                    asyncio.create_task(self._every(self._checkpoint_every, self.checkpoint))
                )
            while True:
                event = await self._events.get()
                if event == "stop":
                    break
                if event == "reload":
                    await self.reload_coalesced()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.ready = False
            # Stop taking requests, let the ones in flight finish, then drain the pool.
            await runner.cleanup()
            await asyncio.to_thread(self._pool.shutdown, wait=True)
            if self._parsers is not None:
                await asyncio.to_thread(self._parsers.close)
            if self.ready_once and self.engine is not None and self.state_dir is not None:
                final_checkpoint_ok = await asyncio.to_thread(self.checkpoint)
                if not final_checkpoint_ok:
                    log.error(
                        "the final checkpoint failed: rows since the last good checkpoint "
                        "are lost; exiting with status 1"
                    )
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if self._state_lock is not None:
                self._state_lock.release()
            log.info("stopped")
        return 0 if final_checkpoint_ok else 1

    async def _load_unless_stopped(self) -> list[str] | None:
        """Run :meth:`load_state` while watching for events; ``None`` when told to stop.

        Loading (kernels compiling on a first start, references, the
        checkpoint) may take tens of seconds and cannot be interrupted, so it
        runs in a daemon thread that a stop abandons: the process exits
        promptly and writes no checkpoint (nothing was restored). Reloads
        asked for meanwhile are returned, to run once ready. Raises what
        :meth:`load_state` raises.
        """
        assert self._events is not None
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()

        def load() -> None:
            try:
                self.load_state()
            except BaseException as exc:  # handed to the loop, raised there
                loop.call_soon_threadsafe(_settle, loaded, exc)
            else:
                loop.call_soon_threadsafe(_settle, loaded, None)

        threading.Thread(target=load, name="driftmon-load", daemon=True).start()
        deferred: list[str] = []
        while not loaded.done():
            event: asyncio.Future[str] = asyncio.ensure_future(self._events.get())
            waited: set[asyncio.Future[Any]] = {loaded, event}
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if not event.done():
                event.cancel()
                continue
            if event.result() == "stop":
                return None
            if event.result() not in deferred:
                deferred.append(event.result())
        loaded.result()
        return deferred

    def _evaluate_every(self) -> float:
        return self.config.engine.evaluate_every_s

    def _checkpoint_every(self) -> float:
        return self.config.state.checkpoint_every_s

    async def _every(self, period_s: Callable[[], float], work: Callable[[], object]) -> None:
        """Run ``work`` in a thread at every multiple of ``period_s()`` on the daemon's clock."""
        while True:
            period = period_s()
            now = self.clock()
            await self._sleep(period - math.fmod(now, period))
            try:
                await asyncio.to_thread(work)
            except Exception:  # a failed pass must not end the loop
                log.exception("periodic %s failed", getattr(work, "__name__", "task"))


class LoopWatch:
    """How far behind the event loop runs; ingest workers give way while it lags.

    The event loop answers health checks and scrapes and reads request bodies;
    the workers parse bodies holding the GIL. Under a flood the loop waited
    for the GIL after nearly every socket read (py-spy: ~80 % of its samples)
    and ``/-/healthy`` took seconds. So before each GIL-heavy step a worker
    checks the loop's heartbeat and, when it is more than ``lag_limit_s``
    late, waits (GIL released) for the next beat, at most ``max_wait_s`` so
    that ingest always progresses.
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


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _freeze_long_lived_objects() -> None:
    """Move every object alive now out of the garbage collector's sight.

    Start-up leaves ~10^5 tracked objects (numba, numpy, aiohttp, the engine)
    that live as long as the process. Ingest bodies allocate thousands of
    dicts that survive young collections while a request is in flight, which
    triggers a full collection about once a second under load; each one
    walked the whole heap and paused every thread for 40–250 ms
    (bench/bench_ingest.py: json-rows p99 at half the peak rate went from
    148 ms to 5.5 ms with this). Frozen objects are never collected as
    cycles, which is right for objects that live until exit.
    """
    gc.collect()
    gc.freeze()


def _bound_url(site: object, host: str) -> str:
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else 0
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"



def monitor_url(base_url: str, stream: str, feature: str) -> str:
    """The address of a monitor's page under ``base_url``."""
    from driftmon.pages.render import monitor_path

    return base_url + monitor_path(stream, feature)


def _log_transitions(
    previous: Evaluation | None, current: Evaluation, base_url: str
) -> list[tuple[str, str, str, str]]:
    """Log alerts that started or stopped firing, with the monitor's page; returns the
    (rule, stream, feature, page URL) of those that started."""
    fired = []
    before: dict[tuple[str, str, str], int] = {}
    if previous is not None:
        for pair, state in zip(previous.alert_pairs, previous.alerts.state, strict=True):
            m = previous.monitors[pair.monitor]
            before[(pair.rule.name, m.stream, m.feature)] = int(state)
    for pair, state in zip(current.alert_pairs, current.alerts.state, strict=True):
        m = current.monitors[pair.monitor]
        key = (pair.rule.name, m.stream, m.feature)
        was = before.get(key, 0)
        if state == 2 and was != 2:
            value = float(current.values[pair.rule.metric][pair.monitor])
            url = monitor_url(base_url, m.stream, m.feature)
            log.warning(
                "alert %s firing for %s/%s: %s = %.6g; see %s",
                *key, pair.rule.metric, value, url,
            )
            fired.append((*key, url))
        elif was == 2 and state != 2:
            log.info(
                "alert %s resolved for %s/%s; see %s",
                *key, monitor_url(base_url, m.stream, m.feature),
            )
    return fired


def configure_logging(log_format: str, level: str = "INFO") -> None:
    """One line per record: plain text, or JSON objects with ``--log-format json``."""
    import json

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            entry = {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["exception"] = self.formatException(record.exc_info)
            return json.dumps(entry)

    handler = logging.StreamHandler()
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("DRIFTMON_LOG_LEVEL", level))
