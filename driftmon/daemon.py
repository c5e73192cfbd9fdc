"""The arbiter: one engine at a time, its loops, its signals and its parse processes.

:class:`Daemon` loads references and state into an
:class:`~driftmon.engine.Engine`, installs it in the ingest gate
(:mod:`driftmon.ingest`), swaps it on reload, runs the evaluation and
checkpoint loops, and dispatches the signal queue (TERM/INT drain and
checkpoint, HUP reloads). It keeps the parse processes up from its main
loop. It imports no HTTP code: :mod:`driftmon.cli` hands it a listener.
Durability: docs/durability.md.

It is one module of about 780 lines because the order of a daemon's life
(lock the state dir, listen, load, restore, serve, reload, drain, final
checkpoint, release) is what must be read and reviewed as a whole; the
parts that need no ordering live elsewhere (the ingest gate, the parse
processes, the HTTP layer, logging).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from driftmon.checkpoint import (
    CHECKPOINT_NAME,
    remove_stale_temporaries,
    restore_or_move_aside,
    write_checkpoint,
)
from driftmon.clock import SteadyClock, wall_offset_s
from driftmon.config import Config, ConfigError, ServerConfig, describe, load_config
from driftmon.engine import Engine
from driftmon.evaluation import Evaluation
from driftmon.exporter import DurationHistogram, Status, new_registry
from driftmon.files import StateDirLock, read_regular
from driftmon.history import MonitorHistory
from driftmon.ingest import Gate, IngestResult, LoopWatch
from driftmon.kernels import warm_up_all
from driftmon.lifecycle import take_pending
from driftmon.logs import WarmupLog, log_transitions
from driftmon.parsers import ParseProcesses
from driftmon.reference import Reference, ReferenceError, load_snapshot
from driftmon.sources import Batch

if TYPE_CHECKING:
    from driftmon.cluster.node import ClusterNode

log = logging.getLogger("driftmon")

MAX_TOKEN_BYTES = 64 * 1024
"""A token file larger than this is refused (it is one line)."""

PARSE_UPKEEP_EVERY_S = 1.0
"""How often the main loop reaps and restarts parse processes."""


class Listener(Protocol):
    """What serves the daemon's HTTP API (:class:`driftmon.http.app.HttpListener`)."""

    async def start(self) -> str:
        """Start listening; the URL. Raises ``OSError`` when the address is not available."""
        ...

    async def stop(self) -> None:
        """Stop taking requests, let the ones in flight finish within a bounded grace
        (``server.shutdown_grace``), then close every connection."""
        ...

    def connection_figures(self) -> tuple[int, dict[str, int]]:
        """Connections open now, and those closed by the listener's guard by reason."""
        ...


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

    def edge(server: ServerConfig) -> tuple[float, float, float, int, float]:
        return (
            server.header_timeout_s,
            server.body_timeout_s,
            server.keepalive_timeout_s,
            server.max_connections,
            server.shutdown_grace_s,
        )

    if edge(running.server) != edge(loaded.server):
        notices.append(
            "server.header_timeout, body_timeout, keepalive_timeout, max_connections and "
            "shutdown_grace change only at restart"
        )
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
    if running.cluster != loaded.cluster:
        notices.append("cluster settings change only at restart: the running ones stay")
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
    daemon through simulated hours. By default ``clock`` is a
    :class:`~driftmon.clock.SteadyClock` (wall time at start, then monotonic)
    and ``sleep`` asyncio's.
    """

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        state_dir: Path | None = None,
    ) -> None:
        self.config_path = config_path
        # Steady by default: panes and alert timers ignore wall-clock steps while running.
        self.clock: Callable[[], float] = SteadyClock() if clock is None else clock
        self._sleep = sleep
        self.state_dir = state_dir if state_dir is not None else config.state.dir
        self.latest: Evaluation | None = None
        self.ready_once = False  # state restored at least once: a checkpoint may be written
        self.reload_ok = True
        self.token = read_token(config.server.auth_token_file)
        self._lock = threading.Lock()  # the engine and the counters here and in the gate
        # The gate holds the config and engine that ingest sees; the daemon installs them.
        self.gate = Gate(config, self.clock, self._lock)
        # One checkpoint at a time: the one written at shutdown must not be overtaken by a
        # periodic one still being written (its older state would be renamed over the newer).
        self._checkpoint_lock = threading.Lock()
        self._durations = DurationHistogram()
        self._checkpoint_last_success: float | None = None
        self._checkpoint_failures = 0
        # Both kinds from the start, so that increase() sees the first one.
        self._moved_aside: Counter[str] = Counter({"checkpoint": 0})
        self._warmup_log = WarmupLog()
        self._events: asyncio.Queue[str] | None = None
        # Where users open the monitor pages: server.external_url, else the bound address.
        self.base_url = config.server.base_url()
        # Called with (rule, stream, feature, page URL) for each alert that starts firing.
        self.on_firing: Callable[[str, str, str, str], None] | None = None
        # cluster.mode: shared (driftmon/cluster/): windows live in the store, not in
        # checkpoints; this replica flushes its counts there and may lead.
        self.cluster: ClusterNode | None = None
        if config.cluster.shared:
            from driftmon.cluster.node import ClusterNode

            self.cluster = ClusterNode(
                config.cluster,
                clock=time.time if clock is None else clock,
                on_new_lease=self.evaluate,
            )
            self.gate.cluster = self.cluster
            if self.state_dir is not None:
                log.info("cluster.mode shared: state lives in the store; state.dir is not used")
            self.state_dir = None
        self.registry = new_registry(self.status)
        self._state_lock: StateDirLock | None = None
        self._listener: Listener | None = None
        # Reloads: one at a time, concurrent callers sharing the next one (reload_coalesced).
        self._reload_lock = threading.Lock()
        self._reload_turn = asyncio.Lock()
        self._reloads_asked = 0
        self._reloads_done = 0
        self._last_reload: ReloadOutcome | None = None

    @property
    def config(self) -> Config:
        """The config running now (a reload replaces it)."""
        return self.gate.config

    @property
    def engine(self) -> Engine | None:
        """The engine installed now (``None`` before :meth:`load_state`)."""
        return self.gate.engine

    @property
    def ready(self) -> bool:
        """Whether references are loaded and state restored (ingest is admitted)."""
        return self.gate.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.gate.ready = value

    @property
    def loop_watch(self) -> LoopWatch:
        """The event loop's heartbeat the ingest workers watch."""
        return self.gate.loop_watch

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
            self.gate.engine = engine
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

    # --- ingest (the gate's; here for callers that drive a daemon in-process) ------

    def ingest_batch(self, stream: str, batch: Batch) -> IngestResult:
        """Bin and apply an already-parsed batch (blocking)."""
        return self.gate.ingest_batch(stream, batch)

    def _start_parse_processes(self) -> None:
        count = self.config.ingest.processes
        if count == 0 or self.gate.parsers is not None:
            return
        parsers = ParseProcesses(count)
        try:
            parsers.start()
        except (OSError, TimeoutError) as exc:
            log.error("parse processes did not start; parsing in the workers: %s", exc)
            parsers.close()
            return
        self.gate.parsers = parsers

    async def _keep_parse_processes(self) -> None:
        """Reap and restart parse processes, from the main loop (not a thread per failure)."""
        while True:
            await asyncio.sleep(PARSE_UPKEEP_EVERY_S)
            parsers = self.gate.parsers
            if parsers is not None:
                await asyncio.to_thread(parsers.maintain)

    # --- evaluation and status ------------------------------------------------

    def evaluate(self) -> Evaluation | None:
        """One evaluation pass now; publishes and returns it.

        In shared mode only the leader evaluates, over the windows it reads
        from the store, on the store's clock; a follower publishes nothing.
        """
        shared = None
        if self.cluster is not None:
            assert self.engine is not None
            shared = self.cluster.read(self.engine)  # store round trips: outside the lock
            if shared is None:
                with self._lock:
                    self.latest = None
                return None
        with self._lock:
            assert self.engine is not None
            previous = self.latest
            now = self.clock()
            # Evaluated on the steady clock, published in wall-clock time.
            offset_s = wall_offset_s(self.clock)
            if self.cluster is not None and shared is not None:
                if not self.cluster.install(self.engine, shared):
                    return self.latest  # an evaluation that read later already ran
                now, offset_s = shared.now, 0.0  # the store's clock, as it is
            evaluation = self.engine.evaluate(now).shifted(offset_s)
            self.latest = evaluation
            self._durations.observe(evaluation.duration_s)
        if self.cluster is not None and shared is not None:
            self.cluster.evaluated(evaluation, shared)
        fired = log_transitions(previous, evaluation, self.base_url)
        if self.on_firing is not None:
            for rule, stream, feature, url in fired:
                self.on_firing(rule, stream, feature, url)
        self._log_warmup_progress()
        return evaluation

    def is_ready(self) -> bool:
        """``/-/ready``: references loaded, state restored and (shared mode) the store answers."""
        return self.ready and (self.cluster is None or self.cluster.store_reachable())

    def _log_warmup_progress(self) -> int:
        """Log each warmup's progress (:class:`~driftmon.logs.WarmupLog`); how many warm up."""
        with self._lock:
            engine = self.engine
            if engine is None:
                return 0
            progress = {name: engine.warmup_progress(name) for name in engine.stream_names()}
        return self._warmup_log.update(progress)

    def status(self) -> Status:
        """The picture one scrape shows (consistent: taken under the lock)."""
        parsers = self.gate.parsers
        listener = self._listener
        connections = None if listener is None else listener.connection_figures()
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
            leading = self.cluster is None or self.cluster.is_leader()
            return Status(
                evaluation=self.latest if leading else None,
                stream_rows=rows,
                value_kinds=kinds,
                unknown_fields=unknown,
                requests_by_code=dict(self.gate.requests),
                evaluation_durations=DurationHistogram(
                    self._durations.bounds,
                    list(self._durations.counts),
                    self._durations.total_s,
                    self._durations.n,
                ),
                queue_rows=self.gate.queue_rows,
                queue_capacity_rows=self.config.ingest.queue_rows,
                config_reload_ok=self.reload_ok,
                checkpoint_last_success_s=self._checkpoint_last_success,
                checkpoint_failures=self._checkpoint_failures,
                warmup=warmup,
                dropped_events=dict(self.gate.dropped_events),
                files_moved_aside=dict(self._moved_aside),
                parse_processes=None if parsers is None else parsers.alive,
                connections=connections,
                parse_process_jobs=None if parsers is None else self.gate.parse_jobs_in_children,
                cluster=None if self.cluster is None else self.cluster.status(),
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
            self._checkpoint_last_success = saved_at + wall_offset_s(self.clock)
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
        if config.cluster != self.config.cluster:  # cluster.mode: shared (driftmon/cluster/)
            config = dataclasses.replace(config, cluster=self.config.cluster)
        with self._lock:
            assert self.engine is not None
            engine.take_over(self.engine, self.clock())
            self.gate.engine = engine
            self.gate.config = config
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

    async def serve_forever(
        self, on_listening: Callable[[str], None] | None = None, *, listener: Listener
    ) -> int:
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

        if self.state_dir is not None:
            try:
                self._state_lock = StateDirLock(self.state_dir)
                self._state_lock.acquire()
            except OSError as exc:
                log.error("cannot start: %s", exc)
                self.gate.pool.shutdown(wait=False)
                return 1
        server = self.config.server
        self._listener = listener
        try:
            url = await listener.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", server.host, server.port, exc.strerror or exc)
            self.gate.pool.shutdown(wait=False)
            if self._state_lock is not None:
                self._state_lock.release()
            return 1
        if server.external_url is None:
            self.base_url = url
        log.info("listening on %s", url)
        if on_listening is not None:
            on_listening(url)
        tasks: list[asyncio.Task[None]] = []
        heartbeat = asyncio.create_task(self.gate.loop_watch.beat())
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
            if self.cluster is not None:
                await asyncio.to_thread(self.cluster.start)
            warming = self._log_warmup_progress()
            log.info(
                "ready: %s%s",
                describe(self.config),
                f"; {warming} stream{'s' if warming > 1 else ''} still collecting "
                "a warmup reference"
                if warming
                else "",
            )
            tasks.append(asyncio.create_task(self._every(self._evaluate_every, self.evaluate)))
            if self.state_dir is not None:
                tasks.append(
                    asyncio.create_task(self._every(self._checkpoint_every, self.checkpoint))
                )
            if self.gate.parsers is not None:
                tasks.append(asyncio.create_task(self._keep_parse_processes()))
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
            # Stop taking requests, give the ones in flight server.shutdown_grace at most
            # (a stalled upload or a slow scrape is cut off), then drain the pool.
            await listener.stop()
            await asyncio.to_thread(self.gate.close)
            if self.cluster is not None:
                await asyncio.to_thread(self.cluster.stop)
            if self.gate.parsers is not None:
                await asyncio.to_thread(self.gate.parsers.close)
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
