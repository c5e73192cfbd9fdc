"""The media types of ingest bodies and the formats of data files, by suffix.

A leaf without pyarrow: bodies, the Arrow reader and the config all read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "ARROW_STREAM_MEDIA_TYPE",
    "DATA_FORMATS",
    "FILE_FORMATS",
    "JSON_MEDIA_TYPES",
    "NDJSON_MEDIA_TYPES",
    "TEXT_FORMATS",
    "file_format",
]

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

DATA_FORMATS: Final = ("parquet", "arrow", "csv", "ndjson", "json")
"""Every data-file format (``format:`` of a reference, ``--format`` of the CLI)."""

TEXT_FORMATS: Final = ("csv", "ndjson", "json")
"""The formats the row reader (:mod:`driftmon.sources.files`) reads without pyarrow."""


def file_format(path: Path, given: str | None = None, formats: Sequence[str] = DATA_FORMATS) -> str:
    """The format to read ``path`` as: ``given``, else by suffix.

    Raises ValueError when it is not one of ``formats`` or the suffix is unknown.
    """
    if given is not None:
        if given not in formats:
            expected = f"{', '.join(formats[:-1])} or {formats[-1]}"
            raise ValueError(f"format: expected {expected}, got {given!r}")
        return given
    found = FILE_FORMATS.get(path.suffix.lower())
    if found is None or found not in formats:
        suffixes = [suffix for suffix, kind in FILE_FORMATS.items() if kind in formats]
        raise ValueError(
            f"format: cannot tell the format of {str(path)!r} from its suffix "
            f"({', '.join(suffixes)}); give the format ({', '.join(formats)})"
        )
    return found
