"""Columnar reading through Apache Arrow: data files and Arrow IPC bodies into batches.

Reference files, ``driftmon reference build``, ``driftmon replay`` and
``application/vnd.apache.arrow.stream`` ingest bodies come through here. Each
Arrow column is turned into what the binners take, under the type rules of
docs/configuration.md#bins mapped from Arrow types:

- numeric feature: integer, floating and decimal columns are numbers (a
  float64 array, null → NaN, so missing; ±inf stay infinite); a dictionary
  column is decoded first; any other type (boolean, string, temporal, binary,
  nested) is ``invalid`` for each non-null value and ``missing`` for null;
- categorical feature: string, integer and boolean columns (plain or
  dictionary-encoded) become a :class:`~driftmon.coded.CodedColumn`, whose
  distinct values are matched by their canonical text (``3``, ``true``) once
  each, never one Python string per row; a floating column is ``missing``
  for null and NaN and ``invalid`` otherwise; any other type as above.

CSV cells follow the CSV rules of docs/configuration.md#bins: a numeric
feature's cell is parsed as a float (empty → missing, unparsable → invalid:
the column is then converted cell by cell with Python's ``float``, exactly as
before), any other cell is its text (empty → missing). NDJSON goes through
Arrow's JSON reader when its types settle the docs/configuration.md#bins
rules, and through the exact row parser (:mod:`driftmon.sources`) otherwise
(mixed types in a column, non-standard ``NaN`` literals, a floating column for
a categorical feature, where an integer may have been widened); JSON files
always take the row parser.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from driftmon.coded import INVALID, MISSING, CodedColumn, FloatChunks
from driftmon.sources.files import read_table
from driftmon.sources.jsonrows import Batch
from driftmon.sources.jsontext import BodyError
from driftmon.sources.media import ARROW_STREAM_MEDIA_TYPE, DATA_FORMATS, FILE_FORMATS, file_format

__all__ = [
    "ARROW_STREAM_MEDIA_TYPE",
    "FILE_FORMATS",
    "feature_values",
    "file_format",
    "iter_batches",
    "parse_arrow_body",
    "read_arrow_table",
    "read_batch",
]


FORMATS: Final = DATA_FORMATS

_MAX_BODY_EXPANSION: Final = 64


# --- Arrow columns under the bin rules (docs/configuration.md) ------------------------------


def _null_or_invalid(
    column: pa.ChunkedArray | pa.Array, invalid: pa.Array | None = None
) -> CodedColumn:
    """Every value ``invalid`` (where ``invalid`` is true, or wherever not null) or missing."""
    if invalid is None:
        invalid = pc.is_valid(column)
    flags = np.asarray(invalid.to_numpy(zero_copy_only=False), dtype=bool)
    return CodedColumn(np.where(flags, np.int32(INVALID), np.int32(MISSING)).astype(np.int32), ())


def _is_number_type(arrow_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_decimal(arrow_type)
        or pa.types.is_null(arrow_type)
    )


def _numeric_values(
    column: pa.ChunkedArray, chunked: bool = False
) -> np.ndarray | CodedColumn | FloatChunks:
    arrow_type = column.type
    if pa.types.is_dictionary(arrow_type):
        if not _is_number_type(arrow_type.value_type):
            return _null_or_invalid(column)
        column = column.cast(arrow_type.value_type)
        arrow_type = column.type
    if not _is_number_type(arrow_type):
        return _null_or_invalid(column)
    if arrow_type != pa.float64():
        # Unsafe: a big int64 or a decimal rounds to the nearest double, as float() does.
        column = pc.cast(column, pa.float64(), safe=False)
    if column.null_count:
        column = pc.fill_null(column, math.nan)
    if column.num_chunks == 1:
        return column.chunk(0).to_numpy(zero_copy_only=False)
    if chunked:
        # Row groups stay where Arrow put them: concatenating copies every value.
        return FloatChunks([chunk.to_numpy(zero_copy_only=False) for chunk in column.chunks])
    return column.to_numpy()


def _chunk_codes(chunk: pa.DictionaryArray, offset: int) -> np.ndarray:
    indices = chunk.indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    codes = indices.to_numpy(zero_copy_only=False).astype(np.int32)
    if offset:
        codes[codes >= 0] += offset
    return codes


def _categorical_values(column: pa.ChunkedArray) -> CodedColumn:
    arrow_type = column.type
    if pa.types.is_floating(arrow_type):
        # docs/configuration.md#bins: floats are not categories; NaN, like null, is missing.
        return _null_or_invalid(column, pc.fill_null(pc.invert(pc.is_nan(column)), False))
    if pa.types.is_null(arrow_type):
        return CodedColumn(np.full(len(column), MISSING, dtype=np.int32), ())
    if pa.types.is_decimal(arrow_type):
        return _null_or_invalid(column)
    if not pa.types.is_dictionary(arrow_type):
        if not (
            pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type)
            or pa.types.is_string_view(arrow_type)
            or pa.types.is_integer(arrow_type)
            or pa.types.is_boolean(arrow_type)
        ):
            return _null_or_invalid(column)  # binary, temporal, nested
        column = pc.dictionary_encode(column)
    values: list[object] = []
    parts: list[np.ndarray] = []
    for chunk in column.chunks:
        parts.append(_chunk_codes(chunk, len(values)))
        # Only the distinct values become Python objects; a dictionary of floats or
        # of nested values is matched by the bin rules like any other value.
        values.extend(chunk.dictionary.to_pylist())
    codes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return CodedColumn(codes.astype(np.int32, copy=False), values)


def feature_values(
    column: pa.ChunkedArray | pa.Array, numeric: bool, *, chunked: bool = False
) -> np.ndarray | CodedColumn | FloatChunks | list[object]:
    """One Arrow column as the binner takes it for a numeric or a categorical feature.

    With ``chunked``, a numeric column of several chunks comes back as
    :class:`~driftmon.coded.FloatChunks`, uncopied. A run-end encoded column
    is decoded first. A type Arrow cannot convert
    as above is decoded to Python values, to which the binner applies docs/configuration.md#bins as
    to JSON values; one that cannot even be decoded is a
    :class:`~driftmon.sources.BodyError`.
    """
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column], type=column.type)
    try:
        if pa.types.is_run_end_encoded(column.type):
            column = pc.run_end_decode(column)
        return _numeric_values(column, chunked) if numeric else _categorical_values(column)
    except pa.ArrowException:
        pass
    try:
        decoded: list[object] = column.to_pylist()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise BodyError(f"a column of type {column.type} cannot be read ({exc})") from None
    return decoded


def _time_values(column: pa.ChunkedArray) -> Sequence[object] | np.ndarray:
    """A ``time_field`` column: epoch seconds for Arrow timestamps and dates (NaN for null),
    else the decoded values (epoch seconds or RFC 3339 text, read by the replay)."""
    if pa.types.is_date(column.type):
        column = pc.cast(column, pa.timestamp("s"))
    if not pa.types.is_timestamp(column.type):
        return column.to_pylist()
    per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[column.type.unit]
    ticks = pc.cast(column, pa.int64())
    valid = np.asarray(pc.is_valid(ticks).to_numpy(zero_copy_only=False), dtype=bool)
    seconds = pc.fill_null(ticks, 0).to_numpy().astype(np.float64) / per_second
    seconds[~valid] = math.nan
    return seconds


def table_batch(
    table: pa.Table,
    fields: Sequence[str],
    numeric_fields: Collection[str],
    other_fields: Collection[str] = (),
    *,
    where: str = "body",
    chunked: bool = False,
) -> Batch:
    """The batch of ``fields`` of ``table`` (an absent field is all missing).

    Fields in ``numeric_fields`` are numeric features, ``other_fields`` are
    taken as decoded values (a ``time_field``), the rest are categorical.
    Values in columns that are not requested count as unknown fields.
    """
    names = table.column_names
    for name in fields:
        if names.count(name) > 1:
            raise BodyError(f"{where}: column {name!r} appears more than once")
    n_rows = table.num_rows
    columns: dict[str, Sequence[object] | np.ndarray] = {}
    for name in fields:
        if name not in names:
            columns[name] = [None] * n_rows
        elif name in other_fields and name not in numeric_fields:
            columns[name] = _time_values(table.column(name))
        else:
            try:
                columns[name] = feature_values(
                    table.column(name), name in numeric_fields, chunked=chunked
                )
            except BodyError as exc:
                raise BodyError(f"{where}: column {name!r}: {exc}") from None
    wanted = set(fields)
    unknown = sum(
        n_rows - table.column(i).null_count for i, name in enumerate(names) if name not in wanted
    )
    return Batch(n_rows=n_rows, columns=columns, unknown_fields=unknown)


# --- Arrow IPC bodies -----------------------------------------------------------------------


def parse_arrow_body(
    body: bytes, fields: Sequence[str], numeric_fields: Collection[str] = ()
) -> Batch:
    """Decode an Arrow IPC stream body into a batch (see the module docstring for the types).

    Raises :class:`~driftmon.sources.BodyError` (nothing applied) for bytes that
    are not an Arrow IPC stream, a requested column given twice, or a
    compressed body that expands past 64 times its size.
    """
    if not body:
        raise BodyError("empty body")
    batches: list[pa.RecordBatch] = []
    expanded = 0
    try:
        reader = pa_ipc.open_stream(pa.py_buffer(body))
        for record_batch in reader:
            expanded += record_batch.nbytes
            if expanded > _MAX_BODY_EXPANSION * len(body) + (1 << 20):
                raise BodyError(
                    f"body: the Arrow stream expands to over {_MAX_BODY_EXPANSION} times "
                    "its size; send smaller requests"
                )
            batches.append(record_batch)
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, BodyError):
            raise
        raise BodyError(f"body: invalid Arrow IPC stream ({exc})") from None
    return table_batch(table, fields, numeric_fields)


# --- files ----------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as stream:
        try:
            header = next(csv.reader(stream, strict=True), None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BodyError(f"{path}: line 1: invalid CSV header ({exc})") from None
    if not header:
        raise BodyError(f"{path}: line 1: expected a header row")
    return header


def _csv_error(path: Path, width: int, exc: Exception) -> BodyError:
    """The error for a CSV file Arrow refused, naming the first record of the wrong width."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream, strict=True)
            for record in reader:
                if record and len(record) != width:
                    n_cells = len(record)
                    return BodyError(
                        f"{path}: line {reader.line_num}: {n_cells} "
                        f"cell{'' if n_cells == 1 else 's'}, expected {width} (as the header)"
                    )
    except (csv.Error, UnicodeDecodeError) as error:
        return BodyError(f"{path}: invalid CSV ({error})")
    return BodyError(f"{path}: invalid CSV ({exc})")


def _python_floats(column: pa.ChunkedArray) -> list[object]:
    """The CSV rule cell by cell: ``float(cell)``; blank → missing; unparsable → the text."""
    values: list[object] = []
    for cell in column.to_pylist():
        if cell is None:
            values.append(None)
            continue
        try:
            values.append(float(cell))
        except ValueError:
            values.append(None if not cell.strip() else cell)
    return values


def _read_csv_table(path: Path, column_types: dict[str, pa.DataType]) -> pa.Table:
    return pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=column_types,
            include_columns=list(column_types),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _read_csv(
    path: Path,
    fields: Sequence[str],
    numeric: Collection[str],
    other: Collection[str],
    chunked: bool = False,
) -> Batch:
    header = _csv_header(path)
    for name in fields:
        if header.count(name) > 1:
            raise BodyError(f"{path}: line 1: column {name!r} appears more than once")
    present = [name for name in fields if name in header]
    text = pa.string()
    coded = pa.dictionary(pa.int32(), pa.string())
    types = {
        name: pa.float64() if name in numeric else text if name in other else coded
        for name in present
    }
    slow: list[str] = []
    try:
        try:
            table = _read_csv_table(path, types)
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc):
                raise
            # A numeric cell that Arrow does not parse: read those columns as text
            # and take Python's float() on them, so every cell means what it did.
            slow = [name for name in present if name in numeric]
            table = _read_csv_table(path, {**types, **dict.fromkeys(slow, text)})
    except pa.ArrowInvalid as exc:
        raise _csv_error(path, len(header), exc) from None
    batch = table_batch(table, fields, numeric, other, where=str(path), chunked=chunked)
    columns = dict(batch.columns)
    for name in slow:
        columns[name] = _python_floats(table.column(name))
    unknown = (len(header) - len(present)) * batch.n_rows
    return Batch(n_rows=batch.n_rows, columns=columns, unknown_fields=unknown)


def _json_types_settle(table: pa.Table, fields: Sequence[str], numeric: Collection[str]) -> bool:
    """Whether Arrow's JSON types carry the bin rules' meaning: no float column for a categorical
    field (Arrow widens a column of ints and floats to floats, and an int matches its text)."""
    return not any(
        pa.types.is_floating(table.column(name).type)
        for name in fields
        if name in table.column_names and name not in numeric
    )


def read_arrow_table(path: Path | str, data_format: str | None = None) -> pa.Table:
    """The whole file as an Arrow table, every column as its format types it (``driftmon init``).

    A JSON file (an array of row objects, or ``{"columns": {...}}``) is decoded
    by the row parser and its columns typed by Arrow.
    """
    path = Path(path)
    kind = file_format(path, data_format)
    try:
        if kind == "parquet":
            return pq.read_table(path)
        if kind == "arrow":
            return _read_ipc(path)
        if kind == "csv":
            return pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(newlines_in_values=True))
        if kind == "ndjson":
            return pa_json.read_json(path)
    except pa.ArrowException as exc:
        raise BodyError(f"{path}: cannot read as {kind} ({exc})") from None
    import orjson

    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"{path}: invalid JSON ({exc})") from None
    try:
        if isinstance(document, dict) and isinstance(document.get("columns"), dict):
            return pa.table(document["columns"])
        if isinstance(document, list):
            return pa.Table.from_pylist(document)
    except (pa.ArrowException, TypeError, AttributeError) as exc:
        raise BodyError(f"{path}: cannot type the JSON columns ({exc})") from None
    raise BodyError(f'{path}: expected an array of row objects or {{"columns": {{...}}}}')


def _read_ipc(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """An Arrow IPC file (Feather v2) or, failing that, an IPC stream file."""
    try:
        with pa.memory_map(str(path)) as source:
            table = pa_ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(path)) as source:
            table = pa_ipc.open_stream(source).read_all()
    return table if columns is None else table.select(list(columns))


def read_batch(
    path: Path | str,
    fields: Sequence[str],
    *,
    format: str | None = None,
    numeric_fields: Collection[str] = (),
    other_fields: Collection[str] = (),
    chunked: bool = False,
) -> Batch:
    """Read a reference or replay file (Parquet, Arrow IPC / Feather, CSV, NDJSON, JSON).

    ``fields`` are the columns to read (a missing one is all ``missing``),
    ``numeric_fields`` the numeric features among them, ``other_fields``
    fields taken as decoded values (a ``time_field``); the rest are
    categorical features. With ``chunked``, numeric columns of several
    chunks (Parquet row groups, CSV blocks) come as
    :class:`~driftmon.coded.FloatChunks` (the reference loader's way to skip
    a copy). Raises :class:`~driftmon.sources.BodyError` (message
    starting with the path) for content that cannot be read, ``OSError`` for
    a file that cannot be opened and ``ValueError`` for an unknown format.
    """
    path = Path(path)
    kind = file_format(path, format)
    names = list(fields)
    if kind == "csv":
        return _read_csv(path, names, numeric_fields, other_fields, chunked)
    if kind in ("parquet", "arrow"):
        try:
            if kind == "parquet":
                schema_names = pq.read_schema(path).names
                table = pq.read_table(path, columns=[n for n in names if n in schema_names])
                unknown = (len(schema_names) - table.num_columns) * table.num_rows
            else:
                table = _read_ipc(path)
                unknown = None
        except pa.ArrowException as exc:
            raise BodyError(f"{path}: cannot read as {kind} ({exc})") from None
        batch = table_batch(
            table, names, numeric_fields, other_fields, where=str(path), chunked=chunked
        )
        if unknown is None:
            return batch
        return Batch(n_rows=batch.n_rows, columns=batch.columns, unknown_fields=unknown)
    if kind == "ndjson":
        try:
            table = pa_json.read_json(path)
        except pa.ArrowException:
            table = None  # mixed types, NaN literals, bad lines: the exact row parser decides
        if table is not None and _json_types_settle(table, names, numeric_fields):
            return table_batch(table, names, numeric_fields, other_fields, where=str(path))
    csv_numeric = [name for name in names if name in numeric_fields]
    return read_table(path, names, format=kind, numeric_fields=csv_numeric)


def iter_batches(
    path: Path | str,
    fields: Sequence[str],
    *,
    format: str | None = None,
    numeric_fields: Collection[str] = (),
    other_fields: Collection[str] = (),
    chunk_rows: int = 10_000,
) -> Iterator[Batch]:
    """:func:`read_batch`'s batch in slices of at most ``chunk_rows`` rows (replay)."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected an int >= 1, got {chunk_rows!r}")
    batch = read_batch(
        path, fields, format=format, numeric_fields=numeric_fields, other_fields=other_fields
    )
    for start in range(0, batch.n_rows, chunk_rows):
        stop = min(start + chunk_rows, batch.n_rows)
        yield Batch(
            n_rows=stop - start,
            columns={name: values[start:stop] for name, values in batch.columns.items()},
            unknown_fields=0 if start else batch.unknown_fields,
        )
