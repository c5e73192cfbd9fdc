"""Fuzz the running daemon's ingest endpoints (issue 7, promise 3: bad input; docs/http-api.md).

A real daemon (``python -m driftmon run``, port 0) is fed request bodies that
hypothesis draws: random bytes, truncated JSON, deep nesting, huge numbers,
``NaN``/``Infinity`` literals (and their look-alikes that are not JSON),
wrong content types, invalid UTF-8, columns of mismatched lengths, rows that
are not objects, bodies over the size limit, unknown streams, and CloudEvents
in binary, structured and batched modes to ``/v1/cloudevents`` and ``/``
(V1 and V2 payloads with odd shapes, base64, broken headers). Valid bodies are
mixed in, so that the checks below see rows applied while garbage is refused.

Promises checked after every batch of bodies (several in flight at once on
keep-alive connections, then one snapshot of the counts):

- every answer is 2xx or 4xx, never 5xx, within the request timeout (no hang);
  4xx answers carry a JSON ``{"error": ...}``;
- a body built to be valid is answered 200 with exactly its rows; one built
  to be invalid gets the 4xx it must (400, 404, 413, 415);
- nothing is half-applied: ``driftmon_ingest_rows_total`` of each stream grew
  by exactly the rows of its 200 answers; every monitor's live counts grew
  bin by bin by non-negative amounts summing to the rows that reached it, and
  ``driftmon_ingest_values_total`` grew by exactly the same amounts per kind;
  ``driftmon_ingest_requests_total`` grew by exactly the answers per code.

At the end the daemon must still be alive and healthy, and its log free of
tracebacks. ``tests/test_fuzz_ingest.py`` runs this with at least 10 000
bodies; the long run is::

    python bench/fuzz_ingest.py [--bodies 100000] [--batch 12] [--seed N]

It prints the figures (bodies fuzzed, answers by status, 5xx seen, rows
acknowledged, seconds) and exits 1 when a promise was broken, printing the
failing batch (each broken promise names its own body; batches are not
shrunk, since a wedged daemon would make every shrinking step wait out the
request timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import DaemonProcess, parse_metrics, sample, series  # noqa: E402

# --- the daemon under test ---------------------------------------------------------------------

ROWS_STREAM = "fz"
CE_STREAM = "ce"
CE_SERVICE = "fuzz-model"
MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 64  # driftmon.parse.DEFAULT_MAX_DEPTH, the nesting a body may have
ROWS_FIELDS = ("x", "c", "y")
CE_INPUTS = ("a", "b")
CE_OUTPUTS = ("p",)
MONITORS = (
    *((ROWS_STREAM, name) for name in ROWS_FIELDS),
    *((CE_STREAM, name) for name in (*CE_INPUTS, *CE_OUTPUTS)),
)
REQUEST_TIMEOUT_S = 15.0
"""A request not answered within this is a hang, and a failure (the slowest answer seen in
a healthy run is well under a second)."""


def write_config(folder: Path) -> Path:
    """A config in ``folder``: stream ``fz`` for row bodies, ``ce`` for CloudEvents."""
    rows_reference = [
        {"x": (i * 7) % 13 - 1.5, "c": ("red", "green", "blue", "pink")[i % 4], "y": i / 5 - 2}
        for i in range(60)
    ]
    ce_reference = [{"a": (i % 9) / 8, "b": "uv"[i % 2], "p": (i % 11) / 10} for i in range(60)]
    for name, rows in (("fz.ndjson", rows_reference), ("ce.ndjson", ce_reference)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": MAX_BODY_BYTES},
        "ingest": {"workers": 2, "queue_rows": 1_000_000, "cloudevents": {"root": True}},
        "engine": {"evaluate_every": "1s"},
        "state": {"dir": str(folder / "state"), "checkpoint_every": "2s"},
        # Panes of 15 minutes: nothing posted during a run falls out of the window.
        "defaults": {"window": {"length": "1h", "panes": 4}},
        "streams": [
            {
                "name": ROWS_STREAM,
                "reference": {"file": "fz.ndjson"},
                "features": [
                    {"name": "x", "type": "numeric",
                     "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 10}},
                    {"name": "c", "type": "categorical", "categories": ["red", "green", "blue"]},
                    {"name": "y", "type": "numeric",
                     "bins": {"kind": "edges", "edges": [-1, 0, 1, 100]}},
                ],
            },
            {
                "name": CE_STREAM,
                "reference": {"file": "ce.ndjson"},
                "features": [
                    {"name": "a", "type": "numeric",
                     "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 4}},
                    {"name": "b", "type": "categorical", "categories": ["u", "v"]},
                    {"name": "p", "type": "numeric",
                     "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 5}},
                ],
                "cloudevents": {
                    "service": CE_SERVICE, "inputs": list(CE_INPUTS), "outputs": list(CE_OUTPUTS)
                },
            },
        ],
    }  # fmt: skip
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


# --- probes: one request each, with what its answer must be ---------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request and what its answer must be.

    ``status`` is the exact status it must get (``None``: any 2xx or 4xx);
    ``client_error`` requires some 4xx; ``rows`` is the row count a 200 must
    report. ``chunked`` sends the body without a ``Content-Length``.
    """

    kind: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    status: int | None = None
    client_error: bool = False
    rows: int | None = None
    chunked: bool = False

    @property
    def stream(self) -> str | None:
        """The stream whose rows a 200 answer applied (``None`` for an unknown one)."""
        if self.path in ("/", "/v1/cloudevents"):
            return CE_STREAM
        name = self.path.removeprefix("/v1/streams/").removesuffix("/rows")
        return name if name in (ROWS_STREAM, CE_STREAM) else None

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 400 else self.body[:400] + b"...(truncated)"
        return (
            f"Probe({self.kind}, {self.path}, headers={dict(self.headers)}, body={body!r}, "
            f"len={len(self.body)}, status={self.status}, client_error={self.client_error}, "
            f"rows={self.rows}, chunked={self.chunked})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints falsifying examples with this: keep big bodies short there too.
        printer.text(repr(self))


ROWS_PATH = f"/v1/streams/{ROWS_STREAM}/rows"
JSON_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "text/json",
    'application/json; charset="UTF-8"',
)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
BAD_TYPES = (
    "text/plain",
    "application/xml",
    "application/octet-stream",
    "multipart/form-data",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/x-www-form-urlencoded",
    "json",
    "",
)
GOOD_NUMBER_TOKENS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999999",
    "-1e400",
    "1" * 400,
    "-" + "9" * 30,
    "18446744073709551616",
    "0.0000001e-99999",
    "-0",
    "1E+2",
    "123456789012345678901234567890.5e10",
    "4" * 5000,
)
BAD_NUMBER_TOKENS = (
    "nan", "inf", "-NaN", "+Infinity", "Infinity1", "01", "1.", "-", ".5", "+1", "0x10", "1e",
    "NAN", "infinity", "undefined", "True", "None", "1_000", "--1", "1e+", "NaNa",
)  # fmt: skip
BAD_UTF8 = (b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf")
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def _json_bytes(value: object, *, ascii_only: bool = True, compact: bool = False) -> bytes:
    """``json.dumps`` (NaN and Infinity literals included), as UTF-8."""
    separators = (",", ":") if compact else None
    return json.dumps(value, ensure_ascii=ascii_only, separators=separators).encode("utf-8")


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["red", "green", "blue", "3", "true", "", "u", "v"]),
)
# Shallow values keep drawing cheap; deep() covers nesting.
json_values = st.one_of(
    leaves,
    st.lists(leaves, max_size=3),
    st.dictionaries(st.text(max_size=4), leaves, max_size=2),
)
row_keys = st.sampled_from(ROWS_FIELDS) | st.text(max_size=5)
rows_strategy = st.lists(st.dictionaries(row_keys, json_values, max_size=4), max_size=5)


@st.composite
def rows_body(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid JSON array of row objects, and its row count."""
    rows = draw(rows_strategy)
    body = _json_bytes(rows, ascii_only=draw(st.booleans()), compact=draw(st.booleans()))
    return body, len(rows)


@st.composite
def columns_body(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid ``{"columns": ...}`` body, and its row count."""
    names = draw(st.lists(row_keys, unique=True, max_size=4))
    n = draw(st.integers(0, 6))
    columns = {name: draw(st.lists(json_values, min_size=n, max_size=n)) for name in names}
    return _json_bytes({"columns": columns}, ascii_only=draw(st.booleans())), n if names else 0


@st.composite
def ndjson_body(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid NDJSON body (CRLF or LF, blank lines), and its row count."""
    rows = draw(rows_strategy.filter(bool))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines: list[str] = []
    for row in rows:
        lines += draw(st.lists(st.sampled_from(["", " ", "\t"]), max_size=2))
        lines.append(json.dumps(row, ensure_ascii=draw(st.booleans())))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    return text.encode("utf-8"), len(rows)


@st.composite
def valid_rows(draw: st.DrawFn) -> Probe:
    """A valid rows body of any shape, maybe behind a byte order mark and whitespace."""
    maker = draw(st.sampled_from(["rows", "columns", "ndjson"]))
    if maker == "ndjson":
        body, n = draw(ndjson_body())
        content_type = draw(st.sampled_from(NDJSON_TYPES))
    else:
        body, n = draw(rows_body() if maker == "rows" else columns_body())
        content_type = draw(st.sampled_from(JSON_TYPES))
        body = (
            draw(st.sampled_from([b"", b" \n", b"\xef\xbb\xbf"]))
            + body
            + b" " * draw(st.integers(0, 2))
        )
    return Probe(f"valid-{maker}", ROWS_PATH, body, (("Content-Type", content_type),), 200, rows=n)


@st.composite
def number_tokens(draw: st.DrawFn) -> Probe:
    """A row whose ``x`` is a number token written by hand: huge, tiny, NaN, or not JSON."""
    good = draw(st.booleans())
    token = draw(st.sampled_from(GOOD_NUMBER_TOKENS if good else BAD_NUMBER_TOKENS))
    shape = draw(st.sampled_from(["rows", "columns", "ndjson"]))
    if shape == "rows":
        body, content_type = f'[{{"c": "red", "x": {token}}}]', "application/json"
    elif shape == "columns":
        body, content_type = f'{{"columns": {{"x": [{token}], "y": [1]}}}}', "application/json"
    else:
        body, content_type = f'{{"x": {token}}}\n', "application/x-ndjson"
    headers = (("Content-Type", content_type),)
    if good:
        return Probe("huge-or-literal", ROWS_PATH, body.encode(), headers, 200, rows=1)
    return Probe("not-a-number", ROWS_PATH, body.encode(), headers, 400)


@st.composite
def truncated(draw: st.DrawFn) -> Probe:
    """A valid JSON body cut short: never valid (no trailing whitespace to cut into)."""
    body, _ = draw(rows_body() | columns_body())
    cut = draw(st.integers(0, len(body) - 1))
    headers = (("Content-Type", "application/json"),)
    return Probe("truncated", ROWS_PATH, body[:cut], headers, 400)


@st.composite
def bad_utf8(draw: st.DrawFn) -> Probe:
    """A valid body with an invalid UTF-8 sequence inserted anywhere."""
    probe = draw(valid_rows())
    where = draw(st.integers(0, len(probe.body)))
    body = probe.body[:where] + draw(st.sampled_from(BAD_UTF8)) + probe.body[where:]
    return Probe("invalid-utf8", ROWS_PATH, body, probe.headers, 400)


@st.composite
def deep(draw: st.DrawFn) -> Probe:
    """Nesting from 1 to 3000 levels, balanced or not, as a value, a body or an NDJSON line."""
    d = draw(st.integers(1, 3000) | st.integers(MAX_DEPTH - 4, MAX_DEPTH + 2))
    kind = draw(st.sampled_from(["value", "object-value", "bare", "open", "ndjson", "columns"]))
    json_type = (("Content-Type", "application/json"),)
    if kind in ("value", "object-value"):
        nest = "[" * d + "]" * d if kind == "value" else '{"k":' * d + "1" + "}" * d
        body = f'[{{"x": {nest}}}]'.encode()
        ok = 2 + d <= MAX_DEPTH  # the array, the row, then the value's levels
        return Probe(f"deep-{kind}", ROWS_PATH, body, json_type, 200 if ok else 400, rows=1)
    if kind == "bare":
        body = ("[" * d + "]" * d).encode()
        return Probe("deep-bare", ROWS_PATH, body, json_type, 200 if d == 1 else 400, rows=0)
    if kind == "open":
        opener = draw(st.sampled_from(["[", "{", '[{"x":', '{"a":[']))
        return Probe("deep-open", ROWS_PATH, (opener * d).encode(), json_type, 400)
    if kind == "ndjson":
        body = ('{"x": ' + "[" * d + "]" * d + "}\n").encode()
        ok = 1 + d <= MAX_DEPTH
        headers = (("Content-Type", "application/x-ndjson"),)
        return Probe("deep-ndjson", ROWS_PATH, body, headers, 200 if ok else 400, rows=1)
    body = ('{"columns": {"x": [' + "[" * d + "]" * d + "]}}").encode()
    ok = 3 + d <= MAX_DEPTH
    return Probe("deep-columns", ROWS_PATH, body, json_type, 200 if ok else 400, rows=1)


@st.composite
def not_objects(draw: st.DrawFn) -> Probe:
    """Rows that are not all objects, top levels that are neither array nor columns."""
    kind = draw(st.sampled_from(["row", "ndjson-line", "top", "columns-shape"]))
    json_type = (("Content-Type", "application/json"),)
    odd = st.one_of(leaves, st.lists(leaves, max_size=3))
    if kind == "row":
        rows: list[object] = list(draw(rows_strategy))
        rows.insert(draw(st.integers(0, len(rows))), draw(odd))
        return Probe("non-object-row", ROWS_PATH, _json_bytes(rows), json_type, 400)
    if kind == "ndjson-line":
        rows = list(draw(rows_strategy))
        rows.insert(draw(st.integers(0, len(rows))), draw(odd))
        body = "\n".join(json.dumps(row) for row in rows).encode()
        headers = (("Content-Type", "application/x-ndjson"),)
        return Probe("non-object-line", ROWS_PATH, body, headers, 400)
    if kind == "top":
        top = draw(leaves | st.dictionaries(st.text(max_size=4).filter(lambda k: k != "columns"),
                                            leaves, max_size=2))  # fmt: skip
        return Probe("top-level", ROWS_PATH, _json_bytes(top), json_type, 400)
    columns = draw(
        st.sampled_from(
            [
                {"columns": 5},
                {"columns": [1, 2]},
                {"columns": {"x": 3}},
                {"columns": {"x": [1]}, "extra": 1},
                {"columns": None},
            ]
        )
    )
    return Probe("columns-shape", ROWS_PATH, _json_bytes(columns), json_type, 400)


@st.composite
def mismatched_columns(draw: st.DrawFn) -> Probe:
    """Two or more columns whose lengths differ."""
    names = draw(st.lists(row_keys, unique=True, min_size=2, max_size=4))
    lengths = draw(
        st.lists(st.integers(0, 5), min_size=len(names), max_size=len(names)).filter(
            lambda ls: len(set(ls)) > 1
        )
    )
    columns = {name: [1.5] * n for name, n in zip(names, lengths, strict=True)}
    headers = (("Content-Type", "application/json"),)
    return Probe("mismatched-columns", ROWS_PATH, _json_bytes({"columns": columns}), headers, 400)


@st.composite
def wrong_type(draw: st.DrawFn) -> Probe:
    """A valid body under a media type or charset driftmon does not read, or none at all."""
    probe = draw(valid_rows())
    choice = draw(st.sampled_from([*BAD_TYPES, None, "random"]))
    if choice is None:
        return Probe("no-content-type", ROWS_PATH, probe.body, (), 415)
    if choice == "random":
        text = draw(st.text(PRINTABLE, max_size=30))
        return Probe("random-content-type", ROWS_PATH, probe.body, (("Content-Type", text),))
    return Probe("wrong-content-type", ROWS_PATH, probe.body, (("Content-Type", choice),), 415)


ANY_TYPE = st.sampled_from([*JSON_TYPES, *NDJSON_TYPES, *BAD_TYPES])


@st.composite
def random_bytes(draw: st.DrawFn) -> Probe:
    """Bytes, under any media type."""
    body = draw(st.binary(max_size=300))
    return Probe("random-bytes", ROWS_PATH, body, (("Content-Type", draw(ANY_TYPE)),))


@st.composite
def mutated(draw: st.DrawFn) -> Probe:
    """A valid body with a few bytes replaced, inserted or deleted."""
    probe = draw(valid_rows())
    body = bytearray(probe.body)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(0, 255) | st.sampled_from(list(b'[]{}",:0-eE\\ \n')))
        if action == "insert" or not body:
            body.insert(where, byte)
        elif action == "replace":
            body[min(where, len(body) - 1)] = byte
        else:
            del body[min(where, len(body) - 1)]
    return Probe("mutated", ROWS_PATH, bytes(body), probe.headers)


@st.composite
def oversized(draw: st.DrawFn) -> Probe:
    """A body over ``server.max_body_bytes``, with or without a ``Content-Length``."""
    size = MAX_BODY_BYTES + draw(st.integers(1, 4096))
    body = b"[" + b" " * (size - 2) + b"]"
    path = draw(st.sampled_from([ROWS_PATH, "/v1/cloudevents"]))
    headers = (("Content-Type", "application/json"),)
    return Probe("oversized", path, body, headers, 413, chunked=draw(st.booleans()))


@st.composite
def unknown_stream(draw: st.DrawFn) -> Probe:
    """A valid body to a stream the config does not name."""
    name = draw(
        st.text("abcefz0129_-", min_size=1, max_size=24).filter(
            lambda n: n not in (ROWS_STREAM, CE_STREAM)
        )
    )
    probe = draw(valid_rows())
    return Probe("unknown-stream", f"/v1/streams/{name}/rows", probe.body, probe.headers, 404)


# --- CloudEvents ---------------------------------------------------------------------------------

CE_TYPES = (
    "org.kubeflow.serving.inference.request",
    "org.kubeflow.serving.inference.response",
    "io.seldon.serving.inference.request",
    "io.seldon.serving.inference.response",
    "org.example.other",
)
CE_PATHS = ("/v1/cloudevents", "/")
ce_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**66), 2**66),
    st.floats(),
    st.sampled_from(["u", "v", "w", "", "0.5"]),
)
ce_values = ce_leaves | st.lists(ce_leaves, max_size=3)
ce_names = st.sampled_from(["a", "b", "p", "t", "", "input-0"])
dims = st.integers(0, 4) | st.sampled_from([10**12, 2**63, 2**64 + 1])


@st.composite
def tensor(draw: st.DrawFn) -> object:
    """A V2 tensor: consistent (its data fills its shape), huge but empty, or odd members."""
    how = draw(st.sampled_from(["consistent", "consistent", "huge-empty", "odd"]))
    if how == "consistent":
        rows, width = draw(st.integers(0, 4)), draw(st.integers(0, 3))
        shape = [rows] if width == 0 and draw(st.booleans()) else [rows, width]
        n = math.prod(shape)
        flat = draw(st.lists(ce_leaves, min_size=n, max_size=n))
        data: object = flat
        if len(shape) == 2 and width and draw(st.booleans()):
            data = [flat[i * width : (i + 1) * width] for i in range(rows)]
        value: dict[str, object] = {"name": draw(ce_names), "shape": shape,
                                    "datatype": "FP64", "data": data}  # fmt: skip
    elif how == "huge-empty":
        # Shapes that claim a huge number of rows and hold no values at all.
        huge = draw(st.sampled_from([10**6, 10**12, 2**63, 2**64 + 1]))
        shape = draw(st.sampled_from([[huge, 0], [0, huge], [huge], [huge, 0, 1]]))
        data = draw(st.sampled_from([[], [[]], [[], []]]))
        value = {"name": draw(ce_names), "shape": shape, "datatype": "FP32", "data": data}
    else:
        value = {
            "name": draw(ce_names | st.integers()),
            "shape": draw(st.lists(dims, max_size=3) | ce_leaves),
            "datatype": draw(st.sampled_from(["FP32", "BYTES", "INT64"]) | ce_leaves),
            "data": draw(st.lists(ce_values, max_size=6) | ce_leaves),
        }
    for key in draw(st.lists(st.sampled_from(["name", "shape", "datatype", "data"]), max_size=1)):
        value.pop(key, None)
    return value


@st.composite
def ce_payload(draw: st.DrawFn) -> object:
    """A V1 or V2 request or response payload, or some other JSON value."""
    kind = draw(st.sampled_from(["instances", "predictions", "inputs", "outputs", "both", "odd"]))
    if kind in ("instances", "predictions"):
        row = st.one_of(
            st.lists(ce_values, max_size=4),
            st.dictionaries(ce_names, ce_values, max_size=3),
            ce_values,
        )
        return {kind: draw(st.lists(row, max_size=5) | ce_leaves)}
    if kind in ("inputs", "outputs"):
        return {kind: draw(st.lists(tensor(), max_size=2) | ce_leaves)}
    if kind == "both":
        return {"instances": [[0.5, "u"]], "inputs": []}
    return draw(json_values)


@st.composite
def ce_payload_bytes(draw: st.DrawFn) -> bytes:
    """A payload's bytes: JSON, JSON cut short or mutated, or random bytes."""
    how = draw(st.sampled_from(["json", "json", "json", "truncated", "bad-utf8", "bytes"]))
    if how == "bytes":
        return draw(st.binary(max_size=100))
    body = _json_bytes(draw(ce_payload()))
    if how == "truncated":
        return body[: draw(st.integers(0, len(body)))]
    if how == "bad-utf8":
        where = draw(st.integers(0, len(body)))
        return body[:where] + draw(st.sampled_from(BAD_UTF8)) + body[where:]
    return body


header_text = st.text(PRINTABLE, max_size=12) | st.sampled_from(
    ["%", "%zz", "%e2%82", "%00", "a%20b"]
)


@st.composite
def ce_binary(draw: st.DrawFn) -> Probe:
    """A binary-mode event: ``ce-*`` headers (well-formed, or missing or odd) and a payload."""
    headers: list[tuple[str, str]] = []
    body: bytes | None = None
    if draw(st.booleans()):
        # Well-formed headers, and mostly a type whose side the payload feeds, so that the
        # payload's own oddities (shapes, rows) are what the daemon has to cope with.
        payload = draw(ce_payload())
        keys: set[str] = set(payload) if isinstance(payload, dict) else set()
        ce_type = draw(st.sampled_from(CE_TYPES))
        if keys & {"instances", "inputs"} and draw(st.integers(0, 4)) > 0:
            ce_type = "org.kubeflow.serving.inference.request"
        elif keys & {"predictions", "outputs"} and draw(st.integers(0, 4)) > 0:
            ce_type = "org.kubeflow.serving.inference.response"
        headers += [
            ("Ce-Specversion", draw(st.sampled_from(["1.0", "0.3"]))),
            ("Ce-Id", draw(st.text(PRINTABLE, min_size=1, max_size=8))),
            ("Ce-Source", "http://localhost:9081/"),
            ("Ce-Type", ce_type),
            ("Ce-Inferenceservicename", draw(st.sampled_from([CE_SERVICE, CE_SERVICE, "other"]))),
        ]
        body = _json_bytes(payload)
    else:
        attributes = {
            "specversion": st.sampled_from(["1.0", "0.3", "2.0", ""]),
            "id": header_text,
            "source": header_text,
            "type": st.sampled_from(CE_TYPES) | header_text,
            "inferenceservicename": st.sampled_from([CE_SERVICE, "other-model"]) | header_text,
            "namespace": st.sampled_from(["default", "prod"]) | header_text,
        }
        for name, values in attributes.items():
            if draw(st.integers(0, 9)) > 0:  # most of the time present
                spelled = draw(st.sampled_from([f"ce-{name}", f"Ce-{name.title()}", f"CE-{name}"]))
                headers.append((spelled, draw(values)))
    content_type = draw(
        st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain"])
        | st.none()
    )
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if body is None or not draw(st.integers(0, 4)):
        body = draw(ce_payload_bytes())
    return Probe("ce-binary", draw(st.sampled_from(CE_PATHS)), body, tuple(headers))


@st.composite
def ce_tensor_shapes(draw: st.DrawFn) -> Probe:
    """A well-formed V2 event of one tensor whose shape mixes 0, small and huge dimensions."""
    # No dimension between 10**7 and 10**11: a daemon that believed such a shape could
    # really allocate that many rows, and take the shared test machine down with it.
    shape = draw(st.lists(st.integers(0, 3) | st.sampled_from([10**6, 10**12, 2**63]), max_size=3))
    n = math.prod(shape)
    data = draw(st.lists(ce_leaves, min_size=n, max_size=n)) if n <= 9 else []
    side = draw(st.sampled_from(["inputs", "outputs"]))
    payload = {side: [{"name": draw(ce_names), "shape": shape, "datatype": "FP32", "data": data}]}
    ce_type = "request" if side == "inputs" else "response"
    headers = (
        ("Ce-Specversion", "1.0"),
        ("Ce-Id", "shape"),
        ("Ce-Source", "/fuzz"),
        ("Ce-Type", f"org.kubeflow.serving.inference.{ce_type}"),
        ("Ce-Inferenceservicename", CE_SERVICE),
        ("Content-Type", "application/json"),
    )
    return Probe("ce-tensor-shape", draw(st.sampled_from(CE_PATHS)), _json_bytes(payload), headers)


@st.composite
def ce_structured_event(draw: st.DrawFn) -> object:
    """One structured event as a JSON value: well-formed, or with members missing or odd."""
    if draw(st.booleans()):
        event: dict[str, object] = {
            "specversion": draw(st.sampled_from(["1.0", "0.3"])),
            "id": draw(st.text(min_size=1, max_size=6)),
            "source": "/fuzz",
            "type": draw(st.sampled_from(CE_TYPES)),
            "inferenceservicename": draw(st.sampled_from([CE_SERVICE, CE_SERVICE, "other"])),
        }
    else:
        event = {
            "specversion": draw(st.sampled_from(["1.0", "0.3", "9"]) | ce_leaves),
            "id": draw(st.text(max_size=6) | ce_leaves),
            "source": draw(st.sampled_from(["/fuzz", ""]) | ce_leaves),
            "type": draw(st.sampled_from(CE_TYPES) | ce_leaves),
            "inferenceservicename": draw(st.sampled_from([CE_SERVICE, "other"]) | ce_leaves),
        }
    for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=1)):
        event.pop(key)
    how = draw(
        st.sampled_from(["data", "data-text", "base64", "bad-base64", "both", "none", "v03"])
    )
    payload = draw(ce_payload())
    if how == "data":
        event["data"] = payload
    elif how == "data-text":
        event["data"] = draw(ce_payload_bytes()).decode("utf-8", "replace")
    elif how == "base64":
        event["data_base64"] = base64.b64encode(draw(ce_payload_bytes())).decode()
    elif how == "bad-base64":
        event["data_base64"] = draw(st.sampled_from(["%%%", "abc", "====", ""]) | ce_leaves)
    elif how == "both":
        event["data"], event["data_base64"] = payload, "e30="
    elif how == "v03":
        event["specversion"], event["datacontentencoding"] = "0.3", "base64"
        event["data"] = base64.b64encode(_json_bytes(payload)).decode()
    if draw(st.integers(0, 5)) == 0:
        return draw(ce_leaves)  # not an object at all
    return event


@st.composite
def ce_structured(draw: st.DrawFn) -> Probe:
    """Structured (one event) or batched (an array of them) mode, or a format not read."""
    mode = draw(st.sampled_from(["structured", "batched", "other-format"]))
    path = draw(st.sampled_from(CE_PATHS))
    if mode == "other-format":
        content_type = draw(
            st.sampled_from(["application/cloudevents+avro", "application/cloudevents+protobuf"])
        )
        return Probe("ce-other-format", path, b"\x00\x01", (("Content-Type", content_type),), 415)
    if mode == "structured":
        body = _json_bytes(draw(ce_structured_event()))
        content_type = draw(
            st.sampled_from(
                ["application/cloudevents+json", "application/cloudevents+json; charset=utf-8"]
            )
        )
    else:
        body = _json_bytes(draw(st.lists(ce_structured_event(), max_size=4) | ce_leaves))
        content_type = "application/cloudevents-batch+json"
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    return Probe(f"ce-{mode}", path, body, (("Content-Type", content_type),))


@st.composite
def ce_valid(draw: st.DrawFn) -> Probe:
    """A well-formed KServe V1 request or response event for the ``ce`` stream."""
    n = draw(st.integers(0, 5))
    request = draw(st.booleans())
    if request:
        payload: object = {"instances": draw(st.lists(st.tuples(ce_leaves, ce_leaves).map(list),
                                                      min_size=n, max_size=n))}  # fmt: skip
        ce_type = "org.kubeflow.serving.inference.request"
    else:
        payload = {"predictions": draw(st.lists(ce_leaves, min_size=n, max_size=n))}
        ce_type = "org.kubeflow.serving.inference.response"
    headers = (
        ("Ce-Specversion", "1.0"),
        ("Ce-Id", draw(st.uuids()).hex),
        ("Ce-Source", "http://localhost:9081/"),
        ("Ce-Type", ce_type),
        ("Ce-Inferenceservicename", CE_SERVICE),
        ("Content-Type", "application/json"),
    )
    path = draw(st.sampled_from(CE_PATHS))
    return Probe("ce-valid", path, _json_bytes(payload), headers, 200, rows=n)


def probes() -> st.SearchStrategy[Probe]:
    """Every kind of request the fuzzer sends."""
    return st.one_of(
        valid_rows(),
        number_tokens(),
        truncated(),
        bad_utf8(),
        deep(),
        not_objects(),
        mismatched_columns(),
        wrong_type(),
        random_bytes(),
        mutated(),
        unknown_stream(),
        ce_binary(),
        ce_binary(),
        ce_tensor_shapes(),
        ce_structured(),
        ce_structured(),
        ce_valid(),
        oversized(),
    )


# --- the daemon's counts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What the daemon has counted, from one scrape and one monitor detail per monitor."""

    rows: dict[str, float]
    values: dict[tuple[str, str], dict[str, float]]
    live: dict[tuple[str, str], list[float]]
    requests: dict[str, float]


def _kind_of(label: str) -> str:
    """``driftmon_ingest_values_total``'s ``kind`` of a bin label (docs/configuration.md)."""
    return label if label in ("underflow", "overflow", "missing", "invalid", "other") else "ok"


@dataclass
class Stats:
    """Figures of a run."""

    bodies: int = 0
    batches: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, int]] = field(default_factory=Counter)
    rows_acked: int = 0
    server_errors: int = 0
    failures: int = 0


class Fuzzer:
    """Sends batches of probes to a running daemon and checks the answers and the counts.

    Owns an event loop and one keep-alive session with ``concurrency``
    connections; use as a context manager.
    """

    def __init__(self, url: str, *, concurrency: int = 8) -> None:
        self.url = url
        self.concurrency = concurrency
        self.stats = Stats()
        self.bins: dict[tuple[str, str], list[str]] = {}
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._counts: Counts | None = None

    def __enter__(self) -> Fuzzer:
        self._loop.run_until_complete(self._open())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        self._loop.close()

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        for stream, feature in MONITORS:
            detail = await self._get_json(f"/api/v1/monitors/{stream}/{feature}")
            self.bins[(stream, feature)] = detail["bins"]

    async def _get_json(self, path: str) -> Any:
        assert self._session is not None
        async with self._session.get(self.url + path) as response:
            assert response.status == 200, (path, response.status)
            return await response.json()

    async def _read_counts(self) -> Counts:
        assert self._session is not None
        async with self._session.get(self.url + "/metrics") as response:
            assert response.status == 200, response.status
            samples = parse_metrics(await response.text())
        details = await asyncio.gather(
            *(self._get_json(f"/api/v1/monitors/{s}/{f}") for s, f in MONITORS)
        )
        rows = {
            s: sample(samples, "driftmon_ingest_rows_total", stream=s) or 0.0
            for s in (ROWS_STREAM, CE_STREAM)
        }
        values = {
            (s, f): {
                dict(labels)["kind"]: value
                for labels, value in series(
                    samples, "driftmon_ingest_values_total", stream=s, feature=f
                ).items()
            }
            for s, f in MONITORS
        }
        live = {key: detail["live_counts"] for key, detail in zip(MONITORS, details, strict=True)}
        requests = {
            dict(labels)["code"]: value
            for labels, value in series(samples, "driftmon_ingest_requests_total").items()
        }
        return Counts(rows, values, live, requests)

    async def _send(self, probe: Probe) -> tuple[int, bytes] | str:
        """``(status, body)``, or what went wrong at the transport level."""
        assert self._session is not None
        data: bytes | AsyncIterator[bytes] = probe.body
        if probe.chunked:

            async def pieces() -> AsyncIterator[bytes]:
                for start in range(0, len(probe.body), 16384):
                    yield probe.body[start : start + 16384]

            data = pieces()
        try:
            async with self._session.post(
                self.url + probe.path,
                data=data,
                headers=list(probe.headers),
                skip_auto_headers=("Content-Type",),
            ) as response:
                return response.status, await response.read()
        except TimeoutError:
            return f"no answer within {REQUEST_TIMEOUT_S} s (a hang)"
        except aiohttp.ClientError as exc:
            return f"transport error: {type(exc).__name__}: {exc}"

    async def _batch(self, batch: Sequence[Probe]) -> tuple[Counts, list[object], Counts]:
        before = self._counts if self._counts is not None else await self._read_counts()
        self._counts = None
        answers = await asyncio.gather(*(self._send(probe) for probe in batch))
        after = await self._read_counts()
        return before, list(answers), after

    def run_batch(self, batch: Sequence[Probe]) -> list[str]:
        """Send ``batch`` (all in flight together); every broken promise, as messages."""
        before, answers, after = self._loop.run_until_complete(self._batch(batch))
        problems: list[str] = []
        acked: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        for probe, answer in zip(batch, answers, strict=True):
            self.stats.bodies += 1
            if isinstance(answer, str):
                problems.append(f"{answer}: {probe!r}")
                continue
            assert isinstance(answer, tuple)
            status, body = answer
            self.stats.by_status[status] += 1
            self.stats.by_kind[(probe.kind, status)] += 1
            codes[str(status)] += 1
            problem = check_answer(probe, status, body)
            if problem is not None:
                problems.append(f"{problem}: {probe!r}")
            if status == 200 and probe.stream is not None and problem is None:
                acked[probe.stream] += json.loads(body)["rows"]
        self.stats.batches += 1
        self.stats.server_errors += sum(n for code, n in codes.items() if code.startswith("5"))
        problems += check_counts(before, after, acked, codes, self.bins)
        if problems:
            self.stats.failures += 1
        else:
            self._counts = after  # the next batch starts from here
            self.stats.rows_acked += sum(acked.values())
        return problems


def check_answer(probe: Probe, status: int, body: bytes) -> str | None:
    """What is wrong with one answer, or ``None``."""
    if status >= 500 or status < 200 or 300 <= status < 400:
        return f"answered {status} {body[:300]!r}"
    if probe.status is not None and status != probe.status:
        return f"answered {status} {body[:300]!r}, expected {probe.status}"
    if probe.client_error and not 400 <= status < 500:
        return f"answered {status}, expected a 4xx"
    try:
        payload = json.loads(body)
    except ValueError:
        return f"answered {status} with a body that is not JSON: {body[:200]!r}"
    if status >= 400:
        if not isinstance(payload, dict) or not isinstance(payload.get("error"), str):
            return f"answered {status} without an error message: {body[:200]!r}"
        return None
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if not isinstance(rows, int) or rows < 0:
        return f"answered {status} without a row count: {body[:200]!r}"
    if probe.rows is not None and rows != probe.rows:
        return f"answered {status} with {rows} rows, expected {probe.rows}"
    return None


def check_counts(
    before: Counts,
    after: Counts,
    acked: Counter[str],
    codes: Counter[str],
    bins: dict[tuple[str, str], list[str]],
) -> list[str]:
    """Every way the counts moved other than by exactly the acknowledged rows."""
    problems = []
    for stream in (ROWS_STREAM, CE_STREAM):
        grown = after.rows[stream] - before.rows[stream]
        if grown != acked[stream]:
            problems.append(
                f"driftmon_ingest_rows_total{{stream={stream}}} grew by {grown}, "
                f"200 answers acknowledged {acked[stream]} rows"
            )
    reached: dict[tuple[str, str], float] = {}
    for key in MONITORS:
        delta = [a - b for a, b in zip(after.live[key], before.live[key], strict=True)]
        if any(d < 0 for d in delta):
            problems.append(f"live counts of {key} fell: {delta}")
        reached[key] = sum(delta)
        by_kind: dict[str, float] = {}
        for label, d in zip(bins[key], delta, strict=True):
            by_kind[_kind_of(label)] = by_kind.get(_kind_of(label), 0.0) + d
        kinds = set(after.values[key]) | set(before.values[key]) | set(by_kind)
        for kind in kinds:
            counted = after.values[key].get(kind, 0.0) - before.values[key].get(kind, 0.0)
            if counted != by_kind.get(kind, 0.0):
                problems.append(
                    f"driftmon_ingest_values_total{{{key}, kind={kind}}} grew by {counted}, "
                    f"the live counts by {by_kind.get(kind, 0.0)}"
                )
    for name in ROWS_FIELDS:
        if reached[(ROWS_STREAM, name)] != acked[ROWS_STREAM]:
            problems.append(
                f"{ROWS_STREAM}/{name} took {reached[(ROWS_STREAM, name)]} values, "
                f"200 answers acknowledged {acked[ROWS_STREAM]} rows"
            )
    inputs = [reached[(CE_STREAM, name)] for name in CE_INPUTS]
    outputs = reached[(CE_STREAM, CE_OUTPUTS[0])]
    if len(set(inputs)) != 1 or inputs[0] + outputs != acked[CE_STREAM]:
        problems.append(
            f"{CE_STREAM}: inputs took {inputs} values and outputs {outputs}, "
            f"200 answers acknowledged {acked[CE_STREAM]} rows"
        )
    for code in set(codes) | set(after.requests):
        counted = after.requests.get(code, 0.0) - before.requests.get(code, 0.0)
        if counted != codes[code]:
            problems.append(
                f"driftmon_ingest_requests_total{{code={code}}} grew by {counted}, "
                f"{codes[code]} answers had it"
            )
    return problems


# --- a whole run -------------------------------------------------------------------------------


def fuzz(
    fuzzer: Fuzzer,
    bodies: int,
    batch: int = 12,
    *,
    first_seed: int | None = None,
    database: bool = True,
) -> None:
    """Send at least ``bodies`` probes in batches of ``batch``; raise on a broken promise.

    Hypothesis draws the batches; the first failing one is raised
    (``AssertionError`` listing every broken promise with its body).
    ``first_seed`` makes the run repeatable; ``database=False`` keeps
    hypothesis from saving and replaying examples.
    """
    rounds = 0
    while fuzzer.stats.bodies < bodies:
        remaining = bodies - fuzzer.stats.bodies
        examples = min(5000, max(1, math.ceil(remaining / batch)))

        @settings(
            max_examples=examples,
            deadline=None,
            database=settings().database if database else None,
            suppress_health_check=list(HealthCheck),
            # No shrinking: every answer names its own body, and a wedged daemon would make
            # each shrink step wait out the request timeout.
            phases=(Phase.explicit, Phase.reuse, Phase.generate),
            print_blob=True,
        )
        @given(st.lists(probes(), min_size=batch, max_size=batch))
        def one_batch(drawn: list[Probe]) -> None:
            problems = fuzzer.run_batch(drawn)
            assert not problems, "\n".join(problems)

        if first_seed is not None:
            one_batch = seed(first_seed + rounds)(one_batch)
        sent = fuzzer.stats.bodies
        one_batch()
        rounds += 1
        if fuzzer.stats.bodies == sent:
            raise AssertionError("hypothesis drew no batch at all")


def daemon_problems(process: DaemonProcess) -> list[str]:
    """Whether the daemon survived: alive, healthy, no traceback or handler error logged."""
    problems = []
    assert process.process is not None
    if process.process.poll() is not None:
        problems.append(f"the daemon exited with {process.process.returncode}")
        return problems
    if process.get("/-/healthy").status != 200:
        problems.append("/-/healthy is not 200")
    log = process.log_text()
    for marker in ("Traceback", "Error handling request", "Unhandled exception", "MemoryError"):
        if marker in log:
            problems.append(f"the daemon's log has {marker!r}:\n{log[-3000:]}")
    return problems


def print_figures(stats: Stats, seconds: float) -> None:
    """The figures of a run, for the issue's closing note."""
    print(f"bodies fuzzed:          {stats.bodies} in {stats.batches} batches, {seconds:.1f} s")
    print(f"answers by status:      {dict(sorted(stats.by_status.items()))}")
    print(f"5xx seen:               {stats.server_errors}")
    print(f"rows acknowledged:      {stats.rows_acked}")
    print(f"batches that failed:    {stats.failures}")
    kinds: dict[str, dict[int, int]] = {}
    for (kind, status), n in sorted(stats.by_kind.items()):
        kinds.setdefault(kind, {})[status] = n
    for kind, statuses in kinds.items():
        print(f"  {kind:22s} {statuses}")


def run(bodies: int, batch: int, first_seed: int | None, concurrency: int) -> int:
    """Start a daemon, fuzz it, print the figures; the exit status."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="driftmon-fuzz-") as folder:
        with DaemonProcess(write_config(Path(folder))) as process:
            failed = False
            with Fuzzer(process.url, concurrency=concurrency) as fuzzer:
                try:
                    fuzz(fuzzer, bodies, batch, first_seed=first_seed, database=False)
                except AssertionError as exc:
                    print(f"BROKEN PROMISE:\n{exc}", file=sys.stderr)
                    failed = True
                problems = daemon_problems(process)
                print_figures(fuzzer.stats, time.monotonic() - started)
            for problem in problems:
                print(f"BROKEN PROMISE: {problem}", file=sys.stderr)
    ok = not failed and not problems and fuzzer.stats.server_errors == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python bench/fuzz_ingest.py [--bodies N] [--batch B] [--seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=int, default=100_000, help="bodies to send (at least)")
    parser.add_argument("--batch", type=int, default=12, help="bodies in flight per check")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (repeatable)")
    args = parser.parse_args(argv)
    if min(args.bodies, args.batch, args.concurrency) < 1:
        parser.error("--bodies, --batch and --concurrency must be positive")
    return run(args.bodies, args.batch, args.seed, args.concurrency)


if __name__ == "__main__":
    # A TERM (from `timeout`, CI) unwinds the `with` blocks, so the daemon is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
