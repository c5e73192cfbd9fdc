"""Data files (CSV with a header row, NDJSON, JSON) into batches of columns.

For ``driftmon reference build``, ``file`` references and ``driftmon replay``.
The same JSON rules and messages as ingest bodies, prefixed with the path.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Final, cast

from driftmon.sources.jsonrows import (
    Batch,
    check_fields,
    columns_to_batch,
    decode_json,
    decode_ndjson,
    rows_to_batch,
)
from driftmon.sources.jsontext import DEFAULT_MAX_DEPTH, BodyError, Source
from driftmon.sources.media import FILE_FORMATS, TEXT_FORMATS, file_format

__all__ = ["TABLE_FORMATS", "iter_table_chunks", "read_table"]

TABLE_FORMATS: Final = {s: k for s, k in FILE_FORMATS.items() if k in TEXT_FORMATS}
"""File suffix to format, for the formats this reader reads."""
"""File suffix (lower-cased) to the data format :func:`read_table` reads it as."""

_READ_TABLE_CHUNK_ROWS: Final = 65_536
_LINE_BLANKS: Final = b" \t\r\n"


def _file_source(path: Path, data: bytes, first_line: int = 1, base_offset: int = 0) -> Source:
    return Source(
        data,
        label=str(path),
        prefix=f"{path}: ",
        first_line=first_line,
        base_offset=base_offset,
        empty_message="empty file",
    )


def _iter_json_file(path: Path, fields: tuple[str, ...], chunk_rows: int) -> Iterator[Batch]:
    src = _file_source(path, path.read_bytes())
    doc = decode_json(src, DEFAULT_MAX_DEPTH)
    if isinstance(doc, list):
        for start in range(0, len(doc), chunk_rows):
            yield rows_to_batch(doc[start : start + chunk_rows], fields)
        return
    n_total = len(next(iter(doc.values()))) if doc else 0
    for start in range(0, n_total, chunk_rows):
        yield columns_to_batch(doc, fields, start, start + chunk_rows)


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
                    yield rows_to_batch(decode_ndjson(src, DEFAULT_MAX_DEPTH), fields)
                    pending, pending_rows = [], 0
        if pending_rows:
            src = _file_source(path, b"".join(pending), first_line, base_offset)
            yield rows_to_batch(decode_ndjson(src, DEFAULT_MAX_DEPTH), fields)


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
    names = check_fields(fields)
    numeric = frozenset(check_fields(tuple(numeric_fields), "numeric_fields"))
    stray = sorted(numeric - set(names))
    if stray:
        raise ValueError(f"numeric_fields: {stray[0]!r} is not one of fields")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected an int >= 1, got {chunk_rows!r}")
    kind = file_format(path, format, TEXT_FORMATS)
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
    names = check_fields(fields)
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
