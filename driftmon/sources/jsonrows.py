"""JSON and NDJSON documents of row objects or ``columns`` into a :class:`Batch`.

What rows bodies and data files share: checked rows or columns, one list per
requested field, and float64 arrays for numeric fields the raw bytes prove
are numbers only (:func:`numbers_only`). No media types, no HTTP.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import itemgetter
from typing import Final, cast

import numpy as np
import orjson

from driftmon.sources.jsontext import (
    BodyError,
    Source,
    check_depth,
    field_ref,
    json_type,
    load_document,
    strip_bom,
)

__all__ = [
    "Batch",
    "check_fields",
    "columns_to_batch",
    "decode_json",
    "decode_ndjson",
    "rows_to_batch",
    "rows_with_number_arrays",
    "numbers_only",
    "with_number_arrays",
]

_LINE_BLANKS: Final = b" \t\r\n"
_MESSAGE_NAME_CHARS: Final = 60  # how much of a name a message shows


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


# --- rows and columns into a Batch -------------------------------------------------


def _require_row_objects(rows: list[object], where: Callable[[int], str]) -> None:
    """Raise unless every row is a JSON object; ``where(i)`` names row ``i``."""
    if rows and set(map(type, rows)) != {dict}:
        index = next(i for i, row in enumerate(rows) if type(row) is not dict)
        raise BodyError(f"{where(index)}: expected a JSON object, got {json_type(rows[index])}")


def rows_to_batch(rows: list[dict[str, object]], fields: tuple[str, ...]) -> Batch:
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


def _require_columns(src: Source, doc: dict[str, object]) -> dict[str, list[object]]:
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
        raise src.error(f"columns: expected an object of arrays, got {json_type(columns)}")
    first: str | None = None
    length = 0
    for name, column in columns.items():
        if type(column) is not list:
            raise src.error(
                f"{field_ref('columns', name)}: expected an array, got {json_type(column)}"
            )
        if first is None:
            first, length = name, len(column)
        elif len(column) != length:
            raise src.error(
                f"{field_ref('columns', name)}: length {len(column)}, expected {length} "
                f"(as {field_ref('columns', first)})"
            )
    return columns


def columns_to_batch(
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


def decode_json(src: Source, max_depth: int) -> list[dict[str, object]] | dict[str, list[object]]:
    """A JSON body or file: its checked row objects, or its checked ``columns`` object."""
    work = strip_bom(src)
    doc, depth_checked = load_document(src, work, 0, max_depth)
    if type(doc) is list:
        _require_row_objects(doc, lambda index: f"{src.prefix}row {index + 1}")
        if not depth_checked:
            check_depth(src, work, max_depth, 1 + len(doc), 2 if doc else 1)
        return doc
    if type(doc) is dict:
        columns = _require_columns(src, doc)
        if not depth_checked:
            check_depth(src, work, max_depth, 2 + len(columns), 3 if columns else 2)
        return columns
    raise src.whole(
        f'expected a JSON array of row objects or {{"columns": {{...}}}}, got {json_type(doc)}'
    )


def decode_ndjson(src: Source, max_depth: int) -> list[dict[str, object]]:
    """The row objects of NDJSON lines; blank lines are skipped, numbering kept."""
    work = strip_bom(src)
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
                row, _ = load_document(src, line.rstrip(b"\r\n"), offset, max_depth)
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
    check_depth(src, work, max_depth, len(rows), 1)
    return cast(list[dict[str, object]], rows)  # checked above: every row is a dict


def check_fields(fields: Sequence[str], argument: str = "fields") -> tuple[str, ...]:
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


def rows_with_number_arrays(
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
    batch = rows_to_batch(rows, names)
    n_rows = batch.n_rows
    if (
        numeric
        and n_rows
        and batch.unknown_fields == 0
        # With no unknown field, this many keys means that each row holds every field.
        and sum(map(len, rows)) == n_rows * len(names)
        and numbers_only(body, objects=n_rows, arrays=arrays, keys=names, times=n_rows)
    ):
        return with_number_arrays(batch, numeric)
    return batch


_COUNTED_BYTES: Final = tuple(b'\\"{[tfn')


def numbers_only(
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


def with_number_arrays(batch: Batch, names: Sequence[str]) -> Batch:
    """``batch`` with the columns ``names`` (lists of ints and floats only) as float64 arrays."""
    columns = dict(batch.columns)
    for name in names:
        columns[name] = np.fromiter(columns[name], dtype=np.float64, count=batch.n_rows)
    return Batch(n_rows=batch.n_rows, columns=columns, unknown_fields=batch.unknown_fields)
