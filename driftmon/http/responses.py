"""Answers every handler shares: JSON, ``{"error": ...}``, 401, 503, and bounded body reads."""

from __future__ import annotations

import orjson
from aiohttp import web

__all__ = ["ReadingBodies", "error", "json_response", "read_body", "unauthorized", "unavailable"]

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


class ReadingBodies:
    """Bytes of request bodies being read right now (touched by the event loop's thread only)."""

    def __init__(self) -> None:
        self.bytes = 0


async def read_body(
    request: web.Request, reading: ReadingBodies, limit: int, bound: int
) -> bytes | web.Response:
    """The request body; or a 413 over ``limit`` bytes; or a 503 while the bodies being
    read hold ``bound`` bytes already (the rest is left unread)."""
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"body of {request.content_length} bytes is over the limit of {limit}")
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
                return error(413, f"body is over the limit of {limit} bytes")
            if reading.bytes > bound and reading.bytes > size:
                return unavailable(
                    "ingest queue full: too many request bodies being read; retry later"
                )
            chunks.append(chunk)
    finally:
        reading.bytes -= size
    return b"".join(chunks)
