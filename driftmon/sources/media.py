"""The media types of ingest bodies and the formats of data files, by suffix.

A leaf without pyarrow: bodies, the Arrow reader and the config all read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["ARROW_STREAM_MEDIA_TYPE", "FILE_FORMATS", "JSON_MEDIA_TYPES", "NDJSON_MEDIA_TYPES"]

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

FILE_FORMATS: Final[Mapping[str, str]] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".arrows": "arrow",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
}
"""File suffix (lower-cased) to the format a data file is read as."""
