"""Parse stage: ingest bodies and data files into columns of decoded values.

This module turns bytes into one Python list per requested field (docs/
docs/configuration.md). It does not bin or classify: a value is passed on exactly as it was
decoded (``None`` for an absent field or a JSON ``null``), and the binner
applies the type rules of docs/configuration.md to it later. One shortcut: :func:`parse_body` may
hand a field named in ``numeric_fields`` over as a float64 array instead,
when the body's raw bytes prove that every value in it is a JSON number
(:func:`_numbers_only`), which is what the binner would have made of it.

Inputs
------
Ingest bodies (:func:`parse_body`), by media type:

- ``application/json`` (also the legacy ``text/json``): a JSON array of row
  objects, or ``{"columns": {"feature": [values, ...], ...}}`` with every
  column the same length. A ``columns`` body may carry no other top-level key:
  an extra key is an error, because silently ignoring it could hide a body
  that is not what its sender meant (a request is applied whole or not at all).
- ``application/x-ndjson`` (also ``application/ndjson``, ``application/jsonl``,
  ``application/x-jsonl``, ``application/jsonlines``,
  ``application/x-jsonlines``): one row object per line; blank lines are
  skipped, a trailing newline and CRLF line ends are fine.
- ``application/vnd.apache.arrow.stream``: an Arrow IPC stream of record
  batches, one column per field, decoded by :mod:`driftmon.columnar`.

Media types are case-insensitive; a ``charset`` parameter, when present, must
name UTF-8 (or its subset US-ASCII), the only encoding JSON allows (RFC 8259).
A leading UTF-8 byte order mark is ignored. An empty body (nothing but
whitespace, or no row lines) is an error; ``[]`` is a valid body of no rows.

Data files (:func:`read_table`, :func:`iter_table_chunks`): CSV with a header
row, NDJSON (``.ndjson``, ``.jsonl``) and JSON (``.json``, the same two shapes
as a JSON body).

JSON numbers
------------
orjson decodes every body. Only when it fails is the standard library's
``json`` module tried, which accepts the non-standard literals ``NaN``,
``Infinity`` and ``-Infinity`` that Python's ``json.dumps`` writes by default
(and numbers too large for a double, decoded as ±inf). The fallback keeps
orjson's other rules: integers outside the 64-bit range become floats, as
orjson makes them, and an unpaired surrogate escape (``"\\ud800"``) is still an
error.

Errors
------
Every problem with the bytes raises :class:`BodyError` (a ``ValueError``)
whose message names the place: ``line 3, column 7: invalid JSON (...)``
(lines and columns count from 1, columns in characters), ``row 4: expected a
JSON object, got array`` (rows of a JSON array count from 1),
``columns.age: length 3, expected 5 (as columns.income)``, ``line 1, column 18,
byte 17: invalid UTF-8 (0xff)`` (byte offsets count from 0). JSON types are
named as JSON names them: object, array, string, number, boolean, null.
Errors in files are prefixed with the file's path. Wrong arguments (not
bytes) raise a plain ``ValueError`` naming the argument.

Nesting deeper than ``max_depth`` containers (counted from the document's
root: a row object of a JSON array is at depth 2, one of an NDJSON line at
depth 1) is a :class:`BodyError`; a structural census of the bytes proves the
common case cheaply and an exact vectorised scan runs only when it cannot.
Independently of ``max_depth``, orjson refuses documents nested deeper than
1024 levels.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import Final, cast

import numpy as np
import orjson

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "JSON_MEDIA_TYPES",
    "NDJSON_MEDIA_TYPES",
    "TABLE_FORMATS",
    "Batch",
    "BodyError",
    "UnsupportedMediaType",
    "iter_table_chunks",
    "parse_body",
    "read_table",
]

DEFAULT_MAX_DEPTH: Final = 64
"""Default bound on container nesting in a JSON document (see the module docstring)."""

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
"""Media type of an Arrow IPC stream body (decoded by :mod:`driftmon.columnar`)."""

TABLE_FORMATS: Final = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json"}
"""File suffix (lower-cased) to the data format :func:`read_table` reads it as."""

_UTF8_CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_READ_TABLE_CHUNK_ROWS: Final = 65_536
_MESSAGE_NAME_CHARS: Final = 60
_SCAN_BLOCK: Final = 1 << 20
# JSON's insignificant whitespace: a line of nothing else is blank.
_LINE_BLANKS: Final = b" \t\r\n"

_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
# Every escape sequence of a JSON text, in order; a \uXXXX escape keeps its digits.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NOT_STRUCTURAL: Final = bytes(code for code in range(256) if code not in b'"[]{}')
# What the standard library decodes and orjson refuses: where orjson stopped at one of
# these, an error the standard library finds further on is the one to report.
_STDLIB_ONLY_AT = re.compile(r"NaN|-?Infinity|-?[0-9]")
_STDLIB_ONLY_BEFORE = re.compile(r"-Infinity")
_ORJSON_MAX_DEPTH: Final = 1024


class BodyError(ValueError):
    """A body or data file that does not parse; nothing of it is applied.

    The message names the place of the problem: the line and column (from 1,
    columns in characters) of a JSON syntax error, the byte offset (from 0) of
    invalid UTF-8, the row (from 1) or NDJSON line of a row that is not an
    object, or the ``columns.<feature>`` entry at fault. Messages about files
    start with the file's path. The HTTP server answers it with a 400.
    """


class UnsupportedMediaType(BodyError):
    """A ``Content-Type`` that :func:`parse_body` does not read (the server answers 415).

    Raised for a missing header, a media type outside :data:`JSON_MEDIA_TYPES`
    and :data:`NDJSON_MEDIA_TYPES`, or a ``charset`` other than UTF-8.
    """


@dataclass(frozen=True)
class Batch:
    """Rows decoded into columns, one list per requested field.

    ``columns`` holds exactly the requested fields, in the order they were
    requested, each a list of ``n_rows`` decoded values: numbers, strings,
    booleans, lists and dicts as the JSON (or CSV rules) gave them, ``None``
    where a row lacks the field or carries ``null``; or, for a field
    :func:`parse_body` was told is numeric and found only numbers under, a
    float64 array of them. ``unknown_fields`` counts the values present under
    fields that were not requested (a present ``null`` included); they are
    otherwise ignored.
    """

    n_rows: int
    columns: Mapping[str, Sequence[object] | np.ndarray]
    unknown_fields: int


# --- where an error is: positions in bodies and files -------------------------


@dataclass(frozen=True)
class _Source:
    """The bytes being parsed and how to name a place in them in a message.

    ``data`` is a whole body, a whole file, or a run of lines of a file that
    starts at line ``first_line`` and byte ``base_offset`` of that file.
    """

    data: bytes
    label: str = "body"
    prefix: str = ""
    first_line: int = 1
    base_offset: int = 0
    empty_message: str = "empty body"

    def error(self, message: str) -> BodyError:
        return BodyError(self.prefix + message)

    def whole(self, message: str) -> BodyError:
        """An error about the document as a whole."""
        return BodyError(f"{self.label}: {message}")

    def line_column(self, offset: int) -> tuple[int, int]:
        """Line and character column (both from 1) of byte ``offset`` of ``data``."""
        line_start = self.data.rfind(b"\n", 0, offset) + 1
        if line_start == 0 and self.base_offset == 0 and self.data.startswith(_UTF8_BOM):
            # A byte order mark is invisible in an editor: columns start after it.
            line_start = min(len(_UTF8_BOM), offset)
        line = self.first_line + self.data.count(b"\n", 0, offset)
        column = len(self.data[line_start:offset].decode("utf-8", "replace")) + 1
        return line, column

    def at(self, offset: int, message: str) -> BodyError:
        """An error at byte ``offset`` of ``data``."""
        line, column = self.line_column(offset)
        return self.error(f"line {line}, column {column}: {message}")

    def bad_utf8(self, offset: int) -> BodyError:
        """Invalid UTF-8 starting at byte ``offset`` of ``data``."""
        line, column = self.line_column(offset)
        return self.error(
            f"line {line}, column {column}, byte {self.base_offset + offset}: "
            f"invalid UTF-8 (0x{self.data[offset]:02x})"
        )


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _field_ref(container: str, name: str) -> str:
    """``columns.age``, or ``columns["odd name"]`` for a name that is not plain."""
    if len(name) <= _MESSAGE_NAME_CHARS and _PLAIN_NAME.fullmatch(name):
        return f"{container}.{name}"
    shown = name if len(name) <= _MESSAGE_NAME_CHARS else name[:_MESSAGE_NAME_CHARS] + "..."
    return f"{container}[{json.dumps(shown)}]"


# --- nesting depth -------------------------------------------------------------


def _without_escaped_quotes(data: bytes) -> bytes:
    """``data`` with every escaped backslash and escaped quote blanked, offsets kept.

    Left to right, ``\\\\`` pairs go first, so a backslash left before a quote is
    the odd one of its run and escapes it; then every remaining quote delimits
    a string. Two C-speed passes and one copy, whatever the text.
    """
    if b"\\" not in data:
        return data
    return data.replace(b"\\\\", b"__").replace(b'\\"', b"__")


def _first_over(codes: np.ndarray, max_depth: int) -> int | None:
    """Index of the first bracket in ``codes`` that opens a container deeper than ``max_depth``.

    ``codes`` are the bytes of a JSON text without escaped quotes; brackets
    between quotes do not count. Blocks of ``_SCAN_BLOCK`` bytes bound the
    temporaries (about ten bytes per input byte of a block).
    """
    in_string = 0
    depth = 0
    for start in range(0, codes.size, _SCAN_BLOCK):
        block = codes[start : start + _SCAN_BLOCK]
        # uint8 wrap-around keeps the parity, which is all that is needed.
        inside = np.cumsum(block == 0x22, dtype=np.uint8) & 1
        if in_string:
            inside ^= 1
        steps = (block == 0x5B).view(np.int8) + (block == 0x7B).view(np.int8)
        steps -= (block == 0x5D).view(np.int8)
        steps -= (block == 0x7D).view(np.int8)
        steps[inside.view(np.bool_)] = 0
        levels = np.cumsum(steps, dtype=np.int64)
        levels += depth
        too_deep = levels > max_depth
        if too_deep.any():
            return start + int(too_deep.argmax())
        depth, in_string = int(levels[-1]), int(inside[-1])
    return None


def _first_too_deep(data: bytes, max_depth: int) -> int | None:
    """Byte offset of the first bracket opening a container deeper than ``max_depth``.

    Brackets inside strings do not count. ``None`` when no container is too
    deep. Vectorised; on text that is not valid JSON the answer is a best
    effort, never an exception.
    """
    data = _without_escaped_quotes(data)
    # Deleting every byte but quotes and brackets (C speed) leaves a small text to scan
    # for the answer; only on the way to an error is the place worth a pass over every byte.
    if (
        _first_over(np.frombuffer(data.translate(None, _NOT_STRUCTURAL), np.uint8), max_depth)
        is None
    ):
        return None
    return _first_over(np.frombuffer(data, np.uint8), max_depth)


def _check_depth(
    src: _Source, work: bytes, max_depth: int, containers: int, structural_depth: int
) -> None:
    """Raise when ``work`` (a parsed document) nests deeper than ``max_depth``.

    ``containers`` is the number of containers the caller knows the document
    holds and ``structural_depth`` their nesting. When the bytes hold no more
    opening brackets than that, those brackets are exactly the known
    containers (brackets inside strings and nested values would add to the
    count), so the depth is known without a scan.
    """
    codes = np.frombuffer(work, dtype=np.uint8)
    open_brackets = int(np.count_nonzero(codes == 0x7B)) + int(np.count_nonzero(codes == 0x5B))
    if open_brackets <= max_depth:
        return
    if open_brackets == containers and structural_depth <= max_depth:
        return
    offset = _first_too_deep(work, max_depth)
    if offset is not None:
        raise src.at(offset, f"nesting deeper than {max_depth} levels")


# --- one JSON document -----------------------------------------------------------


def _json_int(digits: str) -> int | float:
    """Decode a JSON integer as orjson does: 64-bit ints stay ints, larger ones are floats."""
    if len(digits) <= 20:
        value = int(digits)
        if -(2**63) <= value < 2**64:
            return value
    # float() of a digit string has no length limit and gives ±inf past the double range.
    return float(digits)


def _unpaired_surrogate(text: str) -> int | None:
    """Character offset of the first ``\\uD800``-``\\uDFFF`` escape not in a valid pair."""
    if not _SURROGATE_ESCAPE.search(text):
        return None
    pending_high: int | None = None
    pending_end = -1
    for match in _ESCAPE.finditer(text):
        digits = match.group(1)
        code = int(digits, 16) if digits is not None else -1
        is_low = 0xDC00 <= code <= 0xDFFF
        if pending_high is not None:
            if is_low and match.start() == pending_end:
                pending_high = None
                continue
            return pending_high
        if 0xD800 <= code <= 0xDBFF:
            pending_high, pending_end = match.start(), match.end()
        elif is_low:
            return match.start()
    return pending_high


def _stdlib_only_at(text: str, position: int) -> bool:
    """Whether orjson stopped at ``position`` on a literal or number the standard library reads."""
    if _STDLIB_ONLY_AT.match(text, position):
        return True
    return position > 0 and _STDLIB_ONLY_BEFORE.match(text, position - 1) is not None


def _load_with_stdlib(
    src: _Source, doc: bytes, start: int, failure: orjson.JSONDecodeError, max_depth: int
) -> object:
    """Decode ``doc`` (at byte ``start`` of ``src.data``) after orjson refused it.

    Raises the :class:`BodyError` that places the first real problem: the
    later of orjson's and the standard library's error positions, since
    orjson stops at a ``NaN`` the standard library accepts.
    """
    try:
        text = doc.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise src.bad_utf8(start + exc.start) from None
    if not text.strip(" \t\r\n"):
        raise src.error(src.empty_message)
    # orjson never decodes deeper documents, so neither does the fallback.
    depth_limit = min(max_depth, _ORJSON_MAX_DEPTH)
    too_deep = _first_too_deep(doc, depth_limit)
    if too_deep is not None:
        raise src.at(start + too_deep, f"nesting deeper than {depth_limit} levels")

    def at_char(position: int, message: str) -> BodyError:
        return src.at(start + len(text[:position].encode("utf-8")), message)

    try:
        value = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        if exc.pos > failure.pos and _stdlib_only_at(text, failure.pos):
            raise at_char(exc.pos, f"invalid JSON ({exc.msg})") from None
        raise at_char(failure.pos, f"invalid JSON ({failure.msg})") from None
    except RecursionError:
        # Nesting close to orjson's limit can still exceed the interpreter's recursion limit.
        raise src.error("invalid JSON (nesting too deep to decode with NaN or Infinity)") from None
    except ValueError as exc:
        raise at_char(failure.pos, f"invalid JSON ({exc})") from None
    unpaired = _unpaired_surrogate(text)
    if unpaired is not None:
        raise at_char(unpaired, "invalid JSON (unpaired surrogate escape)")
    return value


def _load_document(src: _Source, doc: bytes, start: int, max_depth: int) -> tuple[object, bool]:
    """Decode one JSON document; the flag says whether its depth was already checked."""
    try:
        return orjson.loads(doc), False
    except orjson.JSONDecodeError as exc:
        return _load_with_stdlib(src, doc, start, exc, max_depth), True


# --- rows and columns into a Batch -------------------------------------------------


def _require_row_objects(rows: list[object], where: Callable[[int], str]) -> None:
    """Raise unless every row is a JSON object; ``where(i)`` names row ``i``."""
    if rows and set(map(type, rows)) != {dict}:
        index = next(i for i, row in enumerate(rows) if type(row) is not dict)
        raise BodyError(f"{where(index)}: expected a JSON object, got {_json_type(rows[index])}")


def _rows_to_batch(rows: list[dict[str, object]], fields: tuple[str, ...]) -> Batch:
    """Columns of ``rows`` (all dicts), in C-level passes over the rows."""
    n_rows = len(rows)
    n_keys = sum(map(len, rows))
    if rows and fields:
        # Fast path, rows that hold every requested field: one lookup pass, one transpose.
        try:
            if len(fields) == 1:
                picked = [list(map(itemgetter(fields[0]), rows))]
            else:
                # The lookups run to completion before the call to zip: CPython 3.11 leaks
                # the keyword dict of f(*iterator, strict=True) when the iterator raises
                # (192 bytes per request whose rows lack a field; bench/soak.py found it).
                looked_up = list(map(itemgetter(*fields), rows))
                picked = list(map(list, zip(*looked_up, strict=True)))
        except KeyError:
            pass
        else:
            unknown = n_keys - n_rows * len(fields)
            return Batch(
                n_rows=n_rows,
                columns=dict(zip(fields, picked, strict=True)),
                unknown_fields=unknown,
            )
    columns: dict[str, list[object]] = {
        name: list(map(dict.get, rows, repeat(name))) for name in fields
    }
    present = 0
    for name, column in columns.items():
        # A None is an absent key or a null value: only then is it worth asking which.
        if None in column:
            present += sum(map(dict.__contains__, rows, repeat(name)))
        else:
            present += n_rows
    return Batch(n_rows=n_rows, columns=columns, unknown_fields=n_keys - present)


def _require_columns(src: _Source, doc: dict[str, object]) -> dict[str, list[object]]:
    """The ``columns`` object of a columnar body, checked: arrays of one length."""
    if "columns" not in doc:
        raise src.whole(
            'expected a JSON array of row objects or {"columns": {...}}, got an object '
            'without "columns" (wrap a single row in an array)'
        )
    if len(doc) > 1:
        extra = next(key for key in doc if key != "columns")
        raise src.whole(
            f'unexpected top-level key {json.dumps(extra[:_MESSAGE_NAME_CHARS])} beside "columns"'
        )
    columns = doc["columns"]
    if type(columns) is not dict:
        raise src.error(f"columns: expected an object of arrays, got {_json_type(columns)}")
    first: str | None = None
    length = 0
    for name, column in columns.items():
        if type(column) is not list:
            raise src.error(
                f"{_field_ref('columns', name)}: expected an array, got {_json_type(column)}"
            )
        if first is None:
            first, length = name, len(column)
        elif len(column) != length:
            raise src.error(
                f"{_field_ref('columns', name)}: length {len(column)}, expected {length} "
                f"(as {_field_ref('columns', first)})"
            )
    return columns


def _columns_to_batch(
    columns: dict[str, list[object]], fields: tuple[str, ...], start: int, stop: int | None
) -> Batch:
    """Rows ``start:stop`` of a checked ``columns`` object (``stop=None``: to the end)."""
    n_total = len(next(iter(columns.values()))) if columns else 0
    whole = start == 0 and (stop is None or stop >= n_total)
    end = n_total if stop is None else min(stop, n_total)
    n_rows = max(0, end - start)
    picked: dict[str, list[object]] = {}
    for name in fields:
        column = columns.get(name)
        if column is None:
            picked[name] = [None] * n_rows
        else:
            picked[name] = column if whole else column[start:end]
    n_unrequested = len(columns) - sum(1 for name in fields if name in columns)
    return Batch(n_rows=n_rows, columns=picked, unknown_fields=n_unrequested * n_rows)


# --- JSON and NDJSON documents ------------------------------------------------------


def _strip_bom(src: _Source) -> bytes:
    """``src.data`` with a leading byte order mark blanked (offsets stay those of ``data``)."""
    if src.base_offset == 0 and src.data.startswith(_UTF8_BOM):
        return b"   " + src.data[len(_UTF8_BOM) :]
    return src.data


def _decode_json(src: _Source, max_depth: int) -> list[dict[str, object]] | dict[str, list[object]]:
    """A JSON body or file: its checked row objects, or its checked ``columns`` object."""
    work = _strip_bom(src)
    doc, depth_checked = _load_document(src, work, 0, max_depth)
    if type(doc) is list:
        _require_row_objects(doc, lambda index: f"{src.prefix}row {index + 1}")
        if not depth_checked:
            _check_depth(src, work, max_depth, 1 + len(doc), 2 if doc else 1)
        return doc
    if type(doc) is dict:
        columns = _require_columns(src, doc)
        if not depth_checked:
            _check_depth(src, work, max_depth, 2 + len(columns), 3 if columns else 2)
        return columns
    raise src.whole(
        f'expected a JSON array of row objects or {{"columns": {{...}}}}, got {_json_type(doc)}'
    )


def _decode_ndjson(src: _Source, max_depth: int) -> list[dict[str, object]]:
    """The row objects of NDJSON lines; blank lines are skipped, numbering kept."""
    work = _strip_bom(src)
    row_lines: list[int] | None = None
    try:
        # Fast path. Lines are read lazily (no list of a line per newline); a blank line
        # other than a bare "\n" fails here and takes the slow path below.
        rows: list[object] = list(map(orjson.loads, filter(b"\n".__ne__, io.BytesIO(work))))
    except orjson.JSONDecodeError:
        rows, row_lines = [], []
        offset = 0
        for index, line in enumerate(io.BytesIO(work)):
            if line.strip(_LINE_BLANKS):
                # Without its newline, so an error at the end of the line names this line.
                row, _ = _load_document(src, line.rstrip(b"\r\n"), offset, max_depth)
                rows.append(row)
                row_lines.append(src.first_line + index)
            offset += len(line)
    if not rows:
        raise src.error(src.empty_message)

    def where(index: int) -> str:
        if row_lines is not None:
            return f"{src.prefix}line {row_lines[index]}"
        content = (i for i, line in enumerate(io.BytesIO(work)) if line != b"\n")
        return f"{src.prefix}line {src.first_line + next(islice(content, index, None))}"

    _require_row_objects(rows, where)
    # Every line decoded is balanced, so one scan of the whole text sees each line's depth.
    _check_depth(src, work, max_depth, len(rows), 1)
    return cast(list[dict[str, object]], rows)  # checked above: every row is a dict


# --- bodies ----------------------------------------------------------------------------


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


def _check_fields(fields: Sequence[str], argument: str = "fields") -> tuple[str, ...]:
    if isinstance(fields, str | bytes):
        raise ValueError(f"{argument}: expected a sequence of field names, got a single string")
    names = tuple(fields)
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{argument}: field names are strings, got {type(name).__name__}")
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"{argument}: {duplicate!r} is listed more than once")
    return names


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
    names = _check_fields(fields)
    _check_max_depth(max_depth)
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    elif not isinstance(body, bytes):
        raise ValueError(f"body: expected bytes, got {type(body).__name__}")
    if kind == "arrow":
        from driftmon.columnar import parse_arrow_body  # pyarrow loads with the first Arrow body

        return parse_arrow_body(body, names, numeric_fields)
    src = _Source(body)
    numeric = [name for name in names if name in numeric_fields]
    if kind == "ndjson":
        return _rows_with_number_arrays(body, _decode_ndjson(src, max_depth), names, numeric, 0)
    doc = _decode_json(src, max_depth)
    if isinstance(doc, list):
        return _rows_with_number_arrays(body, doc, names, numeric, 1)
    batch = _columns_to_batch(doc, names, 0, None)
    if numeric and _numbers_only(body, objects=2, arrays=len(doc), keys=("columns", *doc)):
        return _with_number_arrays(batch, [name for name in numeric if name in doc])
    return batch


def _rows_with_number_arrays(
    body: bytes,
    rows: list[dict[str, object]],
    names: tuple[str, ...],
    numeric: Sequence[str],
    arrays: int,
) -> Batch:
    """The batch of ``rows``; its ``numeric`` columns as arrays when ``body`` proves them numbers.

    ``arrays`` is the number of arrays the body holds: 1 for a JSON array of
    rows, 0 for NDJSON.
    """
    batch = _rows_to_batch(rows, names)
    n_rows = batch.n_rows
    if (
        numeric
        and n_rows
        and batch.unknown_fields == 0
        # With no unknown field, this many keys means that each row holds every field.
        and sum(map(len, rows)) == n_rows * len(names)
        and _numbers_only(body, objects=n_rows, arrays=arrays, keys=names, times=n_rows)
    ):
        return _with_number_arrays(batch, numeric)
    return batch


_COUNTED_BYTES: Final = tuple(b'\\"{[tfn')


def _numbers_only(
    data: bytes, *, objects: int, arrays: int, keys: Sequence[str], times: int = 1
) -> bool:
    """Whether a parsed JSON text holds nothing but numbers besides its containers and keys.

    The caller knows what the text parsed into: ``objects`` objects, ``arrays``
    arrays, and ``keys`` each ``times`` times. Every other JSON value is a
    number unless the text holds a string (two more quotes), a ``true``,
    ``false`` or ``null`` (one more ``t``, ``f`` or ``n`` than the keys hold),
    or a nested container (one more ``{`` or ``[``). So when none of these
    bytes occurs more often than the known parts account for, and there is
    no backslash (the keys' raw text is then their own characters), every
    value is a number: an int or a float as orjson decodes them. One
    vectorised count per byte (~7 µs per 400 KB), against a type check per
    value. (The standard library's fallback decodes ``NaN`` to a float, as
    a number column holds it anyway; ``Infinity`` holds an ``n``.)
    """
    key_text = "".join(keys)
    expected = {
        ord("\\"): 0,
        ord('"'): 2 * len(keys) * times,
        ord("{"): objects,
        ord("["): arrays,
        ord("t"): key_text.count("t") * times,
        ord("f"): key_text.count("f") * times,
        ord("n"): key_text.count("n") * times,
    }
    codes = np.frombuffer(data, dtype=np.uint8)
    return all(int(np.count_nonzero(codes == code)) == expected[code] for code in _COUNTED_BYTES)


def _with_number_arrays(batch: Batch, names: Sequence[str]) -> Batch:
    """``batch`` with the columns ``names`` (lists of ints and floats only) as float64 arrays."""
    columns = dict(batch.columns)
    for name in names:
        columns[name] = np.fromiter(columns[name], dtype=np.float64, count=batch.n_rows)
    return Batch(n_rows=batch.n_rows, columns=columns, unknown_fields=batch.unknown_fields)


# --- files ---------------------------------------------------------------------------------


def _table_format(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in ("csv", "ndjson", "json"):
            raise ValueError(f"format: expected csv, ndjson or json, got {format!r}")
        return format
    found = TABLE_FORMATS.get(path.suffix.lower())
    if found is None:
        raise ValueError(
            f"format: cannot tell the format of {str(path)!r} from its suffix "
            f"(.csv, .ndjson, .jsonl, .json); give format='csv', 'ndjson' or 'json'"
        )
    return found


def _file_source(path: Path, data: bytes, first_line: int = 1, base_offset: int = 0) -> _Source:
    return _Source(
        data,
        label=str(path),
        prefix=f"{path}: ",
        first_line=first_line,
        base_offset=base_offset,
        empty_message="empty file",
    )


def _iter_json_file(path: Path, fields: tuple[str, ...], chunk_rows: int) -> Iterator[Batch]:
    src = _file_source(path, path.read_bytes())
    doc = _decode_json(src, DEFAULT_MAX_DEPTH)
    if isinstance(doc, list):
        for start in range(0, len(doc), chunk_rows):
            yield _rows_to_batch(doc[start : start + chunk_rows], fields)
        return
    n_total = len(next(iter(doc.values()))) if doc else 0
    for start in range(0, n_total, chunk_rows):
        yield _columns_to_batch(doc, fields, start, start + chunk_rows)


def _iter_ndjson_file(path: Path, fields: tuple[str, ...], chunk_rows: int) -> Iterator[Batch]:
    # Runs of whole lines are decoded as one NDJSON text, numbered from where they start.
    with path.open("rb") as stream:
        pending: list[bytes] = []
        pending_rows = 0
        first_line = line_number = 1
        base_offset = offset = 0
        for line in stream:
            if not pending:
                first_line, base_offset = line_number, offset
            pending.append(line)
            line_number += 1
            offset += len(line)
            if line.strip(_LINE_BLANKS):
                pending_rows += 1
                if pending_rows == chunk_rows:
                    src = _file_source(path, b"".join(pending), first_line, base_offset)
                    yield _rows_to_batch(_decode_ndjson(src, DEFAULT_MAX_DEPTH), fields)
                    pending, pending_rows = [], 0
        if pending_rows:
            src = _file_source(path, b"".join(pending), first_line, base_offset)
            yield _rows_to_batch(_decode_ndjson(src, DEFAULT_MAX_DEPTH), fields)


def _csv_floats(cells: Iterable[str]) -> list[object]:
    """Numeric CSV cells: ``float(cell)``; blank → ``None``; unparsable → the raw string."""
    cells = list(cells)
    try:
        return list(map(float, cells))
    except ValueError:
        pass
    values: list[object] = []
    for cell in cells:
        try:
            values.append(float(cell))
        except ValueError:
            values.append(None if not cell.strip() else cell)
    return values


def _csv_strings(cells: Iterable[str]) -> list[object]:
    """Non-numeric CSV cells: the raw string; empty → ``None``."""
    values: list[object] = list(cells)
    if "" in values:
        values = [cell if cell != "" else None for cell in values]
    return values


def _csv_record_line(path: Path, record_index: int) -> int:
    """The line on which data record ``record_index`` (from 0) of a CSV file ends."""
    with path.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream, strict=True)
        next(reader)
        for index, _ in enumerate(filter(None, reader)):
            if index == record_index:
                break
        return reader.line_num


def _utf8_error_in_file(path: Path) -> BodyError:
    """The error naming the first invalid UTF-8 byte of a file, found line by line."""
    offset = 0
    with path.open("rb") as stream:
        for line_index, line in enumerate(stream):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                src = _file_source(path, line, line_index + 1, offset)
                return src.bad_utf8(exc.start)
            offset += len(line)
    return BodyError(f"{path}: invalid UTF-8")


def _iter_csv_file(
    path: Path, fields: tuple[str, ...], numeric: frozenset[str], chunk_rows: int
) -> Iterator[Batch]:
    reader = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream, strict=True)
            header = next(reader, None)
            if not header:
                raise BodyError(f"{path}: line 1: expected a header row")
            width = len(header)
            for name in fields:
                if header.count(name) > 1:
                    raise BodyError(f"{path}: line 1: column {name!r} appears more than once")
            positions = {name: header.index(name) for name in fields if name in header}
            n_unrequested = width - len(positions)
            take = itemgetter(*positions.values()) if positions else None
            records = filter(None, reader)  # a blank line is not a record
            records_before = 0
            while chunk := list(islice(records, chunk_rows)):
                if set(map(len, chunk)) != {width}:
                    index = next(i for i, record in enumerate(chunk) if len(record) != width)
                    line = _csv_record_line(path, records_before + index)
                    n_cells = len(chunk[index])
                    raise BodyError(
                        f"{path}: line {line}: {n_cells} cell{'' if n_cells == 1 else 's'}, "
                        f"expected {width} (as the header)"
                    )
                n_rows = len(chunk)
                if take is None:
                    cells_by_field: list[Iterable[str]] = []
                elif len(positions) == 1:
                    cells_by_field = [map(take, chunk)]
                else:
                    cells_by_field = list(zip(*map(take, chunk), strict=True))
                columns: dict[str, list[object]] = {}
                for name, cells in zip(positions, cells_by_field, strict=True):
                    columns[name] = _csv_floats(cells) if name in numeric else _csv_strings(cells)
                batch_columns: dict[str, list[object]] = {
                    name: columns[name] if name in columns else [None] * n_rows for name in fields
                }
                yield Batch(n_rows, batch_columns, n_unrequested * n_rows)
                records_before += n_rows
    except UnicodeDecodeError:
        raise _utf8_error_in_file(path) from None
    except csv.Error as exc:
        line = reader.line_num if reader is not None else 1
        raise BodyError(f"{path}: line {line}: invalid CSV ({exc})") from None


def iter_table_chunks(
    path: Path | str,
    fields: Sequence[str],
    *,
    format: str | None = None,
    numeric_fields: Collection[str] = (),
    chunk_rows: int = 10_000,
) -> Iterator[Batch]:
    """Read a reference or replay file in batches of at most ``chunk_rows`` rows.

    The format is ``format`` (``"csv"``, ``"ndjson"`` or ``"json"``) or, when
    that is ``None``, the file's suffix (see :data:`TABLE_FORMATS`).

    CSV: the first line is the header; a blank line is not a row; every row
    must have the header's number of cells. A cell of a ``numeric_fields``
    field is ``float(cell)``, ``None`` when blank (missing) and the raw string
    when unparsable (which the binner counts as invalid); any other field's
    cell is the raw string, ``None`` when empty. A requested field that is not
    in the header is all ``None``; cells of other columns count as unknown.

    NDJSON and JSON: the same rules as :func:`parse_body`; ``numeric_fields``
    plays no part (JSON values carry their type). CSV and NDJSON files are
    streamed; a JSON file is read whole, then cut into batches.

    Arguments are checked at once (``ValueError`` naming the argument); the
    file is read as the batches are consumed, so a :class:`BodyError` (message
    prefixed with the path) or ``OSError`` may come after some batches. A file
    of no rows yields no batch; an empty CSV file (no header) and an empty
    JSON file are errors.
    """
    path = Path(path)
    names = _check_fields(fields)
    numeric = frozenset(_check_fields(tuple(numeric_fields), "numeric_fields"))
    stray = sorted(numeric - set(names))
    if stray:
        raise ValueError(f"numeric_fields: {stray[0]!r} is not one of fields")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected an int >= 1, got {chunk_rows!r}")
    kind = _table_format(path, format)
    if kind == "csv":
        return _iter_csv_file(path, names, numeric, chunk_rows)
    if kind == "ndjson":
        return _iter_ndjson_file(path, names, chunk_rows)
    return _iter_json_file(path, names, chunk_rows)


def read_table(
    path: Path | str,
    fields: Sequence[str],
    *,
    format: str | None = None,
    numeric_fields: Collection[str] = (),
) -> Batch:
    """Read a whole reference or replay file into one :class:`Batch`.

    The rules are :func:`iter_table_chunks`'s. A file of no rows gives a
    batch of ``n_rows == 0``. Raises :class:`BodyError` (with the path and
    line) for content that does not parse, ``OSError`` when the file cannot be
    read and ``ValueError`` for a wrong argument.
    """
    names = _check_fields(fields)
    chunks = iter_table_chunks(
        path,
        names,
        format=format,
        numeric_fields=numeric_fields,
        chunk_rows=_READ_TABLE_CHUNK_ROWS,
    )
    first = next(chunks, None)
    if first is None:
        return Batch(n_rows=0, columns={name: [] for name in names}, unknown_fields=0)
    second = next(chunks, None)
    if second is None:
        return first
    # File chunks hold lists only (parse_body alone makes arrays).
    columns = {
        name: cast(list[object], values) + cast(list[object], second.columns[name])
        for name, values in first.columns.items()
    }
    n_rows = first.n_rows + second.n_rows
    unknown = first.unknown_fields + second.unknown_fields
    del first, second
    for chunk in chunks:
        for name, values in chunk.columns.items():
            columns[name].extend(values)
        n_rows += chunk.n_rows
        unknown += chunk.unknown_fields
    return Batch(n_rows=n_rows, columns=columns, unknown_fields=unknown)
