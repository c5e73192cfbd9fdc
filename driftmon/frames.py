"""Data frames for :meth:`driftmon.client.Client.log_frame`: rows of a table, sent as Arrow.

A frame (a pandas ``DataFrame``, an Arrow ``Table`` or ``RecordBatch``)
enters the client's buffer as one :class:`FrameRow` per row, so buffering,
eviction, retries and the stats count rows exactly as for
:meth:`~driftmon.client.Client.log`. A batch made only of frame rows of one
schema is sent as an Arrow IPC stream (``application/vnd.apache.arrow.stream``,
no per-value encoding); any other batch as columnar JSON. pyarrow is
imported only here and only when a frame is logged; without it a pandas
frame is logged as row dictionaries (columnar JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

ARROW_STREAM: str = "application/vnd.apache.arrow.stream"


class FrameRow:
    """Row ``index`` of an Arrow ``table`` (kept by reference, never copied)."""

    __slots__ = ("index", "table")

    def __init__(self, table: Any, index: int) -> None:
        self.table = table
        self.index = index

    def as_dict(self) -> dict[str, Any]:
        """The row as a dictionary of Python values (for a batch sent as JSON)."""
        row: dict[str, Any] = self.table.slice(self.index, 1).to_pylist()[0]
        return row


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        return None
    return pyarrow


def frame_rows(frame: object) -> list[FrameRow] | list[dict[str, Any]]:
    """The rows of ``frame``: :class:`FrameRow` entries, or dictionaries without pyarrow.

    Raises ``TypeError`` for anything but a pandas ``DataFrame`` or an Arrow
    ``Table`` / ``RecordBatch``.
    """
    pa = _pyarrow()
    module = type(frame).__module__
    is_pandas = module.startswith("pandas") and type(frame).__name__ == "DataFrame"
    if pa is None:
        if is_pandas:
            records: list[dict[str, Any]] = frame.to_dict("records")  # type: ignore[attr-defined]
            return [{str(k): v for k, v in record.items()} for record in records]
        raise TypeError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
    if is_pandas:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    elif isinstance(frame, pa.RecordBatch):
        table = pa.Table.from_batches([frame])
    elif isinstance(frame, pa.Table):
        table = frame
    else:
        raise TypeError(
            "frame: expected a pandas DataFrame or a pyarrow Table or RecordBatch, "
            f"got {type(frame).__name__}"
        )
    return list(map(FrameRow, repeat(table, table.num_rows), range(table.num_rows)))


def _arrow_body(rows: Sequence[FrameRow]) -> bytes | None:
    """An Arrow IPC stream of ``rows`` (runs of one table sliced, not copied); ``None``
    when the rows come from tables of different schemas."""
    pa = _pyarrow()
    schema = rows[0].table.schema
    if pa is None or any(not row.table.schema.equals(schema) for row in rows):
        return None
    pieces = []
    start = 0
    for end in range(1, len(rows) + 1):
        run_ends = end == len(rows) or (
            rows[end].table is not rows[start].table
            or rows[end].index != rows[end - 1].index + 1
        )
        if run_ends:
            pieces.append(rows[start].table.slice(rows[start].index, end - start))
            start = end
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for piece in pieces:
            writer.write_table(piece)
    body: bytes = sink.getvalue().to_pybytes()
    return body


def arrow_body_or_none(batch: Sequence[object]) -> bytes | None:
    """The Arrow IPC body of a batch made only of frame rows of one schema, else ``None``."""
    rows = [row for row in batch if type(row) is FrameRow]
    if not rows or len(rows) != len(batch):
        return None
    return _arrow_body(rows)


def as_dicts(batch: Sequence[object]) -> list[dict[Any, Any]]:
    """Every row of a batch as a dictionary (frame rows decoded)."""
    return [row.as_dict() if isinstance(row, FrameRow) else dict(row) for row in batch]  # type: ignore[call-overload]
