"""Parse processes: ingest bodies parsed and binned outside the daemon's GIL.

Parsing a body (``orjson`` and the Python around it) holds the GIL, so in one
process ingest throughput stops at about one core whatever the number of
worker threads, and the fixed cost of HTTP in the event loop comes on top
(bench/bench_ingest.py). With ``ingest.processes: N`` the daemon starts N
child processes; a worker thread hands a body to an idle child and waits
(GIL released) for what the engine needs to apply it: the rows, the unknown
field count, and the bin counts (pane windows) or per-row bin indices
(``{samples: N}`` windows). The body never comes back and no Python object
of the parsed rows crosses the pipe.

A child bins with an :class:`~driftmon.engine.Engine` of its own, built from
the daemon's config and references (:class:`Layout`), so that its packing is
the daemon's; the daemon sends a new layout before the next job whenever its
own changed (a reload, a warmup frozen). What a child cannot do the worker
does in-process, as without processes: streams still collecting a warmup
(the warmup keeps raw values), a layout that changed while the child was
binning, and any body while no child is alive. A child that dies or stops
answering is replaced, and its job redone in-process: no request fails for
it.

Messages are pickles over ``multiprocessing`` pipes between the daemon and
its own children; nothing read from a request or a file is unpickled.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np

from driftmon.config import Config
from driftmon.parse import BodyError, UnsupportedMediaType, parse_body
from driftmon.reference import Reference, numeric_fields

__all__ = ["Binned", "ChildUnavailable", "Layout", "ParseProcesses"]

log = logging.getLogger("driftmon")

START_TIMEOUT_S = 120.0
"""How long a child may take to start (import numba, load the cached kernels)."""
JOB_TIMEOUT_S = 60.0
"""A child that has not answered a job within this is taken for hung and replaced."""
RESTART_PAUSE_S = 0.5
"""The pause before starting a child again after a replacement failed to start; doubled
at each failure, up to :data:`MAX_RESTART_PAUSE_S`."""
MAX_RESTART_PAUSE_S = 30.0


@dataclass(frozen=True)
class Layout:
    """What a child needs to bin exactly as the daemon's engine does now."""

    version: tuple[int, int]  # (the daemon's engine serial, that engine's generation)
    config: Config
    references: dict[str, Reference | None]


@dataclass(frozen=True)
class Binned:
    """A body parsed and binned by a child, ready for :meth:`Engine.apply`."""

    n_rows: int
    unknown_fields: int
    counts: np.ndarray | None
    indices: np.ndarray | None


class ChildUnavailable(Exception):
    """No child could take the job (none alive, or it died on it): do it in-process."""


class _Child:
    """One child process and the daemon's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.layout_version: tuple[int, int] | None = None

    def close(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)


class ParseProcesses:
    """``count`` child processes that parse and bin bodies (thread-safe).

    :meth:`start` blocks until every child has loaded the kernels;
    :meth:`run` is called from worker threads, each taking an idle child for
    the length of one job.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.SimpleQueue[_Child] = queue.SimpleQueue()
        self._alive = 0
        self._lock = threading.Lock()
        self._closed = False
        self._closing = threading.Event()  # set with _closed: wakes a restart's pause

    def start(self) -> None:
        """Start the children; raises ``OSError`` or ``TimeoutError`` if one does not come up."""
        children = [self._spawn() for _ in range(self.count)]
        for child in children:
            self._await_ready(child)
            with self._lock:
                self._alive += 1
            self._idle.put(child)
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
        if message != ("ready",):
            child.close()
            raise OSError(f"a parse process started wrongly: {message!r}")

    @property
    def alive(self) -> int:
        """Children alive now (busy or idle)."""
        with self._lock:
            return self._alive

    def run(self, layout: Layout, stream: str, body: bytes, content_type: str | None) -> Binned:
        """Parse and bin one body in a child, for ``layout``.

        Raises :class:`~driftmon.parse.BodyError` (or its subclass
        :class:`~driftmon.parse.UnsupportedMediaType`) as parsing in-process
        would, and :class:`ChildUnavailable` when no child could do it.
        """
        if self.alive == 0:
            raise ChildUnavailable("no parse process is running")
        try:
            child = self._idle.get(timeout=JOB_TIMEOUT_S)
        except queue.Empty:
            raise ChildUnavailable("no parse process became free") from None
        try:
            if child.layout_version != layout.version:
                child.conn.send(("layout", layout.config, layout.references))
                child.layout_version = layout.version
            child.conn.send(("job", stream, body, content_type))
            if not child.conn.poll(JOB_TIMEOUT_S):
                raise TimeoutError(f"no answer within {JOB_TIMEOUT_S:g} s")
            reply = child.conn.recv()
        except (EOFError, OSError, TimeoutError) as exc:
            self._replace(child, f"{type(exc).__name__}: {exc}")
            raise ChildUnavailable("the parse process failed") from exc
        self._idle.put(child)
        kind = reply[0]
        if kind == "ok":
            _, n_rows, unknown_fields, counts, indices = reply
            return Binned(n_rows, unknown_fields, counts, indices)
        if kind == "415":
            raise UnsupportedMediaType(reply[1])
        if kind == "400":
            raise BodyError(reply[1])
        # An exception in the child that parsing in-process would raise too; the worker
        # redoes the job in-process, where it surfaces as it does without processes.
        raise ChildUnavailable(f"the parse process raised {reply[1]}")

    def _replace(self, child: _Child, reason: str) -> None:
        """Drop a failed child and start another in the background."""
        log.error("parse process %s failed (%s); replacing it", child.process.pid, reason)
        child.close()
        with self._lock:
            self._alive -= 1
            if self._closed:
                return
        threading.Thread(target=self._start_one, name="driftmon-parse-restart", daemon=True).start()

    def _start_one(self) -> None:
        """Start a child, trying again with a growing pause until one is up or the pool closes.

        A replacement that dies while it starts must not leave the pool a child
        short for good (repeated kills would drain it to none).
        """
        pause_s = RESTART_PAUSE_S
        while True:
            with self._lock:
                if self._closed:
                    return
            try:
                child = self._spawn()
                self._await_ready(child)
                break
            except (OSError, TimeoutError) as exc:
                log.error("cannot start a parse process: %s; trying again in %g s", exc, pause_s)
            if self._closing.wait(pause_s):
                return
            pause_s = min(pause_s * 2, MAX_RESTART_PAUSE_S)
        with self._lock:
            if self._closed:
                child.close()
                return
            self._alive += 1
        self._idle.put(child)

    def close(self) -> None:
        """Stop every idle child (call once no job runs)."""
        with self._lock:
            self._closed = True
        self._closing.set()
        while True:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                return
            try:
                child.conn.send(("stop",))
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
    from driftmon.engine import Engine
    from driftmon.kernels import warm_up_all

    warm_up_all()
    conn.send(("ready",))
    engine: Engine | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        if message[0] == "layout":
            _, config, references = message
            engine = Engine(config, now=0.0, references=references)
            continue
        _, stream, body, content_type = message
        try:
            assert engine is not None, "a job before any layout"
            stream_config = engine.stream_config(stream)
            fields = [feature.name for feature in stream_config.features]
            batch = parse_body(
                body, content_type, fields, numeric_fields=numeric_fields(stream_config)
            )
            binned = engine.bin_batch(stream, batch.n_rows, batch.columns)
            reply: tuple[object, ...] = (
                "ok",
                batch.n_rows,
                batch.unknown_fields,
                binned.counts,
                binned.indices,
            )
        except UnsupportedMediaType as exc:
            reply = ("415", str(exc))
        except BodyError as exc:
            reply = ("400", str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the daemon, which redoes the job
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
