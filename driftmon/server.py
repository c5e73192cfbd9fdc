"""The HTTP API (docs/http-api.md): one aiohttp application over a :class:`~driftmon.daemon.Daemon`.

Handlers translate between HTTP and the daemon and nothing else: status
codes, error bodies (``{"error": "..."}`` naming the line, position or
field), auth, and the ingest request counter.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from driftmon.daemon import Daemon, NotReady, QueueFull
from driftmon.engine import ALL_METRICS, UnknownStreamError
from driftmon.exporter import exposition
from driftmon.parse import BodyError, UnsupportedMediaType

DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("daemon", Daemon)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


def _unavailable(message: str) -> web.Response:
    return _error(503, message, headers={"Retry-After": "1"})


def _unauthorized() -> web.Response:
    return _error(
        401,
        "missing or wrong bearer token (Authorization: Bearer TOKEN)",
        headers={"WWW-Authenticate": 'Bearer realm="driftmon"'},
    )


def _counted(handler: Handler) -> Handler:
    """Count every answer of an ingest handler in ``driftmon_ingest_requests_total``."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        daemon = request.app[DAEMON_KEY]
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            daemon.count_request(exc.status)
            raise
        except Exception:
            # aiohttp answers 500 for it; the counter must see that answer too.
            daemon.count_request(500)
            raise
        daemon.count_request(response.status)
        return response

    return wrapper


class ReadingBodies:
    """Bytes of request bodies being read right now (touched by the event loop's thread only)."""

    def __init__(self) -> None:
        self.bytes = 0


READING_KEY: web.AppKey[ReadingBodies] = web.AppKey("reading", ReadingBodies)


def reading_bound_bytes(daemon: Daemon) -> int:
    """Most bytes of bodies read at once: ``max(64 MiB, 4 × server.max_body_bytes)``.

    The same bound as :meth:`Daemon.run_job`'s on bodies waiting for a worker:
    together they cap what a flood of senders, however many, makes the
    daemon hold in request bodies.
    """
    return max(64 * 1024 * 1024, 4 * daemon.config.server.max_body_bytes)


async def read_body(request: web.Request, daemon: Daemon) -> bytes | web.Response:
    """The request body; or the 413 answer over ``server.max_body_bytes``; or a 503 when the
    bodies being read hold :func:`reading_bound_bytes` already (the rest is left unread)."""
    limit = daemon.config.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"body of {request.content_length} bytes is over the limit of {limit}")
    reading = request.app[READING_KEY]
    bound = reading_bound_bytes(daemon)
    chunks: list[bytes] = []
    size = 0
    try:
        # Counted as it arrives: each connection of a flood used to buffer its whole body
        # before any bound was checked, so memory grew with the number of senders. Bytes
        # received, not the declared length, so that a few slow senders lock no one out.
        async for chunk in request.content.iter_any():
            size += len(chunk)
            reading.bytes += len(chunk)
            if size > limit:
                # Also without a Content-Length (chunked), and by a single byte.
                return _error(413, f"body is over the limit of {limit} bytes")
            if reading.bytes > bound and reading.bytes > size:
                return _unavailable(
                    "ingest queue full: too many request bodies being read; retry later"
                )
            chunks.append(chunk)
    finally:
        reading.bytes -= size
    return b"".join(chunks)


@_counted
async def ingest_rows(request: web.Request) -> web.StreamResponse:
    """``POST /v1/streams/{stream}/rows``."""
    daemon = request.app[DAEMON_KEY]
    if not daemon.check_token(request.headers.get("Authorization")):
        return _unauthorized()
    stream = request.match_info["stream"]
    if not daemon.has_stream(stream):
        return _error(404, f"unknown stream {stream!r}")
    body = await read_body(request, daemon)
    if isinstance(body, web.Response):
        return body
    try:
        result = await daemon.ingest(stream, body, request.headers.get("Content-Type"))
    except UnsupportedMediaType as exc:
        return _error(415, str(exc))
    except BodyError as exc:
        return _error(400, str(exc))
    except UnknownStreamError:
        return _error(404, f"unknown stream {stream!r}")
    except QueueFull as exc:
        return _unavailable(f"ingest queue full: {exc}; retry later")
    except NotReady:
        return _unavailable("not ready: references are loading or state is being restored")
    return _json({"rows": result.rows})


async def metrics(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: text 0.0.4, or OpenMetrics when the Accept header asks for it."""
    daemon = request.app[DAEMON_KEY]
    body, content_type = exposition(daemon.registry, request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def healthy(request: web.Request) -> web.StreamResponse:
    """``GET /-/healthy``: 200 while the process runs."""
    return web.Response(text="driftmon is healthy.\n")


async def ready(request: web.Request) -> web.StreamResponse:
    """``GET /-/ready``: 200 once references are loaded and state restored, else 503."""
    if request.app[DAEMON_KEY].ready:
        return web.Response(text="driftmon is ready.\n")
    return web.Response(status=503, text="driftmon is not ready.\n")


async def reload(request: web.Request) -> web.StreamResponse:
    """``POST /-/reload``: 200, or 400 with the errors and the old config kept."""

    daemon = request.app[DAEMON_KEY]
    if not daemon.check_token(request.headers.get("Authorization")):
        return _unauthorized()
    if not daemon.ready:
        return _unavailable("not ready")
    outcome = await daemon.reload_coalesced()
    if outcome.errors:
        return _json(
            {"error": "config not reloaded; the old one stays", "errors": outcome.errors}, 400
        )
    # Settings that changed but apply at the next start are said, not silently dropped.
    return _json({"status": "reloaded", "notices": outcome.notices})


def _number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def _monitors_payload(
    daemon: Daemon, only: tuple[str, str] | None = None
) -> list[dict[str, object]]:
    evaluation = daemon.latest
    if evaluation is None:
        return []
    alerts: dict[int, list[dict[str, object]]] = {}
    states = ("inactive", "pending", "firing")
    p_values = evaluation.values["p_value"]
    for i, pair in enumerate(evaluation.alert_pairs):
        table = evaluation.alerts
        alerts.setdefault(pair.monitor, []).append(
            {
                "rule": pair.rule.name,
                "metric": pair.rule.metric,
                "severity": pair.rule.severity,
                "state": states[int(table.state[i])],
                "active_at": _number(float(table.active_at[i])),
                "fired_at": _number(float(table.fired_at[i])),
                # The raw G-test p-value, and the one max_p_value judged (corrected
                # over the rule's family when it has p_value_correction; null when
                # the pair got no verdict at this evaluation).
                "p_value": _number(float(p_values[pair.monitor])),
                "p_value_correction": pair.rule.p_value_correction,
                "p_value_corrected": _number(float(evaluation.alert_p_values[i])),
            }
        )
    result = []
    for monitor in evaluation.monitors:
        if only is not None and (monitor.stream, monitor.feature) != only:
            continue
        i = monitor.index
        result.append(
            {
                "stream": monitor.stream,
                "feature": monitor.feature,
                "type": monitor.type,
                "samples": int(evaluation.window_samples[i]),
                "reference_samples": int(evaluation.reference_samples[i]),
                "evaluated_at": evaluation.time,
                "divergences": {
                    name: _number(float(evaluation.values[name][i])) for name in ALL_METRICS
                },
                "alerts": alerts.get(i, []),
            }
        )
    return result


def _streams_payload(daemon: Daemon) -> dict[str, dict[str, object]]:
    """Per stream: its combined p-value and, per rule, the monitors the rule fires for."""
    evaluation = daemon.latest
    if evaluation is None:
        return {}
    streams: dict[str, dict[str, object]] = {
        monitor.stream: {"drift_p_value": None, "drifting_features": {}}
        for monitor in evaluation.monitors
    }
    for stream, value in evaluation.stream_p_values.items():
        streams[stream]["drift_p_value"] = _number(value)
    for (stream, rule), count in evaluation.drifting_features().items():
        drifting = streams[stream]["drifting_features"]
        assert isinstance(drifting, dict)
        drifting[rule] = count
    return streams


async def monitors(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/monitors``: every monitor's samples, divergences and alert states."""
    daemon = request.app[DAEMON_KEY]
    return _json(
        {
            "log_base": daemon.config.engine.log_base,
            "monitors": _monitors_payload(daemon),
            "streams": _streams_payload(daemon),
        }
    )


async def monitor(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/monitors/{stream}/{feature}``: the above plus bins and counts."""
    daemon = request.app[DAEMON_KEY]
    key = (request.match_info["stream"], request.match_info["feature"])
    found = _monitors_payload(daemon, key)
    detail = daemon.monitor_detail(*key)
    if not found or detail is None:
        return _error(404, f"no monitor {key[0]}/{key[1]}")
    return _json({**found[0], **detail})


# --- HTML pages (driftmon.pages renders; these only fetch the snapshot) -----------------

# Pages run no script and load nothing from anywhere: a browser enforces it too.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


async def overview(request: web.Request) -> web.StreamResponse:
    """``GET /``: the monitors, firing first; ``?stream=``, ``?state=`` filter, ``?limit=``
    bounds the rows."""
    from driftmon.pages import overview_page
    from driftmon.pages.render import DEFAULT_LIMIT, FILTER_STATES, select_monitors

    daemon = request.app[DAEMON_KEY]
    stream = request.query.get("stream") or None
    state = request.query.get("state") or None
    if state is not None and state not in FILTER_STATES:
        return _error(400, f"state: expected one of {', '.join(FILTER_STATES)}, got {state!r}")
    limit_text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not limit_text.isdigit() or int(limit_text) < 1:
        return _error(400, f"limit: expected a whole number >= 1, got {limit_text!r}")
    evaluation = daemon.latest

    def render() -> str:
        selection = None
        histories = {}
        if evaluation is not None:
            selection = select_monitors(
                evaluation, stream=stream, state=state, limit=int(limit_text)
            )
            histories = daemon.history_series(
                {(v.stream, v.feature): v.rule_metric for v in selection.views}
            )
        return overview_page(
            evaluation,
            selection,
            histories,
            streams=[s.name for s in daemon.config.streams],
            stream=stream,
            state=state,
            refresh_s=daemon.config.engine.evaluate_every_s,
        )

    return _html(await asyncio.to_thread(render))


async def monitor_html(request: web.Request) -> web.StreamResponse:
    """``GET /monitors/{stream}/{feature}``: one monitor's histograms, rules and history."""
    from driftmon.pages import monitor_page

    daemon = request.app[DAEMON_KEY]
    stream, feature = request.match_info["stream"], request.match_info["feature"]
    evaluation = daemon.latest

    def render() -> str | None:
        return monitor_page(
            evaluation,
            stream,
            feature,
            daemon.monitor_history(stream, feature),
            log_base=daemon.config.engine.log_base,
            refresh_s=daemon.config.engine.evaluate_every_s,
        )

    text = await asyncio.to_thread(render)
    if text is None:
        return _error(404, f"no monitor {stream}/{feature}")
    return _html(text)


async def monitor_by_query(request: web.Request) -> web.StreamResponse:
    """``GET /monitors?stream=S&feature=F``: a redirect to the monitor's page.

    For links made by templates that can only escape query strings (Prometheus
    ``urlquery``, Grafana data links): ``+`` there means a space.
    """
    from driftmon.pages.render import monitor_path

    stream, feature = request.query.get("stream"), request.query.get("feature")
    if not stream or not feature:
        return _error(400, "stream and feature: both query parameters are required")
    # Relative ("monitors/S/F" from "/monitors"), so that it also works under a path prefix.
    raise web.HTTPFound(monitor_path(stream, feature)[1:])


async def monitor_history(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/monitors/{stream}/{feature}/history``: the monitor's recent evaluations."""
    daemon = request.app[DAEMON_KEY]
    stream, feature = request.match_info["stream"], request.match_info["feature"]
    history = daemon.monitor_history(stream, feature)
    if history is None:
        return _error(404, f"no monitor {stream}/{feature}")
    engine = daemon.config.engine
    return _json(
        {
            "stream": stream,
            "feature": feature,
            "log_base": engine.log_base,
            "history_length_s": engine.history_length_s,
            "history_every_s": max(engine.history_every_s, engine.evaluate_every_s),
            **history.to_json(),
        }
    )


def make_app(daemon: Daemon) -> web.Application:
    """The aiohttp application of one daemon."""
    # The body limit is enforced by read_body (413 with a message); aiohttp's own
    # limit is set just above it so that it never answers first.
    app = web.Application(client_max_size=daemon.config.server.max_body_bytes + 1)
    app[DAEMON_KEY] = daemon
    app[READING_KEY] = ReadingBodies()
    app.router.add_post("/v1/streams/{stream}/rows", ingest_rows)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/api/v1/monitors", monitors)
    app.router.add_get("/api/v1/monitors/{stream}/{feature}", monitor)
    app.router.add_get("/api/v1/monitors/{stream}/{feature}/history", monitor_history)
    app.router.add_get("/", overview)
    app.router.add_get("/monitors/{stream}/{feature}", monitor_html)
    app.router.add_get("/monitors", monitor_by_query)
    from driftmon.cloudevents import ingest_cloudevents, ingest_cloudevents_root  # (circular)

    app.router.add_post("/v1/cloudevents", ingest_cloudevents)
    app.router.add_post("/", ingest_cloudevents_root)
    return app
