"""One contract, run over every way rows reach a stream (river ``checks/`` style).

The same rows go to a real daemon once per ingest format, each format to a
stream of its own with the same features; every stream's live histogram must
then equal the one the bin rules give for those rows (worked out here, value
by value). A format joins by adding an encoder to :data:`ENCODERS`. The rows
hold only what every format can carry: numbers or nothing for the numeric
feature, strings or nothing for the categorical one, and rows that leave a
field out.
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pytest
from harness import DaemonProcess, Reply, wait_for

from driftmon.sources.media import (
    ARROW_STREAM_MEDIA_TYPE,
    JSON_MEDIA_TYPES,
    NDJSON_MEDIA_TYPES,
)

Row = dict[str, Any]
Request = tuple[str, dict[str, str], bytes]  # path, headers, body
Encoder = Callable[[str, list[Row]], Request]

FIELDS = ("x", "c")
CATEGORIES = ("a", "b")
FEATURES = [
    {"name": "x", "type": "numeric", "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 10}},
    {"name": "c", "type": "categorical", "categories": list(CATEGORIES)},
]


def rows_path(stream: str) -> str:
    return f"/v1/streams/{stream}/rows"


def column(rows: list[Row], name: str) -> list[Any]:
    return [row.get(name) for row in rows]


def json_rows(stream: str, rows: list[Row]) -> Request:
    return rows_path(stream), {"Content-Type": "application/json"}, orjson.dumps(rows)


def json_columns(stream: str, rows: list[Row]) -> Request:
    body = orjson.dumps({"columns": {name: column(rows, name) for name in FIELDS}})
    return rows_path(stream), {"Content-Type": "application/json"}, body


def ndjson(stream: str, rows: list[Row]) -> Request:
    body = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    return rows_path(stream), {"Content-Type": "application/x-ndjson"}, body


def arrow(stream: str, rows: list[Row]) -> Request:
    table = pa.table(
        {
            "x": pa.array(column(rows, "x"), pa.float64()),
            "c": pa.array(column(rows, "c"), pa.string()).dictionary_encode(),
        }
    )
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=37)
    body = sink.getvalue().to_pybytes()
    return rows_path(stream), {"Content-Type": "application/vnd.apache.arrow.stream"}, body


def attributes(stream: str, index: int) -> dict[str, str]:
    return {
        "specversion": "1.0",
        "id": f"{stream}-{index}",
        "source": "http://localhost/contract",
        "type": "org.kubeflow.serving.inference.request",
        "inferenceservicename": stream,
    }


def cloudevents_binary_v1(stream: str, rows: list[Row]) -> Request:
    headers = {f"ce-{key}": value for key, value in attributes(stream, 0).items()}
    headers["Content-Type"] = "application/json"
    return "/v1/cloudevents", headers, orjson.dumps({"instances": rows})


def cloudevents_structured_base64(stream: str, rows: list[Row]) -> Request:
    payload = orjson.dumps({"instances": rows})
    event = {**attributes(stream, 0), "data_base64": base64.b64encode(payload).decode()}
    return "/v1/cloudevents", {"Content-Type": "application/cloudevents+json"}, orjson.dumps(event)


def cloudevents_batched_v1(stream: str, rows: list[Row]) -> Request:
    """One event per 50 rows, in one batch."""
    events = [
        {**attributes(stream, k), "datacontenttype": "application/json",
         "data": {"instances": rows[start : start + 50]}}
        for k, start in enumerate(range(0, len(rows), 50))
    ]
    return (
        "/v1/cloudevents",
        {"Content-Type": "application/cloudevents-batch+json"},
        orjson.dumps(events),
    )


def cloudevents_seldon_by_name(stream: str, rows: list[Row]) -> Request:
    """Seldon's ``{"data": {"names", "ndarray"}}`` rows; a left-out field is null here."""
    ndarray = [[row.get(name) for name in FIELDS] for row in rows]
    headers = {f"ce-{key}": value for key, value in attributes(stream, 0).items()}
    headers["ce-type"] = "io.seldon.serving.inference.request"
    headers["Content-Type"] = "application/json"
    return "/v1/cloudevents", headers, orjson.dumps({"data": {"names": FIELDS, "ndarray": ndarray}})


ENCODERS: dict[str, Encoder] = {
    "json-rows": json_rows,
    "json-columns": json_columns,
    "ndjson": ndjson,
    "arrow": arrow,
    "cloudevents-binary-v1": cloudevents_binary_v1,
    "cloudevents-structured-base64": cloudevents_structured_base64,
    "cloudevents-batched-v1": cloudevents_batched_v1,
    "cloudevents-seldon-by-name": cloudevents_seldon_by_name,
}


def stream_name(format_name: str) -> str:
    return format_name.replace("-", "_")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("contract")
    reference = folder / "reference.ndjson"
    reference.write_text(
        "".join(json.dumps({"x": k % 10 + 0.5, "c": "ab"[k % 2]}) + "\n" for k in range(40))
    )
    config = {
        "engine": {"evaluate_every": "200ms"},
        "defaults": {"window": {"samples": 1_000_000}},
        "streams": [
            {
                "name": stream_name(name),
                "reference": {"file": str(reference)},
                "features": FEATURES,
                **(
                    {"cloudevents": {"service": stream_name(name), "inputs": list(FIELDS)}}
                    if name.startswith("cloudevents")
                    else {}
                ),
            }
            for name in ENCODERS
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config))
    with DaemonProcess(path) as process:
        yield process


def contract_rows(seed: int, n: int = 200) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row: Row = {}
        x = rng.choice(["number", "number", "number", "edge", "null", "absent"])
        if x == "number":
            row["x"] = round(rng.uniform(-2.0, 12.0), 3)
        elif x == "edge":
            row["x"] = rng.choice([0.0, 10.0, -0.0, 9.999999, 1e300, -1e300])
        elif x == "null":
            row["x"] = None
        c = rng.choice(["a", "b", "other", "null", "absent"])
        if c in CATEGORIES:
            row["c"] = c
        elif c == "other":
            row["c"] = rng.choice(["zz", "A", "", " a"])
        elif c == "null":
            row["c"] = None
        rows.append(row)
    return rows


def expected_counts(rows: list[Row]) -> dict[str, list[int]]:
    """The bin rules, value by value: numeric [underflow, 10 regular, overflow, missing,
    invalid] over [0, 10); categorical [a, b, other, missing, invalid]."""
    x = [0] * 14
    c = [0] * 5
    for row in rows:
        value = row.get("x")
        if value is None:
            x[12] += 1
        elif value < 0:
            x[0] += 1
        elif value >= 10:
            x[11] += 1
        else:
            x[1 + math.floor(value)] += 1
        category = row.get("c")
        if category is None:
            c[3] += 1
        elif category in CATEGORIES:
            c[CATEGORIES.index(category)] += 1
        else:
            c[2] += 1
    return {"x": x, "c": c}


def live(process: DaemonProcess, stream: str) -> dict[str, list[int]]:
    return {
        name: [int(n) for n in process.monitor(stream, name)["live_counts"]] for name in FIELDS
    }


def send(process: DaemonProcess, format_name: str, rows: list[Row]) -> Reply:
    path, headers, body = ENCODERS[format_name](stream_name(format_name), rows)
    return process.post(path, body, headers)


@pytest.mark.parametrize("format_name", sorted(ENCODERS))
def test_every_format_bins_the_same_rows_alike(daemon: DaemonProcess, format_name: str) -> None:
    stream = stream_name(format_name)
    before = live(daemon, stream)
    rows = contract_rows(seed=sorted(ENCODERS).index(format_name))
    reply = send(daemon, format_name, rows)
    assert reply.status == 200, reply.body
    expected = expected_counts(rows)
    wanted = {name: [a + b for a, b in zip(before[name], expected[name], strict=True)]
              for name in FIELDS}
    wait_for(lambda: live(daemon, stream) == wanted, what=f"{format_name} counts")


@pytest.mark.parametrize("format_name", sorted(ENCODERS))
def test_a_bad_body_in_any_format_applies_nothing(daemon: DaemonProcess, format_name: str) -> None:
    stream = stream_name(format_name)
    before = live(daemon, stream)
    path, headers, body = ENCODERS[format_name](stream, contract_rows(seed=99, n=20))
    reply = daemon.post(path, body[: len(body) // 2], headers)
    assert 400 <= reply.status < 500, (reply.status, reply.body)
    assert "error" in reply.json()
    assert live(daemon, stream) == before


def test_the_expected_counts_follow_the_bin_rules() -> None:
    rows: list[Row] = [{"x": 0.0, "c": "a"}, {"x": 10.0, "c": "zz"}, {"x": None}, {"x": -0.5}]
    assert expected_counts(rows) == {
        "x": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
        "c": [1, 0, 1, 2, 0],
    }


def test_the_contract_covers_every_kind_of_rows_body() -> None:
    """JSON, NDJSON and Arrow (driftmon.sources.media): each has an encoder here."""
    kinds = [JSON_MEDIA_TYPES, NDJSON_MEDIA_TYPES, frozenset({ARROW_STREAM_MEDIA_TYPE})]
    sent = {
        ENCODERS[name]("s", [])[1]["Content-Type"]
        for name in ENCODERS
        if not name.startswith("cloudevents")
    }
    for kind in kinds:
        assert sent & kind, sorted(kind)
