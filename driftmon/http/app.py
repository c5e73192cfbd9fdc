"""The aiohttp application and its listener, built from small interfaces.

The HTTP layer never sees the daemon: :func:`make_app` takes an ingest gate
(:class:`~driftmon.http.interfaces.IngestGate`, what ingest handlers call)
and :class:`~driftmon.http.interfaces.Views` (callables the other endpoints
read). Auth and the ingest request
counter are middleware, applied per route (:class:`Policy`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from driftmon.http import cloudevents, pages, rows, views
from driftmon.http.connections import ConnectionLimits, Connections, GuardedSite
from driftmon.http.interfaces import GATE_KEY, READING_KEY, VIEWS_KEY, IngestGate, Views
from driftmon.http.responses import (
    CLIENT_CLOSED,
    ReadingBodies,
    defer_continue,
    error,
    unauthorized,
)

__all__ = ["HttpListener", "Policy", "bearer_matches", "make_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("driftmon")

CLOSE_AFTER_GRACE_S = 1.0
"""After the shutdown grace, how long cancelled handlers get to unwind before stop() returns."""


@dataclass(frozen=True)
class Policy:
    """What the middleware does around one route."""

    auth: bool = False  # a configured bearer token is required
    counted: bool = False  # answers count in driftmon_ingest_requests_total
    enabled: Callable[[], str | None] | None = None  # the 404 message while it is off


_POLICIES_KEY: web.AppKey[dict[AbstractRoute, Policy]] = web.AppKey("policies", dict)


def bearer_matches(authorization: str | None, token: bytes | None) -> bool:
    """Whether an ``Authorization`` header passes (always, with no token configured).

    The scheme is matched case-insensitively (RFC 9110 §11.1: ``bearer`` is
    ``Bearer``); a header that is not valid UTF-8 simply does not match.
    """
    if token is None:
        return True
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # aiohttp decodes header bytes with surrogateescape: encode them back the same way,
    # so that undecodable bytes compare unequal instead of raising (a 500).
    offered = credentials.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(offered, token)


@web.middleware
async def _edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per route: off (404), then counted, then auth (401), then the handler."""
    route = request.match_info.route
    policy = request.app[_POLICIES_KEY].get(route)
    if policy is None:
        return await handler(request)
    if policy.enabled is not None:
        off = policy.enabled()
        if off is not None:
            return error(404, off)
    if not policy.counted:
        return await _authorized(request, handler, policy)
    gate = request.app[GATE_KEY]
    try:
        response = await _authorized(request, handler, policy)
    except web.HTTPException as exc:
        gate.count_request(exc.status)
        raise
    except Exception:
        # aiohttp answers 500 for it; the counter must see that answer too.
        gate.count_request(500)
        raise
    gate.count_request("client_closed" if response.status == CLIENT_CLOSED else response.status)
    return response


async def _authorized(request: web.Request, handler: Handler, policy: Policy) -> web.StreamResponse:
    if policy.auth and not request.app[VIEWS_KEY].authorized(request.headers.get("Authorization")):
        return unauthorized()
    return await handler(request)


def make_app(gate: IngestGate, views_: Views, body_timeout_s: float = 30.0) -> web.Application:
    """The aiohttp application over ``gate`` and ``views_``.

    ``body_timeout_s`` is ``server.body_timeout`` (see :class:`ReadingBodies`).
    """
    # The body limit is enforced by read_body (413 with a message); aiohttp's own
    # limit is set just above it so that it never answers first.
    app = web.Application(client_max_size=gate.max_body_bytes + 1, middlewares=[_edge])
    app[GATE_KEY] = gate
    app[VIEWS_KEY] = views_
    app[READING_KEY] = ReadingBodies(body_timeout_s)
    policies: dict[AbstractRoute, Policy] = {}
    ingest = Policy(auth=True, counted=True)

    def root_off() -> str | None:
        if gate.cloudevents_root():
            return None
        return (
            "POST / takes CloudEvents only with ingest.cloudevents.root: true; use /v1/cloudevents"
        )

    router = app.router
    # Ingest answers `Expect: 100-continue` only after the token, stream and size checks.
    deferred = {"expect_handler": defer_continue}
    rows_route = router.add_post("/v1/streams/{stream}/rows", rows.ingest_rows, **deferred)
    policies[rows_route] = ingest
    ce_route = router.add_post("/v1/cloudevents", cloudevents.ingest_cloudevents, **deferred)
    policies[ce_route] = ingest
    root = Policy(auth=True, counted=True, enabled=root_off)
    policies[router.add_post("/", cloudevents.ingest_cloudevents, **deferred)] = root
    router.add_get("/metrics", views.metrics)
    router.add_get("/-/healthy", views.healthy)
    router.add_get("/-/ready", views.ready)
    policies[router.add_post("/-/reload", views.reload)] = Policy(auth=True)
    router.add_get("/api/v1/monitors", views.monitors)
    router.add_get("/api/v1/monitors/{stream}/{feature}", views.monitor)
    router.add_get("/api/v1/monitors/{stream}/{feature}/history", views.monitor_history)
    router.add_get("/", pages.overview)
    router.add_get("/monitors/{stream}/{feature}", pages.monitor_html)
    router.add_get("/monitors", pages.monitor_by_query)
    app[_POLICIES_KEY] = policies
    return app


class HttpListener:
    """An application served on ``host:port`` (port 0: any free port), its connections
    bounded and timed by ``limits`` (:mod:`driftmon.http.connections`).

    :meth:`stop` stops accepting, gives requests in flight at most
    ``shutdown_grace_s`` (``server.shutdown_grace``), then cancels their
    handlers and closes every connection: a stalled upload or a scrape read
    slowly cannot hold a stop for longer (aiohttp's own default is 60 s, as
    long as the kill timeout of the shipped systemd unit and StatefulSet).
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        limits: ConnectionLimits | None = None,
        *,
        shutdown_grace_s: float = 5.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits or ConnectionLimits()
        self.connections: Connections | None = None
        self.shutdown_grace_s = shutdown_grace_s
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen; the URL served. Raises ``OSError`` when the address is not available."""
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.limits.keepalive_timeout_s,
            shutdown_timeout=self.shutdown_grace_s,
        )
        await runner.setup()
        self.connections = Connections(self.limits)
        site = GuardedSite(runner, self.host, self.port, self.connections)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        port = site.port
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{port}"

    def connection_figures(self) -> tuple[int, dict[str, int]]:
        """Connections open now, and those the guard closed since start by reason."""
        if self.connections is None:
            return 0, {}
        return len(self.connections.open), dict(self.connections.closed)

    async def stop(self) -> None:
        """Stop taking requests, let the ones in flight finish within the grace, then close."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # aiohttp waits up to the timeout for handlers, then again for the cancelled ones
        # to unwind: bound the whole of it, so that the grace is what a stop costs.
        try:
            await asyncio.wait_for(runner.cleanup(), self.shutdown_grace_s + CLOSE_AFTER_GRACE_S)
        except TimeoutError:
            log.warning(
                "requests still in flight after the %.1f s shutdown grace: connections closed",
                self.shutdown_grace_s,
            )
