"""Model-server payloads inside a CloudEvent into batches of columns.

KServe V1 (``instances``/``predictions``), the Open Inference Protocol (V2:
``inputs``/``outputs`` tensors, by name or by position) and Seldon Core's
own protocol (``data.ndarray``/``data.tensor``). The mapping rules are in
docs/cloudevents.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from driftmon.sources.jsonrows import Batch
from driftmon.sources.jsontext import BodyError
from driftmon.sources.jsontext import json_type as _json_type

__all__ = ["CloudEventError", "Side", "payload_batch"]

Side = Literal["inputs", "outputs"]


class CloudEventError(BodyError):
    """A request that is not a well-formed CloudEvent (or batch of them); nothing applied.

    The message names the field at fault: a header (``ce-type``), a member
    of a structured event (``type``, ``events[2].id``), or a place in the
    payload (``data.instances[3]``, ``events[0].data.inputs[1].shape``).
    ``status`` is the HTTP answer (400, or 415 for a structured format that
    is not JSON); ``dropped`` counts the request's events by drop reason.
    """

    def __init__(
        self, message: str, *, status: int = 400, dropped: Mapping[str, int] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.dropped: Counter[str] = Counter(dropped or {"bad_payload": 1})


def _v1_columns(
    rows: list[object], features: tuple[str, ...], where: str
) -> tuple[list[list[object]], int]:
    """Columns (one per feature) and the count of unknown values of V1 rows."""
    width = len(features)
    if all(type(row) is list and len(row) == width for row in rows):
        if not rows:
            return [[] for _ in features], 0
        return [list(column) for column in zip(*rows, strict=True)], 0
    if width == 1 and not any(type(row) is list or type(row) is dict for row in rows):
        return [list(rows)], 0
    columns: list[list[object]] = [[] for _ in features]
    positions = {name: j for j, name in enumerate(features)}
    unknown = 0
    for index, row in enumerate(rows):
        if type(row) is list:
            for j in range(width):
                columns[j].append(row[j] if j < len(row) else None)
            unknown += max(0, len(row) - width)
        elif type(row) is dict:
            for j, name in enumerate(features):
                columns[j].append(row.get(name))
            unknown += sum(1 for key in row if key not in positions)
        elif width == 1:
            columns[0].append(row)
        else:
            raise CloudEventError(
                f"{where}[{index}]: a {_json_type(row)} row gives one value, and this side "
                f"maps {width} features ({', '.join(features)}): send arrays or objects"
            )
    return columns, unknown


def _flatten(values: list[object]) -> list[object]:
    """Nested arrays of tensor data in row-major order (an already flat list as is)."""
    if not any(type(value) is list for value in values):
        return values
    flat: list[object] = []
    stack = [iter(values)]
    while stack:
        for value in stack[-1]:
            if type(value) is list:
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    data: list[object]
    where: str

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def flat(self) -> list[object]:
        """The elements in row-major order, checked against the shape."""
        flat = _flatten(self.data)
        expected = math.prod(self.shape)
        if len(flat) != expected:
            raise CloudEventError(
                f"{self.where}.data: {len(flat)} values, shape {list(self.shape)} holds {expected}"
            )
        if expected == 0 and self.rows > 0:
            # A [rows, 0] tensor claims rows without a single value: a few bytes could
            # otherwise make the daemon allocate (and bin) billions of missing rows.
            raise CloudEventError(
                f"{self.where}.shape: {list(self.shape)} gives {self.rows} rows and no values"
            )
        return flat


def _tensor(value: object, where: str) -> _Tensor:
    if not isinstance(value, dict):
        raise CloudEventError(f"{where}: expected a tensor object, got {_json_type(value)}")
    for key in ("name", "shape", "datatype", "data"):
        if key not in value:
            raise CloudEventError(
                f"{where}.{key}: missing (a V2 tensor has name, shape, datatype, data)"
            )
    name, shape, datatype, data = value["name"], value["shape"], value["datatype"], value["data"]
    if not isinstance(name, str):
        raise CloudEventError(f"{where}.name: expected a string, got {_json_type(name)}")
    if not isinstance(datatype, str):
        raise CloudEventError(f"{where}.datatype: expected a string, got {_json_type(datatype)}")
    if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise CloudEventError(f"{where}.shape: expected an array of non-negative integers")
    if not isinstance(data, list):
        raise CloudEventError(f"{where}.data: expected an array, got {_json_type(data)}")
    return _Tensor(name, tuple(shape), data, where)


def _v2_columns(
    tensors: list[object], features: tuple[str, ...], where: str
) -> tuple[int, list[list[object] | None], int]:
    """Rows, columns (``None``: all missing) and unknown values of V2 tensors."""
    parsed = [_tensor(value, f"{where}[{index}]") for index, value in enumerate(tensors)]
    positions = {name: j for j, name in enumerate(features)}
    columns: list[list[object] | None] = [None] * len(features)
    rows: int | None = None
    first: _Tensor | None = None

    def agree(tensor: _Tensor) -> None:
        nonlocal rows, first
        if rows is None:
            rows, first = tensor.rows, tensor
        elif tensor.rows != rows:
            assert first is not None
            raise CloudEventError(
                f"{tensor.where}.shape: {tensor.rows} rows, {first.where} has {rows}"
            )

    unknown = 0
    if any(tensor.name in positions for tensor in parsed):
        for tensor in parsed:
            j = positions.get(tensor.name)
            if j is None:
                unknown += tensor.rows  # one ignored value per row
                continue
            if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
                raise CloudEventError(
                    f"{tensor.where}.shape: {list(tensor.shape)}; a tensor named after "
                    f"feature {tensor.name!r} must be [rows] or [rows, 1]"
                )
            if columns[j] is not None:
                raise CloudEventError(f"{tensor.where}.name: {tensor.name!r} is given twice")
            agree(tensor)
            columns[j] = tensor.flat()
        return rows or 0, columns, unknown
    filled = 0
    for tensor in parsed:
        if len(tensor.shape) not in (1, 2):
            raise CloudEventError(
                f"{tensor.where}.shape: {list(tensor.shape)}; tensors map by position as "
                f"[rows] or [rows, columns] (or name a tensor after a feature)"
            )
        agree(tensor)
        flat = tensor.flat()
        width = 1 if len(tensor.shape) == 1 else tensor.shape[1]
        # Only the columns that feed a feature are visited: a [0, 10**12] shape holds no
        # values, and a loop over its width would hold a worker (and the GIL) for hours.
        used = min(width, len(columns) - filled)
        for k in range(used):
            columns[filled] = flat if width == 1 else flat[k::width]
            filled += 1
        unknown += tensor.rows * (width - used)
    return rows or 0, columns, unknown


def _seldon_rows(data: dict[str, object], features: tuple[str, ...], where: str) -> list[object]:
    """Rows of a Seldon Core protocol ``data`` object (the same on requests and responses).

    ``ndarray`` holds the rows (lists by position, or scalars); ``tensor`` a
    row-major ``values`` list with a ``shape`` of ``[rows]`` or ``[rows,
    cols]``. When ``names`` lists a feature name, row values map by name;
    otherwise by position, as V1 rows do.
    """
    rows: list[object]
    if "ndarray" in data:
        ndarray = data["ndarray"]
        if not isinstance(ndarray, list):
            raise CloudEventError(f"{where}.ndarray: expected an array, got {_json_type(ndarray)}")
        rows = ndarray
    else:
        tensor = data["tensor"]
        if not isinstance(tensor, dict):
            raise CloudEventError(f"{where}.tensor: expected an object, got {_json_type(tensor)}")
        shape, values = tensor.get("shape"), tensor.get("values")
        if not isinstance(values, list):
            raise CloudEventError(f"{where}.tensor.values: expected an array")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(type(n) is int and n >= 0 for n in shape)
        ):
            raise CloudEventError(f"{where}.tensor.shape: expected [rows] or [rows, columns]")
        width = shape[1] if len(shape) == 2 else 1
        if shape[0] * width != len(values) or (width == 0 and shape[0] > 0):
            raise CloudEventError(
                f"{where}.tensor.values: {len(values)} values, shape {shape} holds "
                f"{shape[0] * width}"
            )
        rows = (
            list(values)
            if len(shape) == 1
            else [values[i * width : (i + 1) * width] for i in range(shape[0])]
        )
    names = data.get("names")
    if isinstance(names, list) and any(name in features for name in names):
        named: list[object] = []
        for index, row in enumerate(rows):
            cells = row if isinstance(row, list) else [row]
            if len(cells) > len(names):
                raise CloudEventError(
                    f"{where}.ndarray[{index}]: {len(cells)} values for {len(names)} names"
                )
            named.append(dict(zip((str(n) for n in names), cells, strict=False)))
        return named
    return rows


def payload_batch(
    payload: object, side: Side, features: tuple[str, ...], where: str = "data"
) -> Batch:
    """The rows of one decoded payload, as a :class:`~driftmon.sources.Batch` over ``features``.

    ``side`` ``"inputs"`` reads a request (V1 ``instances``, V2 ``inputs``),
    ``"outputs"`` a response (``predictions``, ``outputs``); see the module
    docstring for the row and tensor rules. The batch's ``columns`` hold
    exactly ``features``, ``None`` for a missing value. Raises
    :class:`CloudEventError` naming the place under ``where``.
    """
    if not isinstance(payload, dict):
        raise CloudEventError(f"{where}: expected a JSON object, got {_json_type(payload)}")
    v1_key, v2_key = ("instances", "inputs") if side == "inputs" else ("predictions", "outputs")
    if v1_key in payload and v2_key in payload:
        raise CloudEventError(f"{where}: both {v1_key!r} (V1) and {v2_key!r} (V2); send one")
    if v1_key in payload:
        rows = payload[v1_key]
        if not isinstance(rows, list):
            raise CloudEventError(f"{where}.{v1_key}: expected an array, got {_json_type(rows)}")
        v1_columns, unknown = _v1_columns(rows, features, f"{where}.{v1_key}")
        return Batch(len(rows), dict(zip(features, v1_columns, strict=True)), unknown)
    if v2_key in payload:
        tensors = payload[v2_key]
        if not isinstance(tensors, list):
            raise CloudEventError(f"{where}.{v2_key}: expected an array, got {_json_type(tensors)}")
        n_rows, v2_columns, unknown = _v2_columns(tensors, features, f"{where}.{v2_key}")
        columns: dict[str, list[object]] = {
            name: column if column is not None else [None] * n_rows
            for name, column in zip(features, v2_columns, strict=True)
        }
        return Batch(n_rows, columns, unknown)
    seldon = payload.get("data")
    if isinstance(seldon, dict) and ("ndarray" in seldon or "tensor" in seldon):
        seldon_rows = _seldon_rows(seldon, features, f"{where}.data")
        seldon_columns, unknown = _v1_columns(seldon_rows, features, f"{where}.data")
        return Batch(len(seldon_rows), dict(zip(features, seldon_columns, strict=True)), unknown)
    kind = "request" if side == "inputs" else "response"
    raise CloudEventError(
        f"{where}: a {kind} payload has {v1_key!r} (V1), {v2_key!r} (V2) or Seldon's "
        f'"data": {{"ndarray" | "tensor"}}; '
        f"got keys {sorted(payload)[:8]}"
    )
