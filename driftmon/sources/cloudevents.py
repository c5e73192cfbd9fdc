"""The CloudEvents envelope: events of one request, routed to streams and decoded.

The three modes of the HTTP binding (binary, structured, batched), the
required attributes, routing by the ``inferenceservicename`` and
``namespace`` extensions to a stream's ``inputs`` or ``outputs``, and
:func:`plan_request`, which reads a whole request and applies nothing. The
contract (modes, routing, drop reasons, messages) is in the README's
CloudEvents section; payloads are :mod:`driftmon.sources.payloads`.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import unquote

from driftmon.sources.jsonrows import Batch
from driftmon.sources.jsontext import BodyError, load_json
from driftmon.sources.jsontext import json_type as _json_type
from driftmon.sources.payloads import CloudEventError, Side, payload_batch

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


_REQUIRED: Final = ("specversion", "id", "source", "type")
_CE_PREFIX: Final = "ce-"


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


def _load_json(data: bytes, where: str) -> object:
    """``data`` as JSON by the one loader of rows bodies; else a :class:`CloudEventError`."""
    try:
        return load_json(data, where)
    except BodyError as exc:
        raise CloudEventError(str(exc)) from None


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


class EventMapping(Protocol):
    """A stream's ``cloudevents:`` mapping, as :class:`Router` reads it
    (:class:`driftmon.config.CloudEventsMapping` is one)."""

    @property
    def service(self) -> str: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def inputs(self) -> tuple[str, ...]: ...
    @property
    def outputs(self) -> tuple[str, ...]: ...


class MappedStream(Protocol):
    """What :class:`Router` reads of a stream (:class:`driftmon.config.StreamConfig` is
    one): sources know nothing else of the config."""

    @property
    def name(self) -> str: ...
    @property
    def cloudevents(self) -> EventMapping | None: ...


class Router:
    """Finds the stream and features of an event from the streams' ``cloudevents:`` mappings."""

    def __init__(self, streams: Sequence[MappedStream]) -> None:
        self._streams: dict[tuple[str, str | None], MappedStream] = {}
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
    headers: Mapping[str, str], body: bytes, streams: Sequence[MappedStream]
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
