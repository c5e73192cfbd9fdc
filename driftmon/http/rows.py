"""``POST /v1/streams/{stream}/rows``: one body into the ingest gate."""

from __future__ import annotations

from aiohttp import web

from driftmon.engine import UnknownStreamError
from driftmon.http.interfaces import GATE_KEY, READING_KEY
from driftmon.http.responses import error, json_response, read_body, unavailable
from driftmon.ingest import NotReady, QueueFull
from driftmon.sources import BodyError, UnsupportedMediaType

NOT_READY = "not ready: references are loading or state is being restored"


async def ingest_rows(request: web.Request) -> web.StreamResponse:
    """200 ``{"rows": N}``; 400, 404, 413, 415 or 503 with ``{"error": ...}``."""
    gate = request.app[GATE_KEY]
    stream = request.match_info["stream"]
    if not gate.has_stream(stream):
        return error(404, f"unknown stream {stream!r}")
    body = await read_body(
        request, request.app[READING_KEY], gate.max_body_bytes, gate.body_bound_bytes
    )
    if isinstance(body, web.Response):
        return body
    try:
        result = await gate.ingest(
            stream,
            body,
            request.headers.get("Content-Type"),
            request.headers.get("Idempotency-Key"),  # cluster.mode: shared
        )
    except UnsupportedMediaType as exc:
        return error(415, str(exc))
    except BodyError as exc:
        return error(400, str(exc))
    except UnknownStreamError:
        return error(404, f"unknown stream {stream!r}")
    except QueueFull as exc:
        return unavailable(f"ingest queue full: {exc}; retry later")
    except NotReady:
        return unavailable(NOT_READY)
    return json_response({"rows": result.rows})
