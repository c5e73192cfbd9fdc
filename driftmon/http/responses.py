"""Answers every handler shares: JSON, ``{"error": ...}``, 401, 503, and bounded body reads."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import sys
import termios
import time

import orjson
from aiohttp import HttpVersion11, http_exceptions, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

__all__ = [
    "CLIENT_CLOSED",
    "UNSUPPORTED_CODING",
    "ReadingBodies",
    "error",
    "framing_message",
    "json_response",
    "read_body",
    "unauthorized",
    "unavailable",
]

log = logging.getLogger("driftmon")

CLIENT_CLOSED = 499
"""The status a handler returns when the client closed the connection before its body ended
(never sent: nobody is there to read it); counted as ``code="client_closed"``."""

CONTENT_CODINGS = frozenset({"", "identity", "gzip", "deflate"})
"""``Content-Encoding`` values a request body may have (aiohttp decodes gzip and deflate)."""

UNSUPPORTED_CODING = "unsupported Content-Encoding: send gzip, deflate or none"

RETRY_AFTER_S = 1
"""What a 503 asks the client to wait before trying again."""


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``payload`` as a JSON answer."""
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status=status, headers=headers)


def unavailable(message: str) -> web.Response:
    """A 503 with ``Retry-After``."""
    return error(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def unauthorized() -> web.Response:
    """A 401 naming the scheme expected."""
    return error(
        401,
        "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        headers={"WWW-Authenticate": 'Bearer realm="driftmon"'},
    )


RATE_WINDOW_S = 1.0
"""How long a body's arrival rate is measured over."""

MIN_BODY_RATE = 16 * 1024
"""Bytes per second below which a body trickling in loses its room when others need it."""


class BodyEvicted(Exception):
    """A stalled body lost its room in the read bound to a body that progresses."""


class _Body:
    """One body being read: its bytes so far, when it last made progress, and how fast
    it arrived over the last second or so."""

    __slots__ = (
        "content",
        "last_progress",
        "released",
        "size",
        "sock",
        "window_bytes",
        "window_rate",
        "window_start",
    )

    def __init__(self, content: object, sock: socket.socket | None, now: float) -> None:
        self.content = content
        self.sock = sock
        self.size = 0
        self.last_progress = now
        self.released = False
        self.window_start = now
        self.window_bytes = 0
        self.window_rate: float | None = None  # bytes/s over the last full window

    def grew(self, size: int, now: float) -> None:
        self.size += size
        self.last_progress = now
        if now - self.window_start >= RATE_WINDOW_S:
            self.window_rate = self.window_bytes / (now - self.window_start)
            self.window_start, self.window_bytes = now, 0
        self.window_bytes += size

    def rate(self, now: float) -> float | None:
        """Bytes per second lately; ``None`` for a body younger than one window."""
        elapsed = now - self.window_start
        if elapsed >= RATE_WINDOW_S:
            return self.window_bytes / elapsed
        return self.window_rate

    def has_unread_bytes(self) -> bool:
        """Whether bytes of it wait to be read here (in the kernel or aiohttp's buffer):
        then it is the daemon that is behind (a busy event loop), not the client."""
        if getattr(self.content, "_size", 0):
            return True
        if self.sock is None:
            return False
        try:
            waiting = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return False
        return int.from_bytes(waiting, sys.byteorder) > 0


class ReadingBodies:
    """Request bodies being read right now and their bytes (the event loop's thread only).

    ``timeout_s`` is ``server.body_timeout``: a body that makes no progress for that
    long gets 408. When the bytes held reach the read bound, bodies stalled for
    :attr:`stall_s` or more, then bodies trickling in slower than
    :data:`MIN_BODY_RATE`, lose their room (408, connection closed) before a body
    that progresses is refused: a few stalled or trickling senders cannot lock
    everyone out.
    """

    def __init__(self, timeout_s: float = 30.0) -> None:
        self.bytes = 0
        self.timeout_s = timeout_s
        self._bodies: dict[_Body, None] = {}
        self.evicted = 0

    @property
    def stall_s(self) -> float:
        """How long a body must have made no progress to lose its room to another."""
        return min(1.0, self.timeout_s)

    def begin(self, content: object, sock: socket.socket | None = None) -> _Body:
        body = _Body(content, sock, time.monotonic())
        self._bodies[body] = None
        return body

    def grow(self, body: _Body, size: int) -> None:
        body.grew(size, time.monotonic())
        if not body.released:
            self.bytes += size

    def end(self, body: _Body) -> None:
        self._bodies.pop(body, None)
        self._release(body)

    def _release(self, body: _Body) -> None:
        if not body.released:
            body.released = True
            self.bytes -= body.size

    def make_room(self, bound: int, keep: _Body) -> None:
        """Free the room of other bodies until the bytes held are within ``bound``: first
        those stalled for :attr:`stall_s`, most stalled first, then those trickling in
        slower than :data:`MIN_BODY_RATE` (bytes per second), slowest first. A body
        whose bytes wait unread here is spared (then the daemon is behind, not the client).
        """
        now = time.monotonic()
        others = [b for b in self._bodies if b is not keep and not b.released]
        stalled = sorted(
            (b for b in others if now - b.last_progress >= self.stall_s),
            key=lambda b: b.last_progress,
        )
        slow_rates: dict[_Body, float] = {}
        for body in others:
            if now - body.last_progress < self.stall_s:
                rate = body.rate(now)
                if rate is not None and rate < MIN_BODY_RATE:
                    slow_rates[body] = rate
        slow = sorted(slow_rates, key=slow_rates.__getitem__)
        for body in (*stalled, *slow):
            if self.bytes <= bound:
                break
            if body.has_unread_bytes():
                continue
            self._release(body)
            self.evicted += 1
            set_exception = getattr(body.content, "set_exception", None)
            if set_exception is not None:
                set_exception(BodyEvicted())


async def _expect_continue(request: web.Request) -> None:
    """Send ``100 Continue`` when the client waits for it (after every check passed)."""
    expect = request.headers.get("Expect", "")
    if request.version >= HttpVersion11 and expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started


async def defer_continue(request: web.Request) -> web.StreamResponse | None:
    """A route's expect handler that sends nothing yet: :func:`read_body` answers
    ``100-continue`` once the token, the stream and the size passed."""
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        return error(417, f"unsupported Expect: {expect[:100]!r}; only 100-continue is")
    return None


async def drop(request: web.Request, status: int, message: str) -> web.Response:
    """Answer ``status`` now and close the connection (the rest of the body is not read)."""
    response = error(status, message)
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass
    request.protocol.force_close()
    return response


def client_closed(request: web.Request, size: int) -> web.Response:
    """What a handler returns when the client went away before its body ended (one log line)."""
    declared = request.content_length
    of = "" if declared is None else f", Content-Length {declared}"
    log.info(
        "client %s closed the connection before its body ended (%s %s: %d bytes read%s)",
        request.remote,
        request.method,
        request.path,
        size,
        of,
    )
    return web.Response(status=CLIENT_CLOSED)


async def read_body(
    request: web.Request, reading: ReadingBodies, limit: int, bound: int
) -> bytes | web.Response:
    """The request body; or 415 for an unsupported ``Content-Encoding``, 413 over ``limit``
    bytes, 503 while the bodies being read hold ``bound`` bytes already, 408 for a body
    that stalls (or lost its room to others), 400 for a body that does not decode, or
    :data:`CLIENT_CLOSED` when the client went away.

    ``Expect: 100-continue`` is answered here, after the checks before the body.
    """
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in CONTENT_CODINGS:
        return error(415, f"{UNSUPPORTED_CODING}, not {coding[:50]!r}")
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"body of {request.content_length} bytes is over the limit of {limit}")
    await _expect_continue(request)
    chunks: list[bytes] = []
    sock = request.transport.get_extra_info("socket") if request.transport else None
    body = reading.begin(request.content, sock)
    try:
        # Counted as it arrives: each connection of a flood used to buffer its whole body
        # before any bound was checked, so memory grew with the number of senders.
        while True:
            try:
                async with asyncio.timeout(reading.timeout_s):
                    chunk = await request.content.readany()
            except TimeoutError:
                return await drop(
                    request,
                    408,
                    f"request body made no progress for {reading.timeout_s:g} s "
                    "(server.body_timeout)",
                )
            except BodyEvicted:
                return await drop(
                    request,
                    408,
                    "request body stalled or trickled in while other bodies waited for room; retry",
                )
            except ConnectionError:
                return client_closed(request, body.size)
            except (HttpProcessingError, RequestPayloadError) as exc:
                if request.transport is None or request.transport.is_closing():
                    return client_closed(request, body.size)
                return await drop(request, 400, framing_message(exc.__cause__ or exc))
            if not chunk:
                break
            reading.grow(body, len(chunk))
            if body.size > limit:
                # Also without a Content-Length (chunked), and by a single byte.
                return error(413, f"body is over the limit of {limit} bytes")
            if reading.bytes > bound and reading.bytes > body.size:
                reading.make_room(bound, body)
                if reading.bytes > bound:
                    return unavailable(
                        "ingest queue full: too many request bodies being read; retry later"
                    )
            chunks.append(chunk)
    finally:
        reading.end(body)
    return b"".join(chunks)


_FRAMING_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "request line or header too long"),
    (http_exceptions.BadHttpMethod, "malformed request method"),
    (http_exceptions.BadStatusLine, "malformed request line"),
    (http_exceptions.InvalidURLError, "malformed request target"),
    (http_exceptions.InvalidHeader, "malformed header"),
    (http_exceptions.TransferEncodingError, "malformed chunked body"),
    (http_exceptions.ContentLengthError, "body shorter than its Content-Length"),
    (http_exceptions.ContentEncodingError, "body does not decode as its Content-Encoding"),
)


def framing_message(exc: BaseException | None) -> str:
    """What is wrong with a request aiohttp could not parse (never its raw bytes)."""
    for kind, message in _FRAMING_ERRORS:
        if isinstance(exc, kind):
            return f"malformed HTTP request: {message}"
    return "malformed HTTP request"
