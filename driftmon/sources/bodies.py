"""Ingest bodies (``POST /v1/streams/{stream}/rows``) into columns, by media type.

JSON (an array of row objects, or ``{"columns": {...}}``) and NDJSON, UTF-8
only (:mod:`driftmon.sources.jsonrows`); Arrow IPC streams
(:mod:`driftmon.sources.columnar`). Values are passed on as decoded, ``None``
for absent or ``null``: the binner classifies them. One shortcut: a field
named in ``numeric_fields`` comes back as a float64 array when the raw bytes
prove every value in it is a JSON number (:func:`numbers_only`). Errors are :class:`BodyError`s that
name the line, column, row or ``columns.<feature>`` at fault.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Final

from driftmon.sources.jsonrows import (
    Batch,
    check_fields,
    columns_to_batch,
    decode_json,
    decode_ndjson,
    numbers_only,
    rows_with_number_arrays,
    with_number_arrays,
)
from driftmon.sources.jsontext import (
    DEFAULT_MAX_DEPTH,
    BodyError,
    Source,
    UnsupportedMediaType,
)
from driftmon.sources.media import (
    ARROW_STREAM_MEDIA_TYPE,
    JSON_MEDIA_TYPES,
    NDJSON_MEDIA_TYPES,
)

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "JSON_MEDIA_TYPES",
    "NDJSON_MEDIA_TYPES",
    "ARROW_STREAM_MEDIA_TYPE",
    "Batch",
    "BodyError",
    "UnsupportedMediaType",
    "parse_body",
]


_UTF8_CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# JSON's insignificant whitespace: a line of nothing else is blank.


def _media_kind(content_type: str | None) -> str:
    """``"json"``, ``"ndjson"`` or ``"arrow"`` for a ``Content-Type`` header value, else raise."""
    accepted = (
        "send application/json, application/x-ndjson or application/vnd.apache.arrow.stream"
    )
    if content_type is None:
        raise UnsupportedMediaType(f"missing Content-Type: {accepted}")
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type == ARROW_STREAM_MEDIA_TYPE:
        return "arrow"
    if media_type in JSON_MEDIA_TYPES:
        kind = "json"
    elif media_type in NDJSON_MEDIA_TYPES:
        kind = "ndjson"
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {json.dumps(content_type[:100])}: {accepted}"
        )
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in _UTF8_CHARSETS:
                raise UnsupportedMediaType(
                    f"unsupported charset {json.dumps(charset[:40])}: JSON bodies are UTF-8"
                )
    return kind


def _check_max_depth(max_depth: int) -> None:
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError(f"max_depth: expected an int >= 1, got {max_depth!r}")


def parse_body(
    body: bytes,
    content_type: str | None,
    fields: Sequence[str],
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    numeric_fields: Collection[str] = (),
) -> Batch:
    """Decode an ingest body into one column of decoded values per requested field.

    ``content_type`` is the raw header value (parameters allowed, media type
    case-insensitive); see the module docstring for the media types and body
    shapes accepted. ``fields`` are the field names to extract, without
    repeats; the batch's columns follow their order. ``max_depth`` bounds
    container nesting (at least 1; orjson also stops at 1024).

    A field in ``numeric_fields`` comes back as a float64 array (ints
    converted) when the body proves, from its raw bytes, that every value it
    holds is a number: a ``columns`` body, or rows that all hold exactly the
    requested fields, with no string value, ``true``, ``false``, ``null`` or
    nested container anywhere and no backslash. That saves the binner a type
    check per value (a quarter of the work for a columnar body); any other
    body gives lists as usual.

    Raises :class:`UnsupportedMediaType` for a media type or charset it does not
    read and :class:`BodyError` for any body that does not parse, whatever its
    bytes; ``ValueError`` for a wrong argument (``body`` not bytes, repeated
    ``fields``, ``max_depth`` < 1).
    """
    kind = _media_kind(content_type)
    names = check_fields(fields)
    _check_max_depth(max_depth)
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    elif not isinstance(body, bytes):
        raise ValueError(f"body: expected bytes, got {type(body).__name__}")
    if kind == "arrow":
        from driftmon.sources.columnar import (
            parse_arrow_body,  # pyarrow loads with the first Arrow body
        )

        return parse_arrow_body(body, names, numeric_fields)
    src = Source(body)
    numeric = [name for name in names if name in numeric_fields]
    if kind == "ndjson":
        return rows_with_number_arrays(body, decode_ndjson(src, max_depth), names, numeric, 0)
    doc = decode_json(src, max_depth)
    if isinstance(doc, list):
        return rows_with_number_arrays(body, doc, names, numeric, 1)
    batch = columns_to_batch(doc, names, 0, None)
    if numeric and numbers_only(body, objects=2, arrays=len(doc), keys=("columns", *doc)):
        return with_number_arrays(batch, [name for name in numeric if name in doc])
    return batch

