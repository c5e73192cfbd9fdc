"""``POST /v1/cloudevents`` (and ``POST /`` when enabled): one call into the ingest gate.

Modes, routing and answers: docs/cloudevents.md.
"""

from __future__ import annotations

from aiohttp import web

from driftmon.http.interfaces import GATE_KEY, READING_KEY
from driftmon.http.responses import error, json_response, read_body, unavailable
from driftmon.http.rows import NOT_READY
from driftmon.ingest import NotReady, QueueFull
from driftmon.sources.cloudevents import CloudEventError


async def ingest_cloudevents(request: web.Request) -> web.StreamResponse:
    """200 ``{"rows", "events", "dropped"}``; 400, 413, 415 or 503 with ``{"error": ...}``."""
    gate = request.app[GATE_KEY]
    body = await read_body(
        request, request.app[READING_KEY], gate.max_body_bytes, gate.body_bound_bytes
    )
    if isinstance(body, web.Response):
        return body
    try:
        result = await gate.ingest_cloudevents(request.headers, body)
    except CloudEventError as exc:
        return error(exc.status, str(exc))
    except QueueFull as exc:
        return unavailable(f"ingest queue full: {exc}; retry later")
    except NotReady:
        return unavailable(NOT_READY)
    return json_response(
        {"rows": result.rows, "events": result.events, "dropped": dict(result.dropped)}
    )
