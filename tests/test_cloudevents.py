"""CloudEvents ingest (docs/http-api.md): modes, payloads, routing, errors, and the real daemon.

The unit tests drive :func:`driftmon.cloudevents.plan_request` (headers and bytes in, the
batches a request would apply and its drops out) over every mode (binary, structured,
batched) × payload (V1, V2) × side (request, response). The fixtures in
``tests/fixtures/cloudevents/*.http`` are whole HTTP requests shaped as KServe's and
Seldon Core's loggers send them (see the README there); events built with the official
``cloudevents`` SDK check that what it writes is read back. The integration tests post the
same fixtures to a real daemon and read ``/metrics``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from harness import DaemonProcess, Samples, sample, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.cloudevents import (
    BATCH_MEDIA_TYPE,
    STRUCTURED_MEDIA_TYPE,
    CloudEventError,
    IngestPlan,
    Route,
    Router,
    payload_batch,
    plan_request,
    read_events,
)
from driftmon.config import StreamConfig, parse_config
from driftmon.parse import Batch

FIXTURES = Path(__file__).parent / "fixtures" / "cloudevents"
IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
PROBABILITIES = ("p_setosa", "p_versicolor", "p_virginica")
KSERVE_REQUEST = "org.kubeflow.serving.inference.request"
KSERVE_RESPONSE = "org.kubeflow.serving.inference.response"
SELDON_REQUEST = "io.seldon.serving.inference.request"


# --- streams ---------------------------------------------------------------------------------


def numeric(name: str, hi: float = 10.0) -> dict[str, object]:
    return {
        "name": name,
        "type": "numeric",
        "bins": {"kind": "uniform", "lo": 0, "hi": hi, "count": 10},
    }


def categorical(name: str, categories: Sequence[str]) -> dict[str, object]:
    return {"name": name, "type": "categorical", "categories": list(categories)}


def iris_features() -> list[dict[str, object]]:
    """The iris inputs, the predicted class (integer-coded), and a feature no event maps."""
    return [
        *(numeric(name) for name in IRIS),
        categorical("species", ["0", "1", "2"]),
        categorical("label", ["a", "b"]),
    ]


def tf_features() -> list[dict[str, object]]:
    return [*(numeric(name) for name in IRIS), *(numeric(name, 1.0) for name in PROBABILITIES)]


def ce_stream(
    name: str,
    service: str,
    features: list[dict[str, object]],
    inputs: Sequence[str] = IRIS,
    outputs: Sequence[str] = ("species",),
    namespace: str | None = None,
    reference: Mapping[str, object] | None = None,
) -> dict[str, object]:
    mapping: dict[str, object] = {"service": service, "inputs": list(inputs)}
    if outputs:
        mapping["outputs"] = list(outputs)
    if namespace is not None:
        mapping["namespace"] = namespace
    return {
        "name": name,
        "reference": dict(reference or {"warmup": 10}),
        "features": features,
        "cloudevents": mapping,
    }


def unit_streams() -> list[dict[str, object]]:
    """The streams of the unit tests: one per fixture family, and the routing cases."""
    return [
        ce_stream("kserve_iris", "sklearn-iris", iris_features(), namespace="default"),
        ce_stream("kserve_iris_prod", "sklearn-iris", iris_features(), namespace="prod"),
        ce_stream("kserve_iris_any", "sklearn-iris", iris_features()),
        ce_stream("kserve_v2", "sklearn-v2-iris", iris_features()),
        ce_stream("seldon_iris", "iris", iris_features(), namespace="seldon"),
        ce_stream("seldon_tf", "iris-tf", tf_features(), outputs=PROBABILITIES, namespace="seldon"),
        ce_stream("one_input", "one-input", [numeric("x"), numeric("y")], ("x",), ("y",)),
        ce_stream("scores_only", "scorer", [numeric("score", 1.0)], (), ("score",)),
        ce_stream("cafe", "café-model", [numeric("x")], ("x",), ()),
    ]


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> tuple[StreamConfig, ...]:
    document = {"streams": unit_streams()}
    return parse_config(document, base_dir=tmp_path_factory.mktemp("config")).streams


# --- requests --------------------------------------------------------------------------------


def read_http(name: str) -> tuple[dict[str, str], bytes]:
    """The headers (``Host`` left out: a client sets its own) and body of a fixture request."""
    head, _, body = (FIXTURES / name).read_bytes().partition(b"\n\n")
    request_line, *lines = head.decode().split("\n")
    assert request_line.startswith("POST / HTTP/1.1"), name
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key != "Host":
            headers[key] = value.strip()
    return headers, body


def binary_headers(
    event_type: str = KSERVE_REQUEST,
    service: str | None = "sklearn-iris",
    namespace: str | None = "default",
    **extra: str,
) -> dict[str, str]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "http://localhost:9081/",
        "ce-type": event_type,
        "content-type": "application/json",
    }
    if service is not None:
        headers["ce-inferenceservicename"] = service
    if namespace is not None:
        headers["ce-namespace"] = namespace
    headers.update(extra)
    return headers


def structured(
    data: object = None,
    event_type: str = KSERVE_REQUEST,
    service: str = "sklearn-iris",
    namespace: str = "default",
    **members: object,
) -> dict[str, object]:
    """One structured event (a JSON object) for ``service``."""
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "http://localhost:9081/",
        "type": event_type,
        "inferenceservicename": service,
        "namespace": namespace,
    }
    if data is not None:
        event["data"] = data
    event.update(members)
    return event


def plan_one(plan: IngestPlan) -> tuple[str, str, Batch]:
    """The single batch of a plan: stream, side, rows."""
    assert len(plan.batches) == 1, plan
    (planned,) = plan.batches
    return planned.stream, planned.side, planned.batch


def columns_of(
    streams: Sequence[StreamConfig], headers: Mapping[str, str], body: bytes
) -> dict[str, list[object]]:
    return plan_one(plan_request(headers, body, streams))[2].columns


def rejected(
    streams: Sequence[StreamConfig], headers: Mapping[str, str], body: bytes
) -> CloudEventError:
    with pytest.raises(CloudEventError) as caught:
        plan_request(headers, body, streams)
    return caught.value


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()


# --- the loggers' own requests ---------------------------------------------------------------

FIXTURE_CASES = [
    (
        "kserve_v1_request.http",
        "kserve_iris",
        "inputs",
        {
            "sepal_length": [6.8, 6.0],
            "sepal_width": [2.8, 3.4],
            "petal_length": [4.8, 4.5],
            "petal_width": [1.4, 1.6],
        },
    ),
    ("kserve_v1_response.http", "kserve_iris", "outputs", {"species": [1, 1]}),
    (
        "kserve_v2_request.http",
        "kserve_v2",
        "inputs",
        {
            "sepal_length": [6.8, 6.0],
            "sepal_width": [2.8, 3.4],
            "petal_length": [4.8, 4.5],
            "petal_width": [1.4, 1.6],
        },
    ),
    ("kserve_v2_response.http", "kserve_v2", "outputs", {"species": [1, 1]}),
    (
        "seldon_v2_request.http",
        "seldon_iris",
        "inputs",
        {
            "sepal_length": [5.1, 6.2, 7.7],
            "sepal_width": [3.5, 2.9, 3.0],
            "petal_length": [1.4, 4.3, 6.1],
            "petal_width": [0.2, 1.3, 2.3],
        },
    ),
    ("seldon_v2_response.http", "seldon_iris", "outputs", {"species": [0, 1, 2]}),
    (
        "seldon_tensorflow_request.http",
        "seldon_tf",
        "inputs",
        {
            "sepal_length": [5.9, 4.6],
            "sepal_width": [3.0, 3.1],
            "petal_length": [5.1, 1.5],
            "petal_width": [1.8, 0.2],
        },
    ),
    (
        "seldon_tensorflow_response.http",
        "seldon_tf",
        "outputs",
        {
            "p_setosa": [0.0042, 0.9761],
            "p_versicolor": [0.2113, 0.0237],
            "p_virginica": [0.7845, 0.0002],
        },
    ),
]


@pytest.mark.parametrize(("fixture", "stream", "side", "columns"), FIXTURE_CASES)
def test_logger_requests_feed_exactly_their_side(
    streams: tuple[StreamConfig, ...],
    fixture: str,
    stream: str,
    side: str,
    columns: dict[str, list[object]],
) -> None:
    headers, body = read_http(fixture)
    plan = plan_request(headers, body, streams)
    assert plan.events == 1 and dict(plan.dropped) == {}
    got_stream, got_side, batch = plan_one(plan)
    assert (got_stream, got_side) == (stream, side)
    # Only the features of the event's side are in the batch: the others are not reached.
    assert batch.columns == columns
    assert batch.n_rows == len(next(iter(columns.values())))
    assert batch.unknown_fields == 0


def test_binary_attributes_are_read_from_the_headers() -> None:
    headers, body = read_http("seldon_v2_request.http")
    (event,) = read_events(headers, body)
    assert (event.specversion, event.id, event.type, event.source) == (
        "1.0",
        "3568c090-f916-44db-95b6-cbcc2b2e4eda",
        SELDON_REQUEST,
        "http://0.0.0.0:8000/",
    )
    assert event.extension("inferenceservicename") == "iris"
    assert event.extension("namespace") == "seldon"
    assert event.extension("modelid") == "classifier"
    assert event.extension("endpoint") == "default"
    assert event.extension("component") is None
    assert event.attributes["datacontenttype"] == "application/json"
    assert event.payload() == json.loads(body)


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_header_names_are_case_insensitive(streams: tuple[StreamConfig, ...], case: Any) -> None:
    headers, body = read_http("kserve_v1_request.http")
    expected = columns_of(streams, headers, body)
    recased = {case(name): value for name, value in headers.items()}
    assert columns_of(streams, recased, body) == expected


def test_header_values_are_percent_decoded(streams: tuple[StreamConfig, ...]) -> None:
    headers = binary_headers(service="caf%C3%A9-model", namespace=None)
    assert columns_of(streams, headers, b'{"instances": [1.5, 2]}') == {"x": [1.5, 2]}


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_binary_data_is_json_whatever_its_content_type(
    streams: tuple[StreamConfig, ...], content_type: str | None
) -> None:
    headers = binary_headers()
    del headers["content-type"]
    if content_type is not None:
        headers["Content-Type"] = content_type
    columns = columns_of(streams, headers, b'{"instances": [[1, 2, 3, 4]]}')
    assert columns == {
        "sepal_length": [1],
        "sepal_width": [2],
        "petal_length": [3],
        "petal_width": [4],
    }


def test_json_literals_nan_and_infinity_are_values(streams: tuple[StreamConfig, ...]) -> None:
    body = b'{"instances": [[NaN, Infinity, -Infinity, 1e999]]}'
    columns = columns_of(streams, binary_headers(), body)
    assert math.isnan(columns["sepal_length"][0])  # type: ignore[arg-type]
    assert columns["sepal_width"] == [math.inf]
    assert columns["petal_length"] == [-math.inf]
    assert columns["petal_width"] == [math.inf]


# --- V1 payloads -------------------------------------------------------------------------------


def test_v1_object_rows_by_name_with_absent_and_unknown_keys() -> None:
    payload = {
        "instances": [
            {"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4},
            {"sepal_length": 5, "petal_width": None, "id": "r2", "extra": [1]},
        ]
    }
    batch = payload_batch(payload, "inputs", IRIS)
    assert batch == Batch(
        2,
        {
            "sepal_length": [1, 5],
            "sepal_width": [2, None],
            "petal_length": [3, None],
            "petal_width": [4, None],
        },
        2,
    )


def test_v1_array_rows_by_position_short_rows_missing_long_rows_counted() -> None:
    payload = {"instances": [[1, 2], [1, 2, 3, 4, 5, 6], [], [None, "x", True, [0]]]}
    batch = payload_batch(payload, "inputs", IRIS)
    assert batch == Batch(
        4,
        {
            "sepal_length": [1, 1, None, None],
            "sepal_width": [2, 2, None, "x"],
            "petal_length": [None, 3, None, True],
            "petal_width": [None, 4, None, [0]],
        },
        2,
    )


def test_v1_scalar_rows_feed_a_single_feature() -> None:
    payload = {"predictions": [0.2, 0.9, None, "high", [0.5, 0.1], {"score": 0.7}]}
    batch = payload_batch(payload, "outputs", ("score",))
    assert batch == Batch(6, {"score": [0.2, 0.9, None, "high", 0.5, 0.7]}, 1)


def test_v1_empty_rows_is_an_empty_batch() -> None:
    assert payload_batch({"instances": []}, "inputs", IRIS) == Batch(
        0, {name: [] for name in IRIS}, 0
    )


@pytest.mark.parametrize(
    ("payload", "side", "message"),
    [
        (
            {"instances": [[1, 2, 3, 4], 7]},
            "inputs",
            "data.instances[1]: a number row gives one value",
        ),
        ({"instances": [None]}, "inputs", "data.instances[0]: a null row gives one value"),
        ({"instances": {"a": 1}}, "inputs", "data.instances: expected an array, got object"),
        ({"predictions": "x"}, "outputs", "data.predictions: expected an array, got string"),
        ([1, 2], "inputs", "data: expected a JSON object, got array"),
        (
            {"predictions": [1]},
            "inputs",
            "data: a request payload has 'instances' (V1), 'inputs' (V2) or Seldon's",
        ),
        (
            {"instances": [1]},
            "outputs",
            "data: a response payload has 'predictions' (V1), 'outputs' (V2) or Seldon's",
        ),
        (
            {"instances": [], "inputs": []},
            "inputs",
            "data: both 'instances' (V1) and 'inputs' (V2)",
        ),
    ],
)
def test_v1_payload_errors_name_the_place(payload: object, side: Any, message: str) -> None:
    with pytest.raises(CloudEventError, match=rf"^{_escaped(message)}"):
        payload_batch(payload, side, IRIS)


def _escaped(message: str) -> str:
    import re

    return re.escape(message)


# --- V2 payloads -------------------------------------------------------------------------------


def tensor(name: str, shape: list[int], data: list[object], datatype: str = "FP32") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def test_v2_two_dimensional_tensor_columns_by_position_flat_or_nested() -> None:
    flat = {"inputs": [tensor("input-0", [2, 4], [1, 2, 3, 4, 5, 6, 7, 8])]}
    nested = {"inputs": [tensor("input-0", [2, 4], [[1, 2, 3, 4], [5, 6, 7, 8]])]}
    expected = Batch(
        2,
        {
            "sepal_length": [1, 5],
            "sepal_width": [2, 6],
            "petal_length": [3, 7],
            "petal_width": [4, 8],
        },
        0,
    )
    assert payload_batch(flat, "inputs", IRIS) == expected
    assert payload_batch(nested, "inputs", IRIS) == expected


def test_v2_positional_tensors_are_columns_in_order() -> None:
    payload = {
        "inputs": [
            tensor("a", [2], [1, 2]),
            tensor("b", [2, 2], [3, 4, 5, 6]),
        ]
    }
    batch = payload_batch(payload, "inputs", IRIS)
    assert batch == Batch(
        2,
        {
            "sepal_length": [1, 2],
            "sepal_width": [3, 5],
            "petal_length": [4, 6],
            "petal_width": [None, None],
        },
        0,
    )
    wide = {"outputs": [tensor("predict_proba", [2, 3], [0.1, 0.2, 0.7, 0.6, 0.3, 0.1])]}
    assert payload_batch(wide, "outputs", ("score",)) == Batch(2, {"score": [0.1, 0.6]}, 4)


def test_v2_one_dimensional_tensors_by_feature_name() -> None:
    payload = {
        "inputs": [
            tensor("petal_width", [3], [0.2, 1.3, 2.3]),
            tensor("embedding", [3, 8], list(range(24))),
            tensor("sepal_length", [3, 1], [[5.1], [6.2], [7.7]]),
            tensor("region", [3], ["north", "south", "north"], "BYTES"),
        ]
    }
    features = ("sepal_length", "petal_width", "region", "sepal_width")
    batch = payload_batch(payload, "inputs", features)
    assert batch == Batch(
        3,
        {
            "sepal_length": [5.1, 6.2, 7.7],
            "petal_width": [0.2, 1.3, 2.3],
            "region": ["north", "south", "north"],  # BYTES elements stay strings
            "sepal_width": [None, None, None],  # no tensor names it: missing
        },
        3,  # the embedding tensor: one ignored value per row
    )


def test_v2_response_single_output_tensor_feeds_the_single_output() -> None:
    payload = {"outputs": [tensor("predict", [1], [2], "INT64")], "model_name": "iris"}
    assert payload_batch(payload, "outputs", ("species",)) == Batch(1, {"species": [2]}, 0)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"a": 1}, "data.inputs: expected an array, got object"),
        ([3], "data.inputs[0]: expected a tensor object, got number"),
        ([{"name": "a", "datatype": "FP32", "data": []}], "data.inputs[0].shape: missing"),
        ([{"name": "a", "shape": [1], "datatype": "FP32"}], "data.inputs[0].data: missing"),
        ([tensor("a", [2, -1], [])], "data.inputs[0].shape: expected an array of non-negative"),
        ([tensor("a", [True], [1])], "data.inputs[0].shape: expected an array of non-negative"),
        (
            [{**tensor("a", [1], [1]), "name": 3}],
            "data.inputs[0].name: expected a string, got number",
        ),
        (
            [{**tensor("a", [1], [1]), "datatype": None}],
            "data.inputs[0].datatype: expected a string",
        ),
        ([{**tensor("a", [1], [1]), "data": "AAAA"}], "data.inputs[0].data: expected an array"),
        (
            [tensor("a", [2, 4], list(range(7)))],
            "data.inputs[0].data: 7 values, shape [2, 4] holds 8",
        ),
        (
            [tensor("a", [2, 2, 2], list(range(8)))],
            "data.inputs[0].shape: [2, 2, 2]; tensors map by",
        ),
        ([tensor("a", [], [1])], "data.inputs[0].shape: []; tensors map by position"),
        (
            [tensor("a", [2, 2], [1, 2, 3, 4]), tensor("b", [3], [1, 2, 3])],
            "data.inputs[1].shape: 3 rows, data.inputs[0] has 2",
        ),
        (
            [tensor("sepal_length", [2, 3], list(range(6)))],
            "data.inputs[0].shape: [2, 3]; a tensor named after feature 'sepal_length'",
        ),
        (
            [tensor("sepal_length", [1], [1]), tensor("sepal_length", [1], [2])],
            "data.inputs[1].name: 'sepal_length' is given twice",
        ),
        (
            [tensor("sepal_length", [1], [1]), tensor("petal_width", [2], [1, 2])],
            "data.inputs[1].shape: 2 rows, data.inputs[0] has 1",
        ),
    ],
)
def test_v2_payload_errors_name_the_place(tensors: object, message: str) -> None:
    with pytest.raises(CloudEventError, match=rf"^{_escaped(message)}"):
        payload_batch({"inputs": tensors}, "inputs", IRIS)


# --- one model of rows for every payload form ------------------------------------------------

scalars = st.one_of(
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
)


@st.composite
def row_tables(draw: st.DrawFn) -> tuple[list[list[object]], list[int]]:
    """Rows of equal width and a split of the columns into consecutive tensors."""
    width = draw(st.integers(1, 6))
    rows: list[list[object]] = draw(
        st.lists(st.lists(scalars, min_size=width, max_size=width), max_size=6)
    )
    cuts = sorted(draw(st.sets(st.integers(1, width - 1), max_size=width - 1))) if width > 1 else []
    return rows, [b - a for a, b in zip([0, *cuts], [*cuts, width], strict=True)]


@settings(max_examples=60, deadline=None)
@given(table=row_tables(), nested=st.booleans(), n_features=st.integers(1, 7))
def test_every_payload_form_gives_the_rows_columns(
    table: tuple[list[list[object]], list[int]], nested: bool, n_features: int
) -> None:
    rows, widths = table
    width = sum(widths)
    features = tuple(f"f{j}" for j in range(n_features))
    expected_columns = {
        name: [row[j] if j < width else None for row in rows] for j, name in enumerate(features)
    }
    extra = max(0, width - n_features) * len(rows)
    expected = Batch(len(rows), expected_columns, extra)
    # V1, rows as arrays.
    assert payload_batch({"instances": rows}, "inputs", features) == expected
    # V1, rows as objects: the same values by name (values past the features under other names).
    objects = [
        {(features[j] if j < n_features else f"x{j}"): v for j, v in enumerate(row)} for row in rows
    ]
    assert payload_batch({"instances": objects}, "inputs", features) == expected
    # V2: the columns cut into consecutive tensors, 1-D when one column wide.
    tensors, start = [], 0
    for k, w in enumerate(widths):
        block: list[object] = [row[start : start + w] for row in rows]
        start += w
        if w == 1 and k % 2 == 0:
            tensors.append(tensor(f"t{k}", [len(rows)], [row[start - 1] for row in rows]))
        else:
            flat = [v for row in rows for v in row[start - w : start]]
            tensors.append(tensor(f"t{k}", [len(rows), w], block if nested else flat))
    assert payload_batch({"outputs": tensors}, "outputs", features) == expected


# --- structured and batched modes ------------------------------------------------------------


def structured_headers(media: str = STRUCTURED_MEDIA_TYPE) -> dict[str, str]:
    return {"Content-Type": media}


def test_structured_event_with_json_data(streams: tuple[StreamConfig, ...]) -> None:
    event = structured({"instances": [[1, 2, 3, 4]]})
    headers = structured_headers("Application/CloudEvents+JSON; charset=utf-8")
    stream, side, batch = plan_one(plan_request(headers, dumps(event), streams))
    assert (stream, side, batch.n_rows) == ("kserve_iris", "inputs", 1)
    assert batch.columns["petal_width"] == [4]


def test_structured_data_as_json_text_base64_and_v03_encoding(
    streams: tuple[StreamConfig, ...],
) -> None:
    payload = b'{"predictions": [2, 0]}'
    events = [
        structured(payload.decode(), KSERVE_RESPONSE, datacontenttype="text/plain"),
        structured(
            None, KSERVE_RESPONSE, data_base64=base64.b64encode(payload).decode(),
            datacontenttype="application/octet-stream",
        ),
        structured(
            base64.b64encode(payload).decode(), KSERVE_RESPONSE,
            specversion="0.3", datacontentencoding="base64",
        ),
    ]  # fmt: skip
    for event in events:
        stream, side, batch = plan_one(plan_request(structured_headers(), dumps(event), streams))
        assert (stream, side, batch.columns) == ("kserve_iris", "outputs", {"species": [2, 0]})


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            structured({"instances": [1]}, data_base64="e30="),
            "data_base64: an event carries data or",
        ),
        (structured(None), "data: the event carries no data"),
        (structured(None, data_base64="***"), "data_base64: not valid base64"),
        (structured(None, data_base64=12), "data_base64: expected a base64 string, got number"),
        (structured("not json"), "data: invalid JSON at line 1, column 1"),
        (
            structured(None, data_base64=base64.b64encode(b"\xff{").decode()),
            "data: invalid UTF-8 at byte 0",
        ),
        (structured({"instances": [1]}, type=7), "type: expected a string, got number"),
        (structured({"instances": [1]}, id=""), "id: empty"),
        (
            structured({"instances": [1]}, specversion="2.0"),
            "specversion: unsupported version '2.0'",
        ),
        (
            structured({"instances": [1]}, inferenceservicename=3),
            "inferenceservicename: expected a string",
        ),
        ({"specversion": "1.0", "id": "1", "type": KSERVE_REQUEST}, "source: missing"),
        ([structured({"instances": [1]})], "body: expected a JSON object (an event), got array"),
    ],
)
def test_structured_errors_name_the_member(
    streams: tuple[StreamConfig, ...], event: object, message: str
) -> None:
    error = rejected(streams, structured_headers(), dumps(event))
    assert str(error).startswith(message), str(error)
    assert error.status == 400
    assert dict(error.dropped) == {"bad_payload": 1}


def test_batch_groups_events_by_stream_and_side_and_drops_the_unmapped(
    streams: tuple[StreamConfig, ...],
) -> None:
    events = [
        structured({"instances": [[1, 2, 3, 4]]}),
        structured({"predictions": [2]}, KSERVE_RESPONSE),
        structured({"instances": [[5, 6, 7, 8], [9, 9, 9, 9]]}),  # same id: never deduplicated
        structured({"instances": [[1, 2, 3, 4]]}, service="unknown-model"),
        structured({"instances": [[1, 2, 3, 4]]}, "io.seldon.serving.feedback"),
        structured(
            {"inputs": [tensor("x", [1, 4], [0, 1, 2, 3])]}, SELDON_REQUEST, "iris", "seldon"
        ),
    ]
    plan = plan_request(structured_headers(BATCH_MEDIA_TYPE), dumps(events), streams)
    assert plan.events == 6
    assert dict(plan.dropped) == {"no_stream": 1, "not_mapped": 1}
    summary = [(p.stream, p.side, p.events, p.batch.n_rows) for p in plan.batches]
    assert summary == [
        ("kserve_iris", "inputs", 2, 3),
        ("kserve_iris", "outputs", 1, 1),
        ("seldon_iris", "inputs", 1, 1),
    ]
    assert plan.batches[0].batch.columns["sepal_length"] == [1, 5, 9]
    assert plan.rows == 5


def test_empty_batch_is_no_event(streams: tuple[StreamConfig, ...]) -> None:
    plan = plan_request(structured_headers(BATCH_MEDIA_TYPE), b"[]", streams)
    assert (plan.batches, plan.events, dict(plan.dropped)) == ((), 0, {})


def test_a_bad_event_rejects_the_whole_batch(streams: tuple[StreamConfig, ...]) -> None:
    events = [
        structured({"instances": [[1, 2, 3, 4]]}),
        structured({"instances": [[1, 2, 3, 4]]}, service="unknown-model"),
        structured({"instances": [[1, 2, 3, 4], 5]}),
        {"specversion": "1.0", "id": "x", "source": "s"},
        structured({"predictions": [1]}, KSERVE_RESPONSE),
    ]
    error = rejected(streams, structured_headers(BATCH_MEDIA_TYPE), dumps(events))
    assert str(error).startswith("events[2].data.instances[1]: a number row gives one value")
    # The unknown service would have been dropped anyway; everything else is lost with the batch.
    assert dict(error.dropped) == {"no_stream": 1, "bad_payload": 4}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": 1}', "body: expected a JSON array of events"),
        (b'["x"]', "events[0]: expected a JSON object (an event), got string"),
        (b"[{]", "body: invalid JSON at line 1, column 3"),
        (b"", "body: empty"),
    ],
)
def test_batch_body_errors(streams: tuple[StreamConfig, ...], body: bytes, message: str) -> None:
    assert str(rejected(streams, structured_headers(BATCH_MEDIA_TYPE), body)).startswith(message)


def test_other_event_formats_are_415(streams: tuple[StreamConfig, ...]) -> None:
    error = rejected(streams, {"content-type": "application/cloudevents+xml"}, b"<event/>")
    assert error.status == 415
    assert "only the JSON event format" in str(error)


# --- binary-mode errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "change", "message"),
    [
        ("ce-specversion", {}, "ce-specversion header: missing: a binary-mode CloudEvent"),
        ("ce-id", {}, "ce-id header: missing"),
        ("ce-source", {}, "ce-source header: missing"),
        ("ce-type", {}, "ce-type header: missing"),
        (None, {"ce-id": ""}, "ce-id header: empty"),
        (None, {"ce-specversion": "0.2"}, "ce-specversion header: unsupported version '0.2'"),
    ],
)
def test_binary_required_headers(
    streams: tuple[StreamConfig, ...], drop: str | None, change: dict[str, str], message: str
) -> None:
    headers = binary_headers(**change)
    if drop is not None:
        del headers[drop]
    error = rejected(streams, headers, b'{"instances": [[1, 2, 3, 4]]}')
    assert str(error).startswith(message), str(error)
    assert (error.status, dict(error.dropped)) == (400, {"bad_payload": 1})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "data: empty, expected a JSON payload"),
        (b'{"instances": [1,]}', "data: invalid JSON at line 1, column 18"),
        (b'{"instances": ["\xff"]}', "data: invalid UTF-8 at byte 16 (0xff)"),
        (b'{"instances": [[1, 2], 3]}', "data.instances[1]: a number row gives one value"),
    ],
)
def test_binary_payload_errors(
    streams: tuple[StreamConfig, ...], body: bytes, message: str
) -> None:
    assert str(rejected(streams, binary_headers(), body)).startswith(message)


def test_v03_events_are_read(streams: tuple[StreamConfig, ...]) -> None:
    headers = binary_headers(**{"ce-specversion": "0.3"})
    assert columns_of(streams, headers, b'{"instances": [[1, 2, 3, 4]]}')["sepal_length"] == [1]


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "stream"),
    [
        ("default", "kserve_iris"),
        ("prod", "kserve_iris_prod"),
        ("staging", "kserve_iris_any"),
        (None, "kserve_iris_any"),
    ],
)
def test_a_stream_naming_the_namespace_wins(
    streams: tuple[StreamConfig, ...], namespace: str | None, stream: str
) -> None:
    headers = binary_headers(namespace=namespace)
    plan = plan_request(headers, b'{"instances": [[1, 2, 3, 4]]}', streams)
    assert plan_one(plan)[:2] == (stream, "inputs")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (binary_headers(service="other-model"), "no_stream"),
        (binary_headers(service=None), "no_stream"),
        (binary_headers(service="iris", namespace="default"), "no_stream"),  # iris maps ns seldon
        (binary_headers("io.seldon.serving.feedback"), "not_mapped"),
        (binary_headers("org.kubeflow.serving.inference.requests"), "not_mapped"),
        (binary_headers(KSERVE_REQUEST, "scorer", None), "not_mapped"),  # maps no inputs
    ],
)
def test_events_that_feed_nothing_are_dropped_unread(
    streams: tuple[StreamConfig, ...], headers: dict[str, str], reason: str
) -> None:
    # The payload is not read: a dropped event cannot fail the request.
    plan = plan_request(headers, b"not json at all", streams)
    assert (plan.batches, plan.events, dict(plan.dropped)) == ((), 1, {reason: 1})


def test_router_reports_the_route(streams: tuple[StreamConfig, ...]) -> None:
    headers, body = read_http("seldon_tensorflow_response.http")
    (event,) = read_events(headers, body)
    assert Router(streams).route(event) == Route("seldon_tf", "outputs", PROBABILITIES)


# --- the official SDK's events -----------------------------------------------------------------


def sdk_event(data: object, event_type: str = KSERVE_REQUEST, **attributes: str) -> SdkEvent:
    return SdkEvent(
        attributes={
            "type": event_type,
            "source": "http://localhost:9081/",
            "inferenceservicename": "sklearn-iris",
            "namespace": "default",
            **attributes,
        },
        data=data,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("as_bytes", [False, True])
def test_sdk_events_are_read_back(
    streams: tuple[StreamConfig, ...], mode: str, as_bytes: bool
) -> None:
    payload = {"inputs": [tensor("input-0", [2, 4], [1, 2, 3, 4, 5, 6, 7, 8])]}
    data: object = dumps(payload) if as_bytes else payload
    extra = {"datacontenttype": "application/octet-stream"} if as_bytes else {}
    event = sdk_event(data, **extra)
    message = (to_binary if mode == "binary" else to_structured)(event, JSONFormat())
    (read,) = read_events(message.headers, message.body)
    assert (read.id, read.type, read.source, read.specversion) == (
        event.get_id(),
        KSERVE_REQUEST,
        "http://localhost:9081/",
        "1.0",
    )
    columns = columns_of(streams, message.headers, message.body)
    assert columns["sepal_length"] == [1, 5] and columns["petal_width"] == [4, 8]


def test_sdk_structured_events_joined_into_a_batch(streams: tuple[StreamConfig, ...]) -> None:
    bodies = [
        to_structured(sdk_event({"instances": [[1, 2, 3, 4]]}), JSONFormat()).body,
        to_structured(sdk_event({"predictions": [1]}, KSERVE_RESPONSE), JSONFormat()).body,
    ]
    body = b"[" + b",".join(bodies) + b"]"
    plan = plan_request({"Content-Type": BATCH_MEDIA_TYPE}, body, streams)
    assert [(p.stream, p.side, p.batch.n_rows) for p in plan.batches] == [
        ("kserve_iris", "inputs", 1),
        ("kserve_iris", "outputs", 1),
    ]


# --- the real daemon -----------------------------------------------------------------------

TOKEN = "ce-token"
REFERENCE_ROWS = [
    {
        "sepal_length": 4.0 + (i % 40) / 10,
        "sepal_width": 2.0 + (i % 20) / 10,
        "petal_length": 1.0 + (i % 60) / 10,
        "petal_width": (i % 25) / 10,
        "species": str(i % 3),
        "label": "ab"[i % 2],
        "p_setosa": (i % 10) / 10,
        "p_versicolor": (i % 7) / 10,
        "p_virginica": (i % 5) / 10,
    }
    for i in range(120)
]


def daemon_config(folder: Path, *, root: bool, token: bool) -> Path:
    (folder / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in REFERENCE_ROWS)
    )
    reference = {"file": "reference.ndjson"}
    config: dict[str, object] = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": "1MiB"},
        "ingest": {"workers": 2, "cloudevents": {"root": root}},
        "engine": {"evaluate_every": "100ms"},
        "defaults": {"window": {"length": "1h", "panes": 4}},
        "streams": [
            ce_stream(
                "kserve_iris",
                "sklearn-iris",
                iris_features(),
                namespace="default",
                reference=reference,
            ),
            ce_stream("kserve_v2", "sklearn-v2-iris", iris_features(), reference=reference),
            ce_stream(
                "seldon_iris", "iris", iris_features(), namespace="seldon", reference=reference
            ),
            ce_stream(
                "seldon_tf",
                "iris-tf",
                tf_features(),
                outputs=PROBABILITIES,
                namespace="seldon",
                reference=reference,
            ),
            ce_stream("sdk", "sdk-model", iris_features(), reference=reference),
            ce_stream("rejected", "rejected-model", iris_features(), reference=reference),
        ],
    }
    if token:
        (folder / "token").write_text(TOKEN + "\n")
        config["server"] = {**config["server"], "auth_token_file": "token"}  # type: ignore[dict-item]
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """Open, with ``ingest.cloudevents.root: true``."""
    with DaemonProcess(
        daemon_config(tmp_path_factory.mktemp("ce-open"), root=True, token=False)
    ) as process:
        yield process


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """With a bearer token, and ``POST /`` off (the default)."""
    with DaemonProcess(
        daemon_config(tmp_path_factory.mktemp("ce-guarded"), root=False, token=True)
    ) as process:
        yield process


def window(samples: Samples, stream: str, feature: str) -> float:
    value = sample(samples, "driftmon_window_samples", stream=stream, feature=feature)
    return 0.0 if value is None else value


def values(samples: Samples, stream: str, feature: str, kind: str) -> float:
    value = sample(
        samples, "driftmon_ingest_values_total", stream=stream, feature=feature, kind=kind
    )
    return 0.0 if value is None else value


def counter(samples: Samples, name: str, **labels: str) -> float:
    value = sample(samples, name, **labels)
    return 0.0 if value is None else value


def windows_reach(process: DaemonProcess, stream: str, expected: Mapping[str, float]) -> Samples:
    """The first scrape whose evaluation shows every feature of ``expected`` at its count."""

    def done() -> Samples | None:
        samples = process.metrics()
        got = {feature: window(samples, stream, feature) for feature in expected}
        return samples if got == dict(expected) else None

    samples: Samples = wait_for(done, 30.0, f"{stream} windows {dict(expected)}")
    return samples


def post_fixture(
    process: DaemonProcess, name: str, path: str = "/v1/cloudevents", **extra: str
) -> Any:
    headers, body = read_http(name)
    reply = process.post(path, body, {**headers, **extra})
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()


def test_kserve_request_then_response_feed_their_own_features(daemon: DaemonProcess) -> None:
    before = daemon.metrics()
    # KServe's logger.url may name the daemon's base URL when root is on.
    assert post_fixture(daemon, "kserve_v1_request.http", "/") == {
        "rows": 2,
        "events": 1,
        "dropped": {},
    }
    samples = windows_reach(daemon, "kserve_iris", {name: 2 for name in IRIS})
    assert window(samples, "kserve_iris", "species") == 0  # a request does not reach outputs
    assert window(samples, "kserve_iris", "label") == 0  # no event maps it
    assert values(samples, "kserve_iris", "sepal_length", "ok") == 2
    assert values(samples, "kserve_iris", "species", "missing") == 0
    assert counter(samples, "driftmon_ingest_rows_total", stream="kserve_iris") == 2
    assert (
        counter(samples, "driftmon_ingest_requests_total", code="200")
        == counter(before, "driftmon_ingest_requests_total", code="200") + 1
    )

    assert post_fixture(daemon, "kserve_v1_response.http")["rows"] == 2
    samples = windows_reach(daemon, "kserve_iris", {"species": 2, "sepal_length": 2})
    assert values(samples, "kserve_iris", "species", "ok") == 2  # integer 1 matches category "1"
    assert values(samples, "kserve_iris", "sepal_length", "ok") == 2  # the response left it alone
    assert window(samples, "kserve_iris", "label") == 0


def test_kserve_v2_events(daemon: DaemonProcess) -> None:
    post_fixture(daemon, "kserve_v2_request.http")
    post_fixture(daemon, "kserve_v2_response.http")
    samples = windows_reach(daemon, "kserve_v2", {**{name: 2 for name in IRIS}, "species": 2})
    assert values(samples, "kserve_v2", "petal_width", "ok") == 2
    assert window(samples, "kserve_v2", "label") == 0


def test_seldon_events_v2_and_tensorflow_protocols(daemon: DaemonProcess) -> None:
    for name in (
        "seldon_v2_request.http",
        "seldon_v2_response.http",
        "seldon_tensorflow_request.http",
        "seldon_tensorflow_response.http",
    ):
        post_fixture(daemon, name)
    samples = windows_reach(daemon, "seldon_iris", {**{name: 3 for name in IRIS}, "species": 3})
    assert values(samples, "seldon_iris", "species", "ok") == 3  # classes 0, 1, 2
    samples = windows_reach(
        daemon, "seldon_tf", {**{n: 2 for n in IRIS}, **{p: 2 for p in PROBABILITIES}}
    )
    assert values(samples, "seldon_tf", "p_virginica", "ok") == 2


def test_structured_and_batched_events_from_the_sdk(daemon: DaemonProcess) -> None:
    attributes = {"inferenceservicename": "sdk-model"}
    single = to_structured(sdk_event({"instances": [[5, 3, 1, 0.2]]}, **attributes), JSONFormat())
    reply = daemon.post("/v1/cloudevents", single.body, single.headers)
    assert (reply.status, reply.json()) == (200, {"rows": 1, "events": 1, "dropped": {}})
    bodies = [
        to_structured(
            sdk_event({"instances": [[5, 3, 1, 0.2], [6, 3, 4, 1.3]]}, **attributes), JSONFormat()
        ).body,
        to_structured(
            sdk_event({"predictions": [0, 2, 1]}, KSERVE_RESPONSE, **attributes), JSONFormat()
        ).body,
    ]
    reply = daemon.post(
        "/v1/cloudevents", b"[" + b",".join(bodies) + b"]", {"Content-Type": BATCH_MEDIA_TYPE}
    )
    assert (reply.status, reply.json()) == (200, {"rows": 5, "events": 2, "dropped": {}})
    samples = windows_reach(daemon, "sdk", {"sepal_length": 3, "species": 3})
    assert values(samples, "sdk", "species", "ok") == 3


def test_events_for_no_stream_are_counted_and_answered_200(daemon: DaemonProcess) -> None:
    before = daemon.metrics()
    headers, body = read_http("kserve_v1_request.http")
    reply = daemon.post("/v1/cloudevents", body, {**headers, "Ce-Inferenceservicename": "nobody"})
    assert (reply.status, reply.json()) == (
        200,
        {"rows": 0, "events": 1, "dropped": {"no_stream": 1}},
    )
    feedback = {**headers, "Ce-Type": "io.seldon.serving.feedback"}
    assert daemon.post("/v1/cloudevents", body, feedback).json()["dropped"] == {"not_mapped": 1}
    after = daemon.metrics()
    for reason in ("no_stream", "not_mapped"):
        name = "driftmon_ingest_dropped_events_total"
        assert counter(after, name, reason=reason) == counter(before, name, reason=reason) + 1
    assert (
        counter(after, "driftmon_ingest_requests_total", code="200")
        == counter(before, "driftmon_ingest_requests_total", code="200") + 2
    )


def test_malformed_event_is_400_naming_the_field_and_applies_nothing(daemon: DaemonProcess) -> None:
    before = daemon.metrics()
    good = structured({"instances": [[1, 2, 3, 4]]}, service="rejected-model")
    bad = structured({"instances": [[1, 2, 3, 4], "x"]}, service="rejected-model")
    reply = daemon.post("/v1/cloudevents", dumps([good, bad]), {"Content-Type": BATCH_MEDIA_TYPE})
    assert reply.status == 400
    assert reply.json()["error"].startswith(
        "events[1].data.instances[1]: a string row gives one value"
    )
    headers = binary_headers(service="rejected-model", namespace=None)
    del headers["ce-type"]
    reply = daemon.post("/v1/cloudevents", b'{"instances": [[1, 2, 3, 4]]}', headers)
    assert (reply.status, reply.json()["error"]) == (
        400,
        "ce-type header: missing (a CloudEvent needs specversion, id, source, type)",
    )
    after = daemon.metrics()
    assert counter(after, "driftmon_ingest_rows_total", stream="rejected") == 0
    assert values(after, "rejected", "sepal_length", "ok") == 0
    name = "driftmon_ingest_dropped_events_total"
    assert (
        counter(after, name, reason="bad_payload")
        == counter(before, name, reason="bad_payload") + 3
    )
    assert (
        counter(after, "driftmon_ingest_requests_total", code="400")
        == counter(before, "driftmon_ingest_requests_total", code="400") + 2
    )


def test_root_path_is_off_by_default(guarded: DaemonProcess) -> None:
    headers, body = read_http("kserve_v1_request.http")
    headers["Authorization"] = f"Bearer {TOKEN}"
    assert guarded.post("/", body, headers).status == 404
    assert guarded.get("/").headers["Content-Type"].startswith("text/html")  # the overview
    assert counter(guarded.metrics(), "driftmon_ingest_rows_total", stream="kserve_iris") == 0


def test_cloudevents_need_the_bearer_token(guarded: DaemonProcess) -> None:
    headers, body = read_http("kserve_v1_request.http")
    reply = guarded.post("/v1/cloudevents", body, headers)
    assert reply.status == 401
    reply = guarded.post("/v1/cloudevents", body, {**headers, "Authorization": "Bearer wrong"})
    assert reply.status == 401
    samples = guarded.metrics()
    assert counter(samples, "driftmon_ingest_requests_total", code="401") == 2
    assert counter(samples, "driftmon_ingest_rows_total", stream="kserve_iris") == 0
    reply = guarded.post("/v1/cloudevents", body, {**headers, "Authorization": f"Bearer {TOKEN}"})
    assert (reply.status, reply.json()["rows"]) == (200, 2)
    windows_reach(guarded, "kserve_iris", {name: 2 for name in IRIS})


# --- Seldon Core's own protocol: {"data": {"ndarray" | "tensor", "names"}} -------------


def test_seldon_protocol_ndarray_maps_by_names_when_they_name_features() -> None:
    payload = {"data": {"names": ["b", "a", "extra"], "ndarray": [[1, 2, 9], [3, 4, 9]]}}
    batch = payload_batch(payload, "inputs", ("a", "b"))
    assert batch == Batch(2, {"a": [2, 4], "b": [1, 3]}, 2)


def test_seldon_protocol_ndarray_maps_by_position_without_feature_names() -> None:
    payload = {"data": {"names": ["t:0", "t:1"], "ndarray": [[0.1, 0.9], [0.7, 0.3]]}}
    batch = payload_batch(payload, "outputs", ("p_no", "p_yes"))
    assert batch == Batch(2, {"p_no": [0.1, 0.7], "p_yes": [0.9, 0.3]}, 0)
    scalars = payload_batch({"data": {"ndarray": [0.2, 0.8]}}, "outputs", ("score",))
    assert scalars == Batch(2, {"score": [0.2, 0.8]}, 0)


def test_seldon_protocol_tensor_is_row_major() -> None:
    payload = {"data": {"tensor": {"shape": [2, 3], "values": [1, 2, 3, 4, 5, 6]}}}
    batch = payload_batch(payload, "inputs", ("x", "y", "z"))
    assert batch == Batch(2, {"x": [1, 4], "y": [2, 5], "z": [3, 6]}, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tensor": {"shape": [2, 3], "values": [1, 2]}}, r"data\.tensor\.values: 2 values"),
        ({"tensor": {"shape": "2", "values": []}}, r"data\.tensor\.shape"),
        ({"tensor": [1]}, r"data\.tensor: expected an object"),
        ({"ndarray": {"a": 1}}, r"data\.ndarray: expected an array"),
        ({"names": ["a"], "ndarray": [[1, 2]]}, r"data\.ndarray\[0\]: 2 values for 1 names"),
    ],
)
def test_malformed_seldon_protocol_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(CloudEventError, match=message):
        payload_batch({"data": data}, "inputs", ("a", "b"))
