"""CloudEvents ingest: model-server payload logs from KServe's or Seldon's logger.

``POST /v1/cloudevents`` (and ``POST /`` with ``ingest.cloudevents.root: true``,
so that a KServe ``logger.url`` can name the daemon's base URL) takes events
in the three modes of the CloudEvents HTTP binding, told apart by the
``Content-Type``:

- **structured**, ``application/cloudevents+json``: the body is one event, a
  JSON object whose members are its attributes; the payload is ``data`` (a
  JSON value: the payload object itself, or a string holding its JSON text)
  or ``data_base64`` (the payload's bytes in base64; with ``specversion``
  0.3, ``data`` as a base64 string with ``datacontentencoding: base64``);
- **batched**, ``application/cloudevents-batch+json``: a JSON array of
  structured events (``[]`` is a valid batch of none);
- **binary**, anything else: the attributes are ``ce-*`` headers (read
  case-insensitively, values percent-decoded as the binding prescribes) and
  the body is the payload. The body is read as JSON whatever the
  ``Content-Type`` says: the loggers copy the model request's content type,
  which clients often leave at ``application/x-www-form-urlencoded``.

Every event needs the required attributes ``specversion`` (1.0, or 0.3 as
MLServer sends), ``id``, ``source`` and ``type``. Events are not
deduplicated by ``id``: KServe gives a request and its response the same id.

Routing
-------
An event goes to the stream whose ``cloudevents.service`` equals its
``inferenceservicename`` extension and whose ``namespace``, when the stream
sets one, equals its ``namespace`` extension (a stream that names the
namespace wins over one that does not). A ``type`` ending in ``.request``
feeds the stream's ``inputs``, one ending in ``.response`` its ``outputs``
(KServe: ``org.kubeflow.serving.inference.request``; Seldon:
``io.seldon.serving.inference.request``). The event reaches exactly the
features of that side: they all get a value per row (``missing`` when the
payload lacks one), and the stream's other features are not reached at all.

Payloads
--------
- V1: ``{"instances": [...]}`` (requests) and ``{"predictions": [...]}``
  (responses). A row that is an array gives the side's features by position
  (a short row leaves the rest ``missing``; values past the last feature are
  ignored and counted as unknown fields); an object gives them by name (other
  keys ignored and counted); any other value (a number, a string, ``null``)
  is the value of the one feature when the side maps exactly one, and an
  error otherwise.
- V2 / Open Inference Protocol: ``{"inputs": [tensor, ...]}`` and
  ``{"outputs": [...]}``, each tensor ``{"name", "shape", "datatype",
  "data"}`` with ``data`` in row-major order, flat or nested. When some
  tensor is named after one of the side's features, tensors map **by name**:
  each such tensor (shape ``[rows]`` or ``[rows, 1]``) is its feature's
  column, the other tensors are ignored (one unknown field per row). Otherwise
  they map **by position**: the columns of the tensors in order (a
  ``[rows, cols]`` tensor gives ``cols`` columns, a ``[rows]`` tensor one) are
  the side's features in order, with the same short/long rule as V1 rows.
  ``BYTES`` elements are JSON strings and stay strings.
- Seldon Core's own protocol (its executor's default), on both sides:
  ``{"data": {"names": [...], "ndarray": [...]}}`` or ``{"data": {"tensor":
  {"shape": [rows, cols], "values": [...]}}}``. When ``names`` names one of
  the side's features, row values map by name; otherwise by position, as V1
  rows do.

Values are passed on as decoded; docs/configuration.md#bins classifies them when binned.

Answers and drops
-----------------
200 ``{"rows": N, "events": E, "dropped": {reason: count}}`` once the rows of
every usable event are applied. An event that feeds nothing is counted in
``driftmon_ingest_dropped_events_total{reason}`` and answered 200 with the
rest: ``no_stream`` (no stream maps its service and namespace, or it names
none), ``not_mapped`` (its type is neither a request nor a response, or the
stream maps no feature on that side). A malformed event is a 400 whose
message names the field (``ce-type``, ``events[2].data.inputs[0].shape``)
and nothing of the request is applied: every event it carried that would
have fed a stream is counted as ``bad_payload``. Structured or batched modes
in a format other than JSON are a 415. 401, 413 and 503 as for row ingest.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote

import orjson
from aiohttp import web

from driftmon.config import StreamConfig
from driftmon.daemon import Daemon, NotReady, QueueFull
from driftmon.parse import Batch, BodyError
from driftmon.server import (
    DAEMON_KEY,
    _counted,
    _error,
    _json,
    _unauthorized,
    _unavailable,
    read_body,
)

__all__ = [
    "BATCH_MEDIA_TYPE",
    "DROP_REASONS",
    "STRUCTURED_MEDIA_TYPE",
    "CloudEvent",
    "CloudEventError",
    "IngestPlan",
    "PlannedBatch",
    "Route",
    "Router",
    "event_batch",
    "ingest_cloudevents",
    "ingest_cloudevents_root",
    "payload_batch",
    "plan_request",
    "read_events",
]

STRUCTURED_MEDIA_TYPE: Final = "application/cloudevents+json"
"""``Content-Type`` of one event in structured mode."""

BATCH_MEDIA_TYPE: Final = "application/cloudevents-batch+json"
"""``Content-Type`` of a JSON array of structured events (batched mode)."""

DROP_REASONS: Final = ("no_stream", "not_mapped", "bad_payload")
"""Values of the ``reason`` label of ``driftmon_ingest_dropped_events_total``."""

SPEC_VERSIONS: Final = frozenset({"1.0", "0.3"})
"""CloudEvents versions read (0.3: what MLServer sends)."""

Side = Literal["inputs", "outputs"]

_REQUIRED: Final = ("specversion", "id", "source", "type")
_CE_PREFIX: Final = "ce-"
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


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


_ABSENT: Final = object()


@dataclass(frozen=True)
class CloudEvent:
    """One event's context attributes and extensions, and its payload (not yet decoded).

    ``attributes`` holds every attribute by its lower-case name: the
    required ``specversion``, ``id``, ``source``, ``type`` (checked non-empty
    strings), ``datacontenttype`` when given, and the extensions
    (``inferenceservicename``, ``namespace``, ``endpoint``, ``component``,
    ``modelid``, …) as strings from headers or as JSON values from a
    structured event. The payload is ``data_bytes`` (a binary body, or a
    decoded ``data_base64``) or else ``data`` (a structured event's ``data``
    member, ``None`` when absent). ``where`` prefixes messages about this
    event: ``""`` for a single event, ``"events[3]."`` in a batch.
    """

    attributes: Mapping[str, object]
    data: object = None
    data_bytes: bytes | None = None
    where: str = ""
    binary: bool = False

    @property
    def id(self) -> str:
        """The ``id`` attribute."""
        return str(self.attributes["id"])

    @property
    def type(self) -> str:
        """The ``type`` attribute, e.g. ``org.kubeflow.serving.inference.request``."""
        return str(self.attributes["type"])

    @property
    def source(self) -> str:
        """The ``source`` attribute."""
        return str(self.attributes["source"])

    @property
    def specversion(self) -> str:
        """The ``specversion`` attribute (``1.0`` or ``0.3``)."""
        return str(self.attributes["specversion"])

    def name_of(self, attribute: str) -> str:
        """How messages name ``attribute``: ``ce-type header``, ``type``, ``events[1].type``."""
        if self.binary:
            return f"{_CE_PREFIX}{attribute} header"
        return self.where + attribute

    def extension(self, name: str) -> str | None:
        """A string extension attribute, or ``None`` when absent.

        Raises :class:`CloudEventError` when a structured event gives it a
        value that is not a string.
        """
        value = self.attributes.get(name)
        if value is None or isinstance(value, str):
            return value
        raise CloudEventError(f"{self.name_of(name)}: expected a string, got {_json_type(value)}")

    def payload(self) -> object:
        """The decoded payload: JSON text from bytes or a string, or the JSON value itself.

        Raises :class:`CloudEventError` naming ``data`` for no payload, bytes
        that are not UTF-8 JSON, or a string that is not JSON text.
        """
        where = self.where + "data"
        if self.data_bytes is not None:
            return _load_json(self.data_bytes, where)
        if self.data is None:
            raise CloudEventError(f"{where}: the event carries no data")
        if isinstance(self.data, str):
            return _load_json(self.data.encode("utf-8", "surrogatepass"), where)
        return self.data


# --- reading events from a request ---------------------------------------------


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _load_json(data: bytes, where: str) -> object:
    """``data`` as JSON (UTF-8, ``NaN``/``Infinity`` accepted); else a :class:`CloudEventError`."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if not data.strip():
        raise CloudEventError(f"{where}: empty, expected a JSON payload")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # the standard library below reads NaN, Infinity and huge integers too
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CloudEventError(
            f"{where}: invalid UTF-8 at byte {exc.start} (0x{data[exc.start]:02x})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CloudEventError(
            f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise CloudEventError(f"{where}: JSON nested too deeply") from None


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _check_required(event: CloudEvent) -> CloudEvent:
    """``event`` once its required attributes are non-empty strings of a known version."""
    for name in _REQUIRED:
        value = event.attributes.get(name)
        where = event.name_of(name)
        if value is None:
            raise CloudEventError(f"{where}: missing (a CloudEvent needs {', '.join(_REQUIRED)})")
        if not isinstance(value, str):
            raise CloudEventError(f"{where}: expected a string, got {_json_type(value)}")
        if not value:
            raise CloudEventError(f"{where}: empty")
    version = event.specversion
    if version not in SPEC_VERSIONS:
        raise CloudEventError(
            f"{event.name_of('specversion')}: unsupported version {version!r} "
            f"(reads {' and '.join(sorted(SPEC_VERSIONS, reverse=True))})"
        )
    return event


def _binary_event(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    attributes: dict[str, object] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(_CE_PREFIX) and len(lowered) > len(_CE_PREFIX):
            # The binding percent-encodes spaces, quotes, '%' and non-ASCII in header values.
            attributes[lowered[len(_CE_PREFIX) :]] = unquote(value)
        elif lowered == "content-type":
            attributes["datacontenttype"] = value
    if "specversion" not in attributes:
        raise CloudEventError(
            "ce-specversion header: missing: a binary-mode CloudEvent carries ce-specversion, "
            f"ce-id, ce-source and ce-type headers, or send Content-Type {STRUCTURED_MEDIA_TYPE}"
            f" (or {BATCH_MEDIA_TYPE})"
        )
    return _check_required(CloudEvent(attributes, data_bytes=body, binary=True))


def _structured_event(document: object, where: str) -> CloudEvent:
    """One structured event (a decoded JSON object) named ``where`` in messages."""
    if not isinstance(document, dict):
        label = where[:-1] if where else "body"
        raise CloudEventError(
            f"{label}: expected a JSON object (an event), got {_json_type(document)}"
        )
    attributes: dict[str, object] = {}
    data: object = _ABSENT
    data_base64: object = _ABSENT
    for name, value in document.items():
        if name == "data":
            data = value
        elif name == "data_base64":
            data_base64 = value
        else:
            attributes[name] = value
    event = _check_required(CloudEvent(attributes, where=where))
    if data is not _ABSENT and data_base64 is not _ABSENT:
        raise CloudEventError(f"{where}data_base64: an event carries data or data_base64, not both")
    encoded: object = _ABSENT
    if data_base64 is not _ABSENT:
        encoded, encoded_where = data_base64, f"{where}data_base64"
    elif event.specversion == "0.3" and attributes.get("datacontentencoding") == "base64":
        encoded, encoded_where = data, f"{where}data"
    if encoded is not _ABSENT:
        if not isinstance(encoded, str):
            raise CloudEventError(
                f"{encoded_where}: expected a base64 string, got {_json_type(encoded)}"
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise CloudEventError(f"{encoded_where}: not valid base64") from None
        return CloudEvent(attributes, data_bytes=raw, where=where)
    return CloudEvent(attributes, data=None if data is _ABSENT else data, where=where)


def _read(headers: Mapping[str, str], body: bytes) -> list[CloudEvent | CloudEventError]:
    """The request's events, a malformed one as its error (whole-body errors raise)."""
    content_type = None
    for name, value in headers.items():
        if name.lower() == "content-type":
            content_type = value
    media = _media_type(content_type)
    if media == STRUCTURED_MEDIA_TYPE:
        return [_structured_event(_load_json(body, "body"), "")]
    if media == BATCH_MEDIA_TYPE:
        document = _load_json(body, "body")
        if not isinstance(document, list):
            raise CloudEventError(
                f"body: expected a JSON array of events ({BATCH_MEDIA_TYPE}), "
                f"got {_json_type(document)}"
            )
        events: list[CloudEvent | CloudEventError] = []
        for index, item in enumerate(document):
            try:
                events.append(_structured_event(item, f"events[{index}]."))
            except CloudEventError as exc:
                events.append(exc)
        return events
    if media.startswith("application/cloudevents"):
        raise CloudEventError(
            f"Content-Type {media}: only the JSON event format is read "
            f"({STRUCTURED_MEDIA_TYPE}, {BATCH_MEDIA_TYPE}, or binary mode)",
            status=415,
        )
    return [_binary_event(headers, body)]


def read_events(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Every event of one HTTP request, in order; payloads are left undecoded.

    ``headers`` may use any case. Raises :class:`CloudEventError` for the
    first malformed event or body.
    """
    events = []
    for item in _read(headers, body):
        if isinstance(item, CloudEventError):
            raise item
        events.append(item)
    return events


# --- routing ----------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where an event's rows go: a stream, the side of its mapping, that side's features."""

    stream: str
    side: Side
    features: tuple[str, ...]


class Router:
    """Finds the stream and features of an event from the streams' ``cloudevents:`` mappings."""

    def __init__(self, streams: Sequence[StreamConfig]) -> None:
        self._streams: dict[tuple[str, str | None], StreamConfig] = {}
        for stream in streams:
            mapping = stream.cloudevents
            if mapping is not None:
                self._streams.setdefault((mapping.service, mapping.namespace), stream)

    def route(self, event: CloudEvent) -> Route | str:
        """The event's :class:`Route`, or why it feeds nothing: ``no_stream`` or ``not_mapped``.

        Raises :class:`CloudEventError` when ``inferenceservicename`` or
        ``namespace`` is not a string.
        """
        service = event.extension("inferenceservicename")
        namespace = event.extension("namespace")
        if service is None:
            return "no_stream"
        stream = None
        if namespace is not None:
            stream = self._streams.get((service, namespace))
        if stream is None:
            stream = self._streams.get((service, None))
        if stream is None or stream.cloudevents is None:
            return "no_stream"
        event_type = event.type
        if event_type.endswith(".request"):
            side: Side = "inputs"
            features = stream.cloudevents.inputs
        elif event_type.endswith(".response"):
            side = "outputs"
            features = stream.cloudevents.outputs
        else:
            return "not_mapped"
        if not features:
            return "not_mapped"
        return Route(stream.name, side, features)


# --- payloads to columns ----------------------------------------------------------


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
    """The rows of one decoded payload, as a :class:`~driftmon.parse.Batch` over ``features``.

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


def event_batch(event: CloudEvent, route: Route) -> Batch:
    """The rows ``event`` feeds along ``route`` (decodes and checks its payload)."""
    return payload_batch(event.payload(), route.side, route.features, event.where + "data")


# --- one request, planned ---------------------------------------------------------


@dataclass(frozen=True)
class PlannedBatch:
    """The rows of one or more events of a request bound for one stream and side."""

    stream: str
    side: Side
    batch: Batch
    events: int


@dataclass(frozen=True)
class IngestPlan:
    """What one request will apply: batches by (stream, side) in first-seen order, and drops."""

    batches: tuple[PlannedBatch, ...]
    events: int
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows the plan applies, over every batch."""
        return sum(planned.batch.n_rows for planned in self.batches)


def _merge(stream: str, side: Side, batches: list[Batch]) -> PlannedBatch:
    if len(batches) == 1:
        return PlannedBatch(stream, side, batches[0], 1)
    columns: dict[str, list[object]] = {name: [] for name in batches[0].columns}
    for batch in batches:
        for name, values in batch.columns.items():
            columns[name].extend(values)
    merged = Batch(sum(b.n_rows for b in batches), columns, sum(b.unknown_fields for b in batches))
    return PlannedBatch(stream, side, merged, len(batches))


def plan_request(
    headers: Mapping[str, str], body: bytes, streams: Sequence[StreamConfig]
) -> IngestPlan:
    """Read, route and decode every event of one request, applying nothing.

    Raises :class:`CloudEventError` for the first malformed event (by
    position); its ``dropped`` then counts every event of the request:
    ``no_stream``/``not_mapped`` for those that would have fed nothing,
    ``bad_payload`` for the rest, which the rejection drops with it.
    """
    router = Router(streams)
    items = _read(headers, body)
    dropped: Counter[str] = Counter()
    grouped: dict[tuple[str, Side], list[Batch]] = {}
    first_error: CloudEventError | None = None
    for item in items:
        if isinstance(item, CloudEventError):
            first_error = first_error or item
            dropped["bad_payload"] += 1
            continue
        try:
            route = router.route(item)
            if isinstance(route, str):
                dropped[route] += 1
                continue
            if first_error is not None:
                dropped["bad_payload"] += 1  # decoding it would not save it
                continue
            batch = event_batch(item, route)
        except CloudEventError as exc:
            first_error = first_error or exc
            dropped["bad_payload"] += 1
            continue
        grouped.setdefault((route.stream, route.side), []).append(batch)
    if first_error is not None:
        dropped["bad_payload"] += sum(len(batches) for batches in grouped.values())
        raise CloudEventError(str(first_error), status=first_error.status, dropped=dropped)
    planned = tuple(_merge(stream, side, batches) for (stream, side), batches in grouped.items())
    return IngestPlan(planned, len(items), dict(dropped))


# --- HTTP -------------------------------------------------------------------------


def _apply(daemon: Daemon, plan: IngestPlan) -> tuple[int, Counter[str]]:
    """Apply the plan's batches as one (worker thread); rows applied and extra drops."""
    results = daemon.ingest_batches([(p.stream, p.batch) for p in plan.batches])
    rows = 0
    dropped: Counter[str] = Counter()
    for planned, result in zip(plan.batches, results, strict=True):
        if result is None:
            # A reload removed the stream after routing: its events found no stream.
            dropped["no_stream"] += planned.events
        else:
            rows += result.rows
    return rows, dropped


def _count_dropped(daemon: Daemon, dropped: Mapping[str, int]) -> None:
    for reason, count in dropped.items():
        if count:
            daemon.count_dropped_events(reason, count)


@_counted
async def ingest_cloudevents(request: web.Request) -> web.StreamResponse:
    """``POST /v1/cloudevents``: binary, structured or batched CloudEvents (module docstring)."""
    daemon = request.app[DAEMON_KEY]
    if not daemon.check_token(request.headers.get("Authorization")):
        return _unauthorized()
    body = await read_body(request, daemon)
    if isinstance(body, web.Response):
        return body
    try:
        plan = await daemon.run_job(
            len(body), plan_request, request.headers, body, daemon.config.streams
        )
    except CloudEventError as exc:
        _count_dropped(daemon, exc.dropped)
        return _error(exc.status, str(exc))
    except QueueFull as exc:
        return _unavailable(f"ingest queue full: {exc}; retry later")
    except NotReady:
        return _unavailable("not ready: references are loading or state is being restored")
    try:
        rows, late = await daemon.run_job(0, _apply, daemon, plan)
    except QueueFull as exc:
        return _unavailable(f"ingest queue full: {exc}; retry later")
    except NotReady:
        return _unavailable("not ready: references are loading or state is being restored")
    dropped = Counter(plan.dropped) + late
    _count_dropped(daemon, dropped)
    return _json({"rows": rows, "events": plan.events, "dropped": dict(dropped)})


async def ingest_cloudevents_root(request: web.Request) -> web.StreamResponse:
    """``POST /``: :func:`ingest_cloudevents` when ``ingest.cloudevents.root`` is true, else 404.

    Read at each request, so a reload turns it on or off.
    """
    daemon = request.app[DAEMON_KEY]
    if not daemon.config.ingest.cloudevents_root:
        return _error(
            404,
            "POST / takes CloudEvents only with ingest.cloudevents.root: true; use /v1/cloudevents",
        )
    return await ingest_cloudevents(request)
