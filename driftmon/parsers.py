"""Parse processes: ingest bodies parsed and binned outside the daemon's GIL.

Parsing a body holds the GIL, so in one process ingest stops at about one
core (bench/README.md). With ``ingest.processes: N`` a worker thread hands a
body to an idle child and waits, GIL released, for the counts (and per-row
bin indices for ``{samples: N}`` windows) that :meth:`Engine.apply` takes.
A child gets only the stream's binners and offsets
(:class:`~driftmon.packing.StreamLayout`), tagged with the engine's
``generation``; what it cannot do (a warmup, a layout changed meanwhile, no
child alive) the worker does in-process. A child that dies is dropped and
its job redone in-process; :meth:`ParseProcesses.maintain`, called by the
daemon's main loop, reaps dead children and starts new ones with backoff.

Messages are pickles over ``multiprocessing`` pipes between the daemon and
its own children; nothing read from a request or a file is unpickled.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np

from driftmon.config import StreamConfig
from driftmon.packing import StreamLayout
from driftmon.reference import numeric_fields
from driftmon.sources import BodyError, UnsupportedMediaType

__all__ = ["Binned", "ChildUnavailable", "ParseProcesses"]

log = logging.getLogger("driftmon")

START_TIMEOUT_S = 120.0
"""How long a child may take to start (import numba, load the cached kernels)."""
JOB_TIMEOUT_S = 60.0
"""A child that has not answered a job within this is taken for hung and replaced."""
RESTART_BACKOFF_S = (1.0, 30.0)
"""First and longest wait before starting a child again after a failed start."""


# --- messages (pickled over the pipe) -------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Daemon → child: how to parse and bin one stream's rows."""

    stream: str
    fields: tuple[str, ...]
    numeric_fields: frozenset[str]
    layout: StreamLayout


@dataclass(frozen=True)
class _Job:
    """Daemon → child: one body for ``stream``, binned with its layout of ``generation``."""

    stream: str
    generation: int
    body: bytes
    content_type: str | None


@dataclass(frozen=True)
class Binned:
    """Child → daemon: a body parsed and binned for packing ``generation``."""

    generation: int
    n_rows: int
    unknown_fields: int
    counts: np.ndarray
    indices: np.ndarray | None


@dataclass(frozen=True)
class _Refused:
    """Child → daemon: the body does not parse (a 400, or a 415 for its media type)."""

    message: str
    media_type: bool


@dataclass(frozen=True)
class _Failed:
    """Child → daemon: anything else; the worker redoes the job in-process."""

    reason: str


class ChildUnavailable(Exception):
    """No child could take the job (none alive, or it died on it): do it in-process."""


class _Child:
    """One child process, the daemon's end of its pipe, and the layouts it holds."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.generations: dict[str, int] = {}

    def close(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)


class ParseProcesses:
    """``count`` child processes that parse and bin bodies (thread-safe).

    :meth:`start` blocks until every child has loaded the kernels;
    :meth:`run` is called from worker threads, each taking an idle child for
    one job; :meth:`maintain` from one place only (the daemon's main loop).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._idle: list[_Child] = []
        self._alive = 0
        self._closed = False
        self._backoff_s = 0.0
        self._next_start = 0.0

    def start(self) -> None:
        """Start the children; raises ``OSError`` or ``TimeoutError`` if one does not come up."""
        children = [self._spawn() for _ in range(self.count)]
        for child in children:
            self._await_ready(child)
            self._add(child)
        log.info("%d parse processes ready", self.count)

    def _spawn(self) -> _Child:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(theirs,), name="driftmon-parse", daemon=True
        )
        process.start()
        theirs.close()
        return _Child(process, ours)

    @staticmethod
    def _await_ready(child: _Child) -> None:
        if not child.conn.poll(START_TIMEOUT_S):
            child.close()
            raise TimeoutError(f"a parse process did not start within {START_TIMEOUT_S:g} s")
        try:
            message = child.conn.recv()
        except (EOFError, OSError) as exc:
            child.close()
            raise OSError(f"a parse process died while starting: {exc}") from exc
        if message != "ready":
            child.close()
            raise OSError(f"a parse process started wrongly: {message!r}")

    def _add(self, child: _Child) -> None:
        with self._lock:
            if self._closed:
                child.close()
                return
            self._alive += 1
            self._idle.append(child)
            self._freed.notify()

    @property
    def alive(self) -> int:
        """Children alive now (busy or idle), as far as the last job or upkeep knows."""
        with self._lock:
            return self._alive

    def run(
        self, stream: StreamConfig, layout: StreamLayout, body: bytes, content_type: str | None
    ) -> Binned:
        """Parse and bin one body of ``stream`` in a child, for ``layout``.

        Raises :class:`~driftmon.sources.BodyError` (or its subclass
        :class:`~driftmon.sources.UnsupportedMediaType`) as parsing in-process
        would, and :class:`ChildUnavailable` when no child could do it.
        """
        with self._lock:
            if not self._freed.wait_for(lambda: self._idle or not self._alive, JOB_TIMEOUT_S):
                raise ChildUnavailable("no parse process became free")
            if not self._idle:
                raise ChildUnavailable("no parse process is running")
            child = self._idle.pop()
        try:
            if child.generations.get(stream.name) != layout.generation:
                fields = tuple(feature.name for feature in stream.features)
                numeric = frozenset(numeric_fields(stream))
                child.conn.send(_Layout(stream.name, fields, numeric, layout))
                child.generations[stream.name] = layout.generation
            child.conn.send(_Job(stream.name, layout.generation, body, content_type))
            if not child.conn.poll(JOB_TIMEOUT_S):
                raise TimeoutError(f"no answer within {JOB_TIMEOUT_S:g} s")
            reply = child.conn.recv()
        except (EOFError, OSError, TimeoutError) as exc:
            self._drop(child, f"{type(exc).__name__}: {exc}")
            raise ChildUnavailable("the parse process failed") from exc
        with self._lock:
            self._idle.append(child)
            self._freed.notify()
        if isinstance(reply, Binned):
            return reply
        if isinstance(reply, _Refused):
            raise (
                UnsupportedMediaType(reply.message)
                if reply.media_type
                else BodyError(reply.message)
            )
        # An exception in the child that parsing in-process would raise too; the worker
        # redoes the job in-process, where it surfaces as it does without processes.
        assert isinstance(reply, _Failed), reply
        raise ChildUnavailable(f"the parse process raised {reply.reason}")

    def _drop(self, child: _Child, reason: str) -> None:
        """Forget a failed child; :meth:`maintain` starts another."""
        log.error("parse process %s failed (%s); replacing it", child.process.pid, reason)
        child.close()
        with self._lock:
            self._alive -= 1
            self._freed.notify_all()

    def maintain(self) -> None:
        """Reap children that died idle and start missing ones (blocking; one caller).

        A failed start waits ``RESTART_BACKOFF_S[0]`` before the next, doubling
        up to ``RESTART_BACKOFF_S[1]``, as a process supervisor's arbiter does.
        """
        with self._lock:
            dead = [child for child in self._idle if not child.process.is_alive()]
            for child in dead:
                self._idle.remove(child)
            missing = self.count - self._alive + len(dead)
            closed = self._closed
        for child in dead:
            code = child.process.exitcode
            self._drop(child, f"exit code {code}")
        if closed or missing <= 0 or time.monotonic() < self._next_start:
            return
        for _ in range(missing):
            try:
                child = self._spawn()
                self._await_ready(child)
            except (OSError, TimeoutError) as exc:
                first, longest = RESTART_BACKOFF_S
                self._backoff_s = min(longest, max(first, 2 * self._backoff_s))
                self._next_start = time.monotonic() + self._backoff_s
                log.error(
                    "cannot start a parse process (next try in %g s): %s", self._backoff_s, exc
                )
                return
            self._backoff_s = 0.0
            self._add(child)

    def close(self) -> None:
        """Stop every idle child (call once no job runs)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            try:
                child.conn.send("stop")
            except OSError:
                pass
            child.process.join(5.0)
            child.close()


def _serve(conn: Connection) -> None:
    """A child's main loop: answer jobs until the daemon says stop or its pipe closes."""
    # Signals are the daemon's: a TERM or INT sent to the whole process group must not
    # kill a child before the daemon has drained; the child ends when the pipe does.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    from driftmon.kernels import warm_up_all
    from driftmon.packing import bin_rows
    from driftmon.sources import parse_body

    warm_up_all()
    conn.send("ready")
    layouts: dict[str, _Layout] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(message, _Layout):
            layouts[message.stream] = message
            continue
        if not isinstance(message, _Job):
            return  # "stop"
        reply: Binned | _Refused | _Failed
        try:
            known = layouts[message.stream]
            if known.layout.generation != message.generation:
                raise RuntimeError("a job for a layout this process does not hold")
            batch = parse_body(
                message.body,
                message.content_type,
                known.fields,
                numeric_fields=known.numeric_fields,
            )
            counts, indices = bin_rows(known.layout, batch.columns, batch.n_rows)
            reply = Binned(message.generation, batch.n_rows, batch.unknown_fields, counts, indices)
        except UnsupportedMediaType as exc:
            reply = _Refused(str(exc), media_type=True)
        except BodyError as exc:
            reply = _Refused(str(exc), media_type=False)
        except Exception as exc:  # noqa: BLE001 - reported to the daemon, which redoes the job
            reply = _Failed(f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
