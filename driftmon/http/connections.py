"""The listener's connections: timeouts, a bound on how many, and JSON for framing errors.

aiohttp's :class:`~aiohttp.web_protocol.RequestHandler` has an idle timer
(``keepalive_timeout``) but no timeout on reading a request's headers and no
bound on connections, so idle and half-header sockets once held every file
descriptor until ``/-/healthy`` stopped answering. :class:`GuardedHandler`
adds a header timer (from a connection's opening, and from the first byte
of each later request, to the end of the headers: 408 and close), and
:class:`Connections` keeps at most :attr:`Connections.limit` open: at the
bound the oldest idle connection is closed to make room, and with none
idle a new connection gets 503 and is closed. Body timeouts are the body
reader's (:func:`driftmon.http.responses.read_body`).

Framing errors (a bad request line or header, headers too long) answer
``{"error": ...}`` without echoing the raw bytes and log one debug line, not
a traceback anyone could flood the log with.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from driftmon.http.responses import UNSUPPORTED_CODING, error, framing_message

__all__ = ["ConnectionLimits", "Connections", "GuardedHandler", "GuardedSite", "fd_bounded"]

log = logging.getLogger("driftmon")

CLOSE_REASONS = ("header_timeout", "evicted", "refused")
"""Why the guard closed a connection early (``driftmon_http_connections_closed_total``)."""

FD_RESERVE = 100
"""File descriptors kept for everything but client connections (files, pipes, the store)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """``server.header_timeout``, ``keepalive_timeout`` and ``max_connections``."""

    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 30.0
    max_connections: int = 1000


def fd_bounded(max_connections: int) -> int:
    """``max_connections``, lowered to fit the open-file limit less :data:`FD_RESERVE`.

    The soft limit is first raised towards the hard one when it is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if raised > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (OSError, ValueError):
                pass
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - FD_RESERVE))


class Connections:
    """The open connections, oldest first (touched by the event loop's thread only)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.limit = fd_bounded(limits.max_connections)
        self.open: dict[GuardedHandler, None] = {}
        # Connections closed by the guard, by reason: header_timeout, evicted (idle, to make
        # room at the bound), refused (503 at the bound with none idle).
        # Every key from the start: a scrape may copy it from another thread.
        self.closed: Counter[str] = Counter(dict.fromkeys(CLOSE_REASONS, 0))

    def admit(self, handler: GuardedHandler) -> bool:
        """Whether ``handler``'s new connection may stay (closing an idle one if needed)."""
        if len(self.open) >= self.limit:
            idle = next((h for h in self.open if h.idle()), None)
            if idle is None:
                self.closed["refused"] += 1
                return False
            self.closed["evicted"] += 1
            self.open.pop(idle, None)
            idle.force_close()
        self.open[handler] = None
        return True

    def gone(self, handler: GuardedHandler) -> None:
        self.open.pop(handler, None)


def _raw_answer(status: int, reason: str, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a header timer, a connection bound and JSON errors."""

    def __init__(self, manager: web.Server, connections: Connections, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def idle(self) -> bool:
        """Waiting for a request (none in progress): closing it loses no request."""
        if self._request_count == 0:
            return True  # no request yet (also before its reading task first ran)
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._connections.admit(self):
            self._refused = True
            assert isinstance(transport, asyncio.Transport)
            message = f"too many connections (server.max_connections: {self._connections.limit})"
            transport.write(_raw_answer(503, "Service Unavailable", message))
            transport.close()
            return
        super().connection_made(transport)
        # Until the first request's headers end, the header timer runs, not the idle one.
        self.keep_alive(True)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connections.gone(self)
        self._disarm_header_timer()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if data and self._header_timer is None and self.idle():
            # The first byte of the next request: the idle timer stops, the header timer runs.
            self.keep_alive(True)
            self._arm_header_timer()
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self._loop.call_later(
            self._connections.limits.header_timeout_s, self._headers_late
        )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.idle() or self.transport is None:
            return
        timeout = self._connections.limits.header_timeout_s
        self._connections.closed["header_timeout"] += 1
        self.transport.write(
            _raw_answer(
                408,
                "Request Timeout",
                f"request headers not received within server.header_timeout ({timeout:g} s)",
            )
        )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse (or a handler's exception): JSON."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            text = "internal error"
        elif isinstance(exc, http_exceptions.ContentEncodingError):
            # aiohttp knows br and zstd but lacks their decoders here: as unsupported as any.
            status, text = 415, UNSUPPORTED_CODING
        else:
            text = framing_message(exc)
            log.debug("%s from %s: %s", text, request.remote, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        response = error(status, text)
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are :class:`GuardedHandler` ones."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, connections: Connections
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._connections = connections
        self._bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._bound_port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        factory = self._factory(server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory, self._host, self._port, reuse_address=True, backlog=128
        )
        sockets = self._server.sockets
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]

    def _factory(self, server: web.Server) -> Callable[[], RequestHandler]:
        connections = self._connections
        kwargs = dict(getattr(server, "_kwargs", {}))
        loop = asyncio.get_running_loop()

        def make() -> RequestHandler:
            return GuardedHandler(server, connections, loop=loop, **kwargs)

        return make

    @property
    def port(self) -> int:
        return self._bound_port
