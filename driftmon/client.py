"""A non-blocking Python client for driftmon's ingest API (docs/client.md).

:meth:`Client.log` copies a row into an in-memory buffer and returns;
a background daemon thread batches the buffered rows and posts them as
columnar JSON over one kept-alive connection (:mod:`http.client`; wire
format in :mod:`driftmon.client_wire`). :meth:`Client.log_frame` sends a
pandas DataFrame or Arrow table, as Arrow IPC when pyarrow is installed
(:mod:`driftmon.frames`). When a batch is sent, what is retried, what is
dropped and how losses are counted: docs/client.md. The client is
thread-safe and fork-aware.
"""

from __future__ import annotations

import atexit
import enum
import http.client
import itertools
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftmon.client_wire import (
    MAX_RETRY_AFTER_S,
    Target,
    check_positive,
    encode_rows,
    error_text,
    ingest_target,
    retry_after_s,
)
from driftmon.frames import FrameRow, arrow_body_or_none, as_dicts, frame_rows

__all__ = [
    "MAX_RETRY_AFTER_S",
    "Client",
    "ClientStats",
    "encode_rows",
    "retry_after_s",
]

log = logging.getLogger("driftmon.client")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP answers after which a batch is sent again; every other non-2xx answer is final."""

INITIAL_BACKOFF_S = 0.1
"""The first wait after a failed attempt; it doubles with each failure in a row."""

ATEXIT_CLOSE_TIMEOUT_S = 5.0
"""How long the interpreter's exit waits for a client's buffered rows to be acknowledged."""

LOSS_WARNING_INTERVAL_S = 10.0
"""The least time between two warnings about dropped or refused rows (per client)."""

LOG_MANY_TIMEOUT_S = 10.0
"""How long :meth:`Client.log_many` waits for room in the buffer by default."""

@dataclass(frozen=True)
class ClientStats:
    """A consistent snapshot of a :class:`Client`'s counters (all counts are rows or requests).

    ``rows_logged``: rows given to ``log``/``log_many`` (after ``close`` too).
    ``rows_sent``: rows posted at least once (each row counted once, however
    often it was retried).
    ``rows_accepted``: rows in requests the daemon answered with a 2xx.
    ``rows_dropped``: rows discarded by the client: the oldest rows past
    ``max_buffer_rows``, rows still buffered when ``close`` gave up, rows
    logged after ``close``.
    ``rows_rejected``: rows in requests the daemon refused for good (400,
    401, 404, 413, ...), or that could not be encoded as JSON at all.
    ``requests``: HTTP requests attempted, failed connections included.
    ``retries``: attempts that repeated a failed one (``retried``).
    ``last_error``: the latest failure, e.g. ``"HTTP 404: unknown stream 'x'"``
    or ``"ConnectionRefusedError: [Errno 111] Connection refused"``;
    ``None`` until something fails (it is not cleared by a later success).
    """

    rows_logged: int
    rows_sent: int
    rows_accepted: int
    rows_dropped: int
    rows_rejected: int
    requests: int
    retries: int
    last_error: str | None

    @property
    def rows_pending(self) -> int:
        """Rows logged but not yet accepted, dropped or rejected (buffered or on the wire)."""
        return self.rows_logged - self.rows_accepted - self.rows_dropped - self.rows_rejected

    @property
    def rows_lost(self) -> int:
        """Rows that will never reach the daemon: dropped plus rejected."""
        return self.rows_dropped + self.rows_rejected


class _Verdict(enum.Enum):
    SENT = "sent"
    REJECTED = "rejected"
    RETRY = "retry"


@dataclass(frozen=True)
class _Outcome:
    verdict: _Verdict
    error: str | None = None
    retry_after_s: float | None = None
    unreachable: bool = False  # no HTTP answer at all (as opposed to a 503 or 429)


def _unreachable(exc: BaseException) -> _Outcome:
    """A retry after a failure that got no HTTP answer at all."""
    return _Outcome(_Verdict.RETRY, error=f"{type(exc).__name__}: {exc}", unreachable=True)


# --- the client ---------------------------------------------------------------------

_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client:
    """Buffers rows for one driftmon stream and posts them from a background thread.

    ``url`` is the daemon's base URL (``http://127.0.0.1:9108``, or a path
    prefix behind a proxy such as ``https://mon.example.com/driftmon``);
    ``stream`` a stream of its config; ``token`` the bearer token when the
    daemon sets ``server.auth_token_file``. ``batch_rows`` is the most rows
    per request, ``flush_every`` (seconds) the longest a row waits for a
    batch to fill, ``max_buffer_rows`` the most rows held (while the daemon
    is away, older ones are dropped first). ``request_timeout`` (seconds) bounds one HTTP request;
    ``max_backoff`` (seconds) caps the wait between retries (a
    ``Retry-After`` may ask for longer).

    Use it as a context manager, or call :meth:`close`; a client still open
    when the interpreter exits is closed by ``atexit`` (waiting up to
    :data:`ATEXIT_CLOSE_TIMEOUT_S`). Raises ``ValueError`` naming the
    argument for a bad URL, stream name or setting.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        token: str | None = None,
        batch_rows: int = 1000,
        flush_every: float = 1.0,
        max_buffer_rows: int = 100_000,
        request_timeout: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        target = ingest_target(url, stream)
        if token is not None and (
            not isinstance(token, str) or not token.strip() or not token.strip().isprintable()
        ):
            raise ValueError("token: expected a non-empty string of printable characters, or None")
        check_positive("batch_rows", batch_rows, integer=True)
        check_positive("flush_every", flush_every, integer=False)
        check_positive("max_buffer_rows", max_buffer_rows, integer=True)
        check_positive("request_timeout", request_timeout, integer=False)
        check_positive("max_backoff", max_backoff, integer=False)
        self.stream = stream
        self.batch_rows = batch_rows
        self.flush_every = float(flush_every)
        self.max_buffer_rows = max_buffer_rows
        self.request_timeout = float(request_timeout)
        self.max_backoff = float(max_backoff)
        from driftmon import __version__

        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"driftmon-client/{__version__}",
        }
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.strip()}"
        self._target = target
        self._init_state()
        _clients.add(self)
        atexit.register(self._close_at_exit)

    def _init_state(self) -> None:
        """Fresh lock, buffer, counters and sender thread (at start and in a forked child)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the sender waits here
        self._settled = threading.Condition(self._lock)  # flush() waits here
        self._room = threading.Condition(self._lock)  # log_many() waits here for buffer room
        # Every unsettled row, oldest first, the batch on the wire included: rows are
        # numbered in log order and the buffer always holds rows [_head_seq, _end_seq).
        # Rows logged after close() are counted but never numbered.
        self._buffer: deque[dict[Any, Any] | FrameRow] = deque()
        self._head_seq = 0
        self._end_seq = 0
        self._logged = 0
        self._sent = 0
        self._accepted = 0
        self._dropped = 0
        self._rejected = 0
        self._requests = 0
        self._retries = 0
        self._last_error: str | None = None
        self._failing = False  # the latest attempt failed and will be retried
        # Losses not yet in a warning, and when the next warning may be logged.
        self._unwarned_dropped = 0
        self._unwarned_rejected = 0
        self._next_loss_warning = 0.0
        self._next_seq_to_send = 0  # rows below this number were posted at least once
        # The batch on the wire: its first row's number, how many of its rows are still
        # at the buffer's front, and how many of them overflow pushed out meanwhile
        # (settled once the answer tells whether they were sent or must be dropped).
        self._wire_seq: int | None = None
        self._wire_rows = 0
        self._wire_evicted = 0
        self._flush_to = 0  # send partial batches until every row below this is settled
        self._flush_waiters = 0
        self._target_changed = False
        self._stopping = False
        self._closed = False
        self._connection: http.client.HTTPConnection | None = None
        self._connection_target: Target | None = None
        # Started by the first row: a client that logs nothing costs no thread, and a
        # forked child starts its own only when it logs (never between fork and exec).
        self._thread = threading.Thread(
            target=self._run, name=f"driftmon-client-{self.stream}", daemon=True
        )
        self._thread_started = False

    # --- the caller's side ------------------------------------------------------------

    def log(self, row: Mapping[Any, Any]) -> None:
        """Buffer one row (feature name -> value) and return at once.

        The row is copied, so changing it afterwards changes nothing sent.
        Never blocks on the network and never raises for the daemon's state;
        after :meth:`close` the row is counted as dropped. Raises
        ``TypeError`` when ``row`` is not a mapping.
        """
        if type(row) is dict:
            record = row.copy()
        elif isinstance(row, Mapping):
            record = dict(row)
        else:
            raise TypeError(f"row: expected a mapping of feature name to value, got {row!r:.80}")
        with self._lock:
            self._logged += 1
            if self._closed:
                self._count_dropped(1)
            else:
                self._end_seq += 1
                buffer = self._buffer
                buffer.append(record)
                held = len(buffer)
                if held > self.max_buffer_rows:
                    self._evict(held - self.max_buffer_rows)
                elif held == 1 or held == self.batch_rows:
                    self._wake_sender()
        if self._unwarned_dropped:
            self._warn_losses()

    def log_many(
        self, rows: Iterable[Mapping[Any, Any]], *, timeout: float | None = LOG_MANY_TIMEOUT_S
    ) -> None:
        """Buffer several rows at once; see :meth:`log`.

        When they do not all fit in the buffer (``max_buffer_rows``), the
        call feeds them in as the sender makes room, waiting up to
        ``timeout`` seconds (``None``: no limit) while the daemon answers.
        Rows are only dropped (oldest first, counted and warned about, as in
        :meth:`log`) when the daemon is unreachable or the timeout passed,
        so a large call to a healthy daemon loses nothing. Raises
        ``TypeError`` (and buffers none of them) when one is not a mapping.
        """
        records = []
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"rows[{index}]: expected a mapping of feature name to value, got {row!r:.80}"
                )
            records.append(dict(row))
        self._enqueue(records, timeout)

    def _enqueue(
        self, records: Sequence[dict[Any, Any] | FrameRow], timeout: float | None
    ) -> None:
        """Buffer ``records`` (already copied) in order, waiting for room as :meth:`log_many` says.

        The one way rows of a multi-row call enter the buffer.
        """
        if not records:
            return
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        start = 0
        with self._lock:
            self._logged += len(records)
            while start < len(records):
                if self._closed:
                    self._count_dropped(len(records) - start)
                    break
                room = self.max_buffer_rows - len(self._buffer)
                remaining = None if deadline is None else deadline - time.monotonic()
                give_up = self._failing or (remaining is not None and remaining <= 0)
                if room >= len(records) - start or give_up:
                    chunk = records[start:]
                elif room > 0:
                    chunk = records[start : start + room]
                else:
                    chunk = []
                if chunk:
                    start += len(chunk)
                    self._end_seq += len(chunk)
                    self._buffer.extend(chunk)
                    held = len(self._buffer)
                    if held > self.max_buffer_rows:
                        self._evict(held - self.max_buffer_rows)
                    self._wake_sender()
                if start < len(records):
                    # Full: wait for the sender to settle a batch (or to start failing).
                    self._room.wait(1.0 if remaining is None else min(remaining, 1.0))
        if self._unwarned_dropped:
            self._warn_losses()

    def log_frame(self, frame: object, *, timeout: float | None = LOG_MANY_TIMEOUT_S) -> None:
        """Buffer every row of a pandas ``DataFrame`` or a pyarrow ``Table``/``RecordBatch``.

        The rows are buffered, evicted, retried and counted one by one as
        :meth:`log`'s, and wait for room as :meth:`log_many`'s do; a batch of
        frame rows of one schema is sent as an Arrow IPC stream (no per-value
        encoding), any other batch as columnar JSON. Without pyarrow a pandas
        frame is logged as row dictionaries. The table is kept by reference:
        do not change it in place afterwards. Raises ``TypeError`` for any
        other object.
        """
        self._enqueue(frame_rows(frame), timeout)

    def _wake_sender(self) -> None:
        """Tell the sender thread rows wait, starting it for the first row (lock held)."""
        if self._thread_started:
            self._wake.notify()
        else:
            self._thread_started = True
            self._thread.start()

    def _evict(self, count: int) -> None:
        """Drop the ``count`` oldest buffered rows (lock held)."""
        buffer = self._buffer
        for _ in range(count):
            buffer.popleft()
            if self._wire_rows:
                # A row on the wire: whether it is lost depends on the answer.
                self._wire_rows -= 1
                self._wire_evicted += 1
            else:
                self._count_dropped(1)
        self._head_seq += count
        if self._flush_waiters:
            self._settled.notify_all()

    def _count_dropped(self, count: int) -> None:
        """Count ``count`` rows as dropped, to be warned about (lock held)."""
        self._dropped += count
        self._unwarned_dropped += count

    def _count_rejected(self, count: int) -> None:
        """Count ``count`` rows as refused by the daemon, to be warned about (lock held)."""
        self._rejected += count
        self._unwarned_rejected += count

    def _warn_losses(self, *, force: bool = False) -> None:
        """Log one warning for the rows lost since the previous one (lock NOT held).

        At most one every :data:`LOSS_WARNING_INTERVAL_S` seconds unless
        ``force`` (at close, so no loss goes unreported).
        """
        with self._lock:
            dropped, rejected = self._unwarned_dropped, self._unwarned_rejected
            now = time.monotonic()
            if not (dropped or rejected) or (not force and now < self._next_loss_warning):
                return
            self._next_loss_warning = now + LOSS_WARNING_INTERVAL_S
            self._unwarned_dropped = self._unwarned_rejected = 0
            total_dropped, total_rejected = self._dropped, self._rejected
            last_error = self._last_error
        lost = []
        if dropped:
            lost.append(
                f"dropped {dropped} rows (buffer full at max_buffer_rows={self.max_buffer_rows}"
                " while the daemon was unreachable, or logged after close)"
            )
        if rejected:
            lost.append(f"the daemon refused {rejected} rows for good (last: {last_error})")
        log.warning(
            "driftmon client for stream %r %s; %d dropped and %d refused since it started "
            "(see client.stats)",
            self.stream,
            "; ".join(lost),
            total_dropped,
            total_rejected,
        )

    @property
    def stats(self) -> ClientStats:
        """A consistent snapshot of the counters (see :class:`ClientStats`)."""
        with self._lock:
            return ClientStats(
                rows_logged=self._logged,
                rows_sent=self._sent,
                rows_accepted=self._accepted,
                rows_dropped=self._dropped,
                rows_rejected=self._rejected,
                requests=self._requests,
                retries=self._retries,
                last_error=self._last_error,
            )

    @property
    def url(self) -> str:
        """The daemon's base URL. Setting it sends the next attempt there at once.

        For a daemon that moved (service discovery, a restart on another
        port); rows already buffered go to the new URL. Raises ``ValueError``
        for a bad URL, keeping the old one.
        """
        with self._lock:
            return self._target.url

    @url.setter
    def url(self, value: str) -> None:
        target = ingest_target(value, self.stream)
        with self._lock:
            self._target = target
            self._target_changed = True
            self._wake.notify()

    def _settled_below(self, seq: int) -> bool:
        """Whether every row numbered below ``seq`` is sent, dropped or rejected (lock held)."""
        oldest = self._head_seq if self._wire_seq is None else self._wire_seq
        return oldest >= seq

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is buffered now and wait until every row logged before the call is settled.

        Settled means accepted by the daemon (``rows_accepted``), or given
        up on: rejected by it or dropped (see ``stats``). Returns ``True``
        when every row logged so far was accepted; ``False`` when
        ``timeout`` seconds (``None``: no limit) pass first, or when any row
        logged so far was dropped or rejected (``stats`` says how many; once
        a row is lost, every later flush returns ``False``). Rows logged
        during the call are not waited for.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            target = self._end_seq
            if self._settled_below(target):
                return self._dropped == 0 and self._rejected == 0
            self._flush_to = max(self._flush_to, target)
            self._wake.notify()
            self._flush_waiters += 1
            try:
                while not self._settled_below(target):
                    if not self._thread.is_alive():
                        return False
                    if deadline is None:
                        # Wake now and then to notice a sender thread that has ended.
                        self._settled.wait(1.0)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._settled.wait(remaining)
                return self._dropped == 0 and self._rejected == 0
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, then stop the sender thread; return within ``timeout`` seconds.

        ``timeout`` bounds the whole call (``None``: no limit), whatever the
        daemon does. Rows still unsent then are counted as dropped (a batch
        still on the wire is settled by its answer, or dropped when the
        sender thread ends); rows logged after ``close`` are dropped too.
        Returns what :meth:`flush` returns: ``True`` when every row logged
        was accepted. Idempotent.
        """
        atexit.unregister(self._close_at_exit)
        with self._lock:
            closed = self._closed
        if closed:
            return self._all_accepted()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._stopping = True
            if self._wire_seq is None:
                # Nothing on the wire (e.g. waiting out a backoff): settle the rest now
                # rather than when the thread gets to it, which may be after we return.
                self._drop_leftovers()
            self._wake.notify()
            self._room.notify_all()
        if self._thread_started and self._thread is not threading.current_thread():
            # A request on the wire finishes (or times out) before the thread ends; the
            # caller's timeout wins over the request's.
            if deadline is None:
                self._thread.join(self.request_timeout + 1.0)
            else:
                self._thread.join(max(0.0, deadline - time.monotonic()))
        self._warn_losses(force=True)
        return flushed and self._all_accepted()

    def _all_accepted(self) -> bool:
        with self._lock:
            return self._logged == self._accepted

    def _close_at_exit(self) -> None:
        self.close(ATEXIT_CLOSE_TIMEOUT_S)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self._target.url!r}, stream={self.stream!r})"

    # --- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        """The sender thread: send until close, then report what it had to drop."""
        self._send_until_stopped()
        self._warn_losses(force=True)

    def _send_until_stopped(self) -> None:
        """Wait for a batch, post it, settle its rows; until close."""
        failures = 0
        pending_since: float | None = None
        while True:
            with self._lock:
                batch: list[dict[Any, Any] | FrameRow] | None = None
                while batch is None:
                    if self._stopping:
                        self._drop_leftovers()
                        return
                    held = len(self._buffer)
                    now = time.monotonic()
                    if held == 0:
                        pending_since = None
                        self._wake.wait()
                        continue
                    if pending_since is None:
                        pending_since = now
                    due = pending_since + self.flush_every
                    if held >= self.batch_rows or self._flush_to > self._head_seq or now >= due:
                        count = min(held, self.batch_rows)
                        batch = list(itertools.islice(self._buffer, count))
                        self._wire_seq = self._head_seq
                        self._wire_rows = count
                        fresh = self._head_seq + count - max(self._next_seq_to_send, self._head_seq)
                        self._sent += max(0, fresh)
                        self._next_seq_to_send = max(self._next_seq_to_send, self._head_seq + count)
                        self._wire_evicted = 0
                        target = self._target
                        self._target_changed = False
                    else:
                        self._wake.wait(due - now)
            try:
                outcome = self._attempt(target, batch)
            except Exception as exc:  # a bug must not end the thread and strand the buffer
                log.exception("driftmon client: sending a batch failed")
                outcome = _Outcome(_Verdict.REJECTED, error=f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._requests += 1
                if failures:
                    self._retries += 1
                if outcome.verdict is _Verdict.RETRY:
                    # The batch stays at the buffer's front for the next attempt, less
                    # the rows overflow pushed out while it was on the wire.
                    self._count_dropped(self._wire_evicted)
                    self._failing = outcome.unreachable
                else:
                    settled = self._wire_rows + self._wire_evicted
                    if outcome.verdict is _Verdict.SENT:
                        self._accepted += settled
                    else:
                        self._count_rejected(settled)
                    for _ in range(self._wire_rows):
                        self._buffer.popleft()
                    self._head_seq += self._wire_rows
                    self._failing = False
                self._room.notify_all()
                self._wire_seq = None
                self._wire_rows = self._wire_evicted = 0
                if outcome.error is not None:
                    self._last_error = outcome.error
                # A flush that sees these rows lost returns after their warning is out.
                lost = bool(self._unwarned_dropped or self._unwarned_rejected)
                if self._flush_waiters and not lost:
                    self._settled.notify_all()
                if outcome.verdict is _Verdict.RETRY:
                    pending_since = -math.inf  # due as soon as the backoff ends
                else:
                    pending_since = time.monotonic() if self._buffer else None
            if lost:
                self._warn_losses()
                with self._lock:
                    if self._flush_waiters:
                        self._settled.notify_all()
            if outcome.verdict is _Verdict.RETRY:
                failures += 1
                if failures == 1:
                    log.warning("driftmon unreachable, will retry: %s", outcome.error)
                self._back_off(failures, outcome.retry_after_s)
            else:
                if failures:
                    log.info("driftmon reachable again after %d failed attempts", failures)
                failures = 0

    def _back_off(self, failures: int, retry_after: float | None) -> None:
        """Wait before the next attempt: capped exponential backoff with jitter.

        Half the wait is fixed and half random ("equal jitter"), so clients
        that failed together spread out yet never hammer; never shorter than
        ``retry_after``. A close or a new URL cuts the wait short.
        """
        ceiling = min(self.max_backoff, INITIAL_BACKOFF_S * 2.0 ** min(failures - 1, 62))
        delay = ceiling / 2 + random.uniform(0.0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        deadline = time.monotonic() + delay
        with self._lock:
            while not (self._stopping or self._target_changed):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._wake.wait(remaining)

    def _drop_leftovers(self) -> None:
        """At close: count what is still buffered as dropped (lock held, nothing on the wire)."""
        left = len(self._buffer)
        self._buffer.clear()
        self._head_seq += left
        self._count_dropped(left)
        if self._flush_waiters:
            self._settled.notify_all()
        self._room.notify_all()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _attempt(self, target: Target, batch: list[dict[Any, Any] | FrameRow]) -> _Outcome:
        """Encode and post one batch; what its answer means for the rows."""
        content_type = "application/json"
        try:
            body = arrow_body_or_none(batch)
            if body is None:
                body = encode_rows(as_dicts(batch))
            else:
                content_type = "application/vnd.apache.arrow.stream"
        except ValueError as exc:
            return _Outcome(_Verdict.REJECTED, error=str(exc))
        if self._connection is not None and self._connection_target is not target:
            self._connection.close()
            self._connection = None
        reused = self._connection is not None
        try:
            status, reason, retry_after, payload = self._post(target, body, content_type)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            if not reused:
                return _unreachable(exc)
            # Most likely the daemon closed an idle kept-alive connection before reading
            # the request: try once more at once on a fresh connection.
            try:
                status, reason, retry_after, payload = self._post(target, body, content_type)
            except (OSError, http.client.HTTPException) as again:
                return _unreachable(again)
        except (OSError, http.client.HTTPException) as exc:
            return _unreachable(exc)
        if 200 <= status < 300:
            return _Outcome(_Verdict.SENT)
        error = error_text(status, reason, payload)
        if status in RETRYABLE_STATUSES:
            return _Outcome(_Verdict.RETRY, error=error, retry_after_s=retry_after_s(retry_after))
        return _Outcome(_Verdict.REJECTED, error=error)

    def _post(
        self, target: Target, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, str, str | None, bytes]:
        """One POST on the kept-alive connection (opened if needed); closes it on failure.

        Returns the status, reason, ``Retry-After`` header and body of the answer.
        """
        connection = self._connection
        if connection is None:
            connection_class = (
                http.client.HTTPSConnection if target.https else http.client.HTTPConnection
            )
            connection = connection_class(target.host, target.port, timeout=self.request_timeout)
            self._connection = connection
            self._connection_target = target
        try:
            headers = self._headers
            if content_type != headers["Content-Type"]:
                headers = {**headers, "Content-Type": content_type}
            connection.request("POST", target.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except BaseException:
            connection.close()
            self._connection = None
            raise
        if response.will_close:
            connection.close()
            self._connection = None
        return response.status, response.reason, response.getheader("Retry-After"), payload

    def _after_fork_in_child(self) -> None:
        """In a forked child: start over empty (the parent sends what it had buffered)."""
        closed = self._closed
        self._init_state()
        self._closed = self._stopping = closed


def _reinit_after_fork() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
