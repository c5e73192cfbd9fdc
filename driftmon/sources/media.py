"""The media types of ingest bodies (a leaf: bodies and columnar both read them)."""

from __future__ import annotations

from typing import Final

__all__ = ["ARROW_STREAM_MEDIA_TYPE", "JSON_MEDIA_TYPES", "NDJSON_MEDIA_TYPES"]

JSON_MEDIA_TYPES: Final = frozenset({"application/json", "text/json"})
"""Media types of a JSON body: an array of row objects or a ``columns`` object."""

NDJSON_MEDIA_TYPES: Final = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
"""Media types of a newline-delimited JSON body: one row object per line."""

ARROW_STREAM_MEDIA_TYPE: Final = "application/vnd.apache.arrow.stream"
"""Media type of an Arrow IPC stream body (decoded by :mod:`driftmon.sources.columnar`)."""
