"""The parse stage: ingest bodies and data files into columns (docs/configuration.md).

One contract runs over every body form (a JSON array of rows, a ``columns``
object, NDJSON, and the standard library's serialisation with ``NaN``) and
compares with an obvious per-value model; the error tests pin the positions
their messages name; the fuzz tests feed arbitrary bytes and check that
nothing but ``BodyError`` escapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftmon import parse
from driftmon.parse import (
    JSON_MEDIA_TYPES,
    NDJSON_MEDIA_TYPES,
    Batch,
    BodyError,
    UnsupportedMediaType,
    iter_table_chunks,
    parse_body,
    read_table,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"
FIELDS = ("a", "b")

# --- an obvious model of rows -> columns --------------------------------------------


def naive_rows_batch(rows: Sequence[dict[str, object]], fields: Sequence[str]) -> Batch:
    """Columns and unknown-field count of row objects, one value at a time."""
    columns = {name: [row.get(name) for row in rows] for name in fields}
    unknown = sum(1 for row in rows for key in row if key not in fields)
    return Batch(n_rows=len(rows), columns=columns, unknown_fields=unknown)


def naive_columns_batch(columns: dict[str, list[object]], fields: Sequence[str]) -> Batch:
    """The batch a ``{"columns": ...}`` body gives, one column at a time."""
    n_rows = len(next(iter(columns.values()))) if columns else 0
    picked = {name: list(columns.get(name, [None] * n_rows)) for name in fields}
    unknown = sum(len(values) for name, values in columns.items() if name not in fields)
    return Batch(n_rows=n_rows, columns=picked, unknown_fields=unknown)


def comparable(value: object) -> object:
    """``value`` with NaN made equal to itself, for comparing decoded values."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    return (type(value), value)


def assert_same_batch(actual: Batch, expected: Batch) -> None:
    assert actual.n_rows == expected.n_rows
    assert list(actual.columns) == list(expected.columns)
    for name, values in expected.columns.items():
        assert len(actual.columns[name]) == actual.n_rows
        assert comparable(actual.columns[name]) == comparable(values), name
    assert actual.unknown_fields == expected.unknown_fields


def body_error(
    body: bytes, content_type: str = JSON, fields: Sequence[str] = FIELDS, **kw: int
) -> str:
    """The message of the BodyError that parsing ``body`` raises."""
    with pytest.raises(BodyError) as caught:
        parse_body(body, content_type, fields, **kw)
    return str(caught.value)


# --- strategies --------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "x y", "é", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
ROWS = st.lists(st.dictionaries(KEYS, VALUES, max_size=5), max_size=12)
REQUESTED = st.lists(KEYS, unique=True, max_size=4)


@st.composite
def columns_bodies(draw: st.DrawFn) -> dict[str, list[object]]:
    n_rows = draw(st.integers(0, 8))
    names = draw(st.lists(KEYS, unique=True, max_size=4))
    return {name: draw(st.lists(VALUES, min_size=n_rows, max_size=n_rows)) for name in names}


def ndjson(rows: Sequence[object], end: bytes = b"\n") -> bytes:
    return b"".join(orjson.dumps(row) + end for row in rows)


# --- media types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    sorted(JSON_MEDIA_TYPES)
    + ["Application/JSON", "application/json; charset=utf-8", 'application/json;charset="UTF-8"'],
)
def test_json_media_types_parse_a_json_array(content_type: str) -> None:
    batch = parse_body(b'[{"a": 1}]', content_type, ["a"])
    assert batch == Batch(n_rows=1, columns={"a": [1]}, unknown_fields=0)


@pytest.mark.parametrize(
    "content_type", sorted(NDJSON_MEDIA_TYPES) + ["APPLICATION/X-NDJSON ; charset=us-ascii"]
)
def test_ndjson_media_types_parse_one_row_per_line(content_type: str) -> None:
    batch = parse_body(b'{"a": 1}\n{"a": 2}\n', content_type, ["a"])
    assert batch == Batch(n_rows=2, columns={"a": [1, 2]}, unknown_fields=0)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/xml", "application/cloudevents+json", "json"],
)
def test_other_media_types_are_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_body(b"[]", content_type, FIELDS)
    assert isinstance(caught.value, BodyError)
    assert (
        "application/json, application/x-ndjson or application/vnd.apache.arrow.stream"
        in str(caught.value)
    )


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", '"iso-8859-1"'])
def test_a_charset_other_than_utf8_is_unsupported(charset: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="charset"):
        parse_body(b"[]", f"application/json; charset={charset}", FIELDS)


# --- the contract over every body form ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(rows=ROWS, fields=REQUESTED)
def test_row_bodies_in_every_form_give_the_naive_columns(
    rows: list[dict[str, object]], fields: list[str]
) -> None:
    expected = naive_rows_batch(rows, fields)
    assert_same_batch(parse_body(orjson.dumps(rows), JSON, fields), expected)
    if rows:  # an NDJSON body of no rows is an empty body
        assert_same_batch(parse_body(ndjson(rows), NDJSON, fields), expected)
        assert_same_batch(parse_body(ndjson(rows, b"\r\n\n"), NDJSON, fields), expected)
        assert_same_batch(parse_body(ndjson(rows)[:-1], NDJSON, fields), expected)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.dictionaries(KEYS, SCALARS | st.floats() | st.integers(), max_size=5), max_size=10
    ),
    fields=REQUESTED,
)
def test_stdlib_serialisation_with_nan_and_big_ints_gives_the_same_columns(
    rows: list[dict[str, object]], fields: list[str]
) -> None:
    # json.dumps writes NaN, Infinity and integers of any size; orjson reads floats past 64 bits.
    def as_orjson_decodes(value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return value if -(2**63) <= value < 2**64 else float(value)
        return value

    decoded = [{key: as_orjson_decodes(value) for key, value in row.items()} for row in rows]
    expected = naive_rows_batch(decoded, fields)
    assert_same_batch(parse_body(json.dumps(rows).encode(), JSON, fields), expected)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    if rows:
        assert_same_batch(parse_body(lines, NDJSON, fields), expected)


@settings(max_examples=100, deadline=None)
@given(columns=columns_bodies(), fields=REQUESTED)
def test_columns_bodies_give_the_naive_columns(
    columns: dict[str, list[object]], fields: list[str]
) -> None:
    body = orjson.dumps({"columns": columns})
    assert_same_batch(parse_body(body, JSON, fields), naive_columns_batch(columns, fields))


def test_decoded_values_pass_through_untouched() -> None:
    body = b'[{"a": 1, "b": 2.5}, {"a": true, "b": "x"}, {"a": [1], "b": {"k": null}}, {"a": null}]'
    batch = parse_body(body, JSON, ["b", "a"])
    assert list(batch.columns) == ["b", "a"]
    assert batch.columns["a"] == [1, True, [1], None]
    assert batch.columns["b"] == [2.5, "x", {"k": None}, None]
    assert type(batch.columns["a"][0]) is int
    assert type(batch.columns["a"][1]) is bool


def test_unknown_fields_count_every_value_under_an_unrequested_field() -> None:
    body = b'[{"a": 1, "z": 1}, {"a": null, "z": null, "y": 0}, {"b": null}, {}]'
    batch = parse_body(body, JSON, ["a", "b"])
    assert batch.unknown_fields == 3  # a present null is a value; an absent field is not
    assert batch.columns == {"a": [1, None, None, None], "b": [None, None, None, None]}


def test_no_requested_fields_counts_every_value_as_unknown() -> None:
    batch = parse_body(b'[{"a": 1, "b": 2}, {"c": 3}]', JSON, [])
    assert batch == Batch(n_rows=2, columns={}, unknown_fields=3)


def test_an_empty_array_is_a_batch_of_no_rows() -> None:
    assert parse_body(b"[ ]", JSON, FIELDS) == Batch(0, {"a": [], "b": []}, 0)


def test_a_columns_body_without_a_requested_column_gives_missing_values() -> None:
    body = b'{"columns": {"a": [1, 2, null], "z": [0, 0, 0], "y": [1, 2, 3]}}'
    batch = parse_body(body, JSON, ["a", "b"])
    assert batch == Batch(3, {"a": [1, 2, None], "b": [None, None, None]}, 6)


def test_a_columns_body_of_no_columns_has_no_rows() -> None:
    assert parse_body(b'{"columns": {}}', JSON, ["a"]) == Batch(0, {"a": []}, 0)


def test_ndjson_skips_blank_lines_and_accepts_crlf() -> None:
    body = b'\r\n{"a": 1}\r\n\r\n  \t\n{"a": 2, "b": 3}\r\n\n'
    assert parse_body(body, NDJSON, FIELDS) == Batch(2, {"a": [1, 2], "b": [None, 3]}, 0)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b'\xef\xbb\xbf[{"a": 1}]', JSON), (b'\xef\xbb\xbf{"a": 1}\n{"a": 2}', NDJSON)],
)
def test_a_leading_byte_order_mark_is_ignored(body: bytes, content_type: str) -> None:
    assert parse_body(body, content_type, ["a"]).columns["a"][0] == 1


# --- non-standard literals and big numbers ------------------------------------------------


def test_nan_and_infinities_are_accepted_in_every_form() -> None:
    rows = b'[{"a": NaN, "b": Infinity}, {"a": -Infinity, "b": 1}]'
    batch = parse_body(rows, JSON, FIELDS)
    assert math.isnan(batch.columns["a"][0])  # type: ignore[arg-type]
    assert batch.columns["a"][1] == -math.inf
    assert batch.columns["b"] == [math.inf, 1]
    columns = parse_body(b'{"columns": {"a": [NaN, -Infinity], "b": [Infinity, 1]}}', JSON, FIELDS)
    assert comparable(columns.columns) == comparable(batch.columns)
    lines = parse_body(b'{"a": NaN, "b": Infinity}\n{"a": -Infinity, "b": 1}\n', NDJSON, FIELDS)
    assert comparable(lines.columns) == comparable(batch.columns)


def test_numbers_beyond_a_double_are_infinite() -> None:
    batch = parse_body(b'[{"a": 1e400}, {"a": -1e400}]', JSON, ["a"])
    assert batch.columns["a"] == [math.inf, -math.inf]


@pytest.mark.parametrize("extra", [b"", b', {"n": NaN}'])
def test_integers_decode_alike_with_or_without_the_fallback(extra: bytes) -> None:
    digits = b"9" * 5000  # past the interpreter's int-from-string limit
    body = (
        b'[{"a": 18446744073709551615}, {"a": -9223372036854775808}, {"a": 18446744073709551616}, '
        b'{"a": ' + digits + b"}" + extra + b"]"
    )
    if not extra:
        body = body.replace(digits, b"1e999")  # orjson refuses it: the fallback decodes it
    values = parse_body(body, JSON, ["a"]).columns["a"][:4]
    assert values == [2**64 - 1, -(2**63), float(2**64), math.inf]
    assert [type(value) for value in values] == [int, int, float, float]


def test_the_standard_library_runs_only_when_orjson_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_loads = json.loads

    def spy(text: str, **kw: object) -> object:
        calls.append(text)
        return real_loads(text, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(parse.json, "loads", spy)
    parse_body(b'[{"a": 1.5, "b": "NaN"}]', JSON, FIELDS)
    parse_body(b'{"a": 1}\n{"a": 2}\n', NDJSON, FIELDS)
    assert calls == []
    parse_body(b'{"a": 1}\n{"a": NaN}\n{"a": 3}\n', NDJSON, FIELDS)
    assert [text.strip() for text in calls] == ['{"a": NaN}']


@pytest.mark.parametrize("tail", [b"", b', {"b": NaN}'])
@pytest.mark.parametrize(
    ("string", "column"),
    [
        (rb'"\ud800"', 9),
        (rb'"\udc00"', 9),
        (rb'"x\ud800\ud800"', 10),
        (rb'"\ud800x"', 9),
        (rb'"\ud83d\ude00"', None),
        (rb'"\\ud800"', None),  # an escaped backslash, then the text "ud800"
    ],
)
def test_unpaired_surrogate_escapes_are_errors_with_or_without_the_fallback(
    string: bytes, column: int | None, tail: bytes
) -> None:
    body = b'[{"a": ' + string + b"}" + tail + b"]"
    if column is None:
        assert parse_body(body, JSON, ["a"]).columns["a"][0] == json.loads(string)
    else:
        assert body_error(body).startswith(f"line 1, column {column}: invalid JSON (")


# --- error messages and positions -------------------------------------------------------


def test_a_json_syntax_error_names_line_and_character_column() -> None:
    body = '[\n  {"a": 1},\n  {"é": "ü", x}\n]'.encode()
    message = body_error(body)
    assert message.startswith("line 3, column 14: invalid JSON (")


def test_an_error_after_a_nan_is_placed_where_it_is() -> None:
    body = b'[{"a": NaN},\n {"a": 1}\n {"a": 2}]'
    assert body_error(body).startswith("line 3, column 2: invalid JSON (")


def test_a_syntax_error_keeps_orjsons_message_when_the_fallback_stops_later() -> None:
    assert (
        body_error(b'[{"a": 1,}]')
        == "line 1, column 9: invalid JSON (trailing comma is not allowed)"
    )


def test_an_ndjson_error_names_the_line_of_the_body() -> None:
    body = b'{"a": 1}\n\n{"a": 2}\r\n\n{"a": 3, "b"}\n'
    assert body_error(body, NDJSON).startswith("line 5, column 13: invalid JSON (")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'[{"a": 1}, [1, 2]]', JSON, "row 2: expected a JSON object, got array"),
        (b'[{"a": 1}, {}, "x"]', JSON, "row 3: expected a JSON object, got string"),
        (b'{"a": 1}\n\n[{"a": 1}]\n', NDJSON, "line 3: expected a JSON object, got array"),
        (b'{"a": 1}\n\n{"a": 1}\nnull\n', NDJSON, "line 4: expected a JSON object, got null"),
        (b'{"a": 1}\n\r\n7\n{"a": NaN}', NDJSON, "line 3: expected a JSON object, got number"),
        (
            b'{"columns": {"a": [1], "age": "x"}}',
            JSON,
            "columns.age: expected an array, got string",
        ),
        (
            b'{"columns": {"income": [1, 2, 3, 4, 5], "age": [1, 2, 3]}}',
            JSON,
            "columns.age: length 3, expected 5 (as columns.income)",
        ),
        (
            b'{"columns": {"a": [1], "x y": [1, 2]}}',
            JSON,
            'columns["x y"]: length 2, expected 1 (as columns.a)',
        ),
        (b'{"columns": [1]}', JSON, "columns: expected an object of arrays, got array"),
        (
            b'{"columns": {"a": [1]}, "meta": 1}',
            JSON,
            'body: unexpected top-level key "meta" beside "columns"',
        ),
        (
            b"3",
            JSON,
            'body: expected a JSON array of row objects or {"columns": {...}}, got number',
        ),
        (
            b'"x"',
            JSON,
            'body: expected a JSON array of row objects or {"columns": {...}}, got string',
        ),
    ],
)
def test_shape_errors_name_the_row_line_or_column(
    body: bytes, content_type: str, message: str
) -> None:
    assert body_error(body, content_type) == message


def test_a_single_row_object_is_not_a_body() -> None:
    message = body_error(b'{"a": 1}')
    assert message.startswith('body: expected a JSON array of row objects or {"columns": {...}}')
    assert "wrap a single row in an array" in message


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'[{"a": "x\xffy"}]', JSON, "line 1, column 10, byte 9: invalid UTF-8 (0xff)"),
        (b'[{"a": "\xc3\xa9\xc3"}]', JSON, "line 1, column 10, byte 10: invalid UTF-8 (0xc3)"),
        (
            b'{"a": 1}\n{"a": "\xed\xa0\x80"}\n',
            NDJSON,
            "line 2, column 8, byte 16: invalid UTF-8 (0xed)",
        ),
    ],
)
def test_invalid_utf8_names_the_byte(body: bytes, content_type: str, message: str) -> None:
    assert body_error(body, content_type) == message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", JSON),
        (b" \r\n\t", JSON),
        (b"\xef\xbb\xbf", JSON),
        (b"", NDJSON),
        (b"\n \r\n\n", NDJSON),
    ],
)
def test_an_empty_body_is_an_error(body: bytes, content_type: str) -> None:
    assert body_error(body, content_type) == "empty body"


def test_columns_after_a_byte_order_mark_count_from_the_first_visible_character() -> None:
    assert body_error(b"\xef\xbb\xbf[x]").startswith("line 1, column 2: invalid JSON (")


# --- nesting depth --------------------------------------------------------------------------


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b"[" * depth + leaf + b"]" * depth


@pytest.mark.parametrize("max_depth", [3, 5, 64])
def test_nesting_up_to_max_depth_is_accepted_and_one_more_is_an_error(max_depth: int) -> None:
    # A row object of a JSON array is at depth 2; one of an NDJSON line at depth 1.
    at_limit = b'[{"a": ' + nested(max_depth - 2) + b"}]"
    assert parse_body(at_limit, JSON, ["a"], max_depth=max_depth).n_rows == 1
    assert parse_body(at_limit[1:-1], NDJSON, ["a"], max_depth=max_depth - 1).n_rows == 1
    too_deep = b'[{"a": ' + nested(max_depth - 1) + b"}]"
    message = body_error(too_deep, max_depth=max_depth)
    assert message == f"line 1, column {7 + max_depth - 1}: nesting deeper than {max_depth} levels"
    columns = b'{"columns": {"a": [' + nested(max_depth - 3) + b"]}}"
    assert parse_body(columns, JSON, ["a"], max_depth=max_depth).n_rows == 1
    assert "nesting deeper" in body_error(b"[" + columns + b"]", max_depth=max_depth)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    strings = [r'"[[[[{{{{"', r'"\"[[[[["', r'"\\\\"', r'"a\\"', r'"\\\"[[[["', r'"{\u0022[[["']
    row = "{" + ", ".join(f'"k{i}": {s}' for i, s in enumerate(strings)) + ', "a": [[1]]}'
    batch = parse_body(f"[{row}]".encode(), JSON, ["a", "k1"], max_depth=4)
    assert batch.columns == {
        "a": [[[1]]],
        "k1": ['"[[[[['],
    }
    assert "nesting deeper than 3" in body_error(f"[{row}]".encode(), fields=["a"], max_depth=3)


def test_nesting_deep_enough_to_break_a_recursive_parser_is_a_body_error() -> None:
    for body, content_type in [
        (nested(100_000), JSON),
        (b"[NaN, " + nested(100_000) + b"]", JSON),
        (b'{"a": 1}\n' + nested(100_000) + b"\n", NDJSON),
        (b"[" * 100_000, JSON),
    ]:
        assert "nesting deeper than 64 levels" in body_error(body, content_type)


def test_max_depth_above_orjsons_limit_is_bounded_by_it() -> None:
    assert parse_body(b'[{"a": ' + nested(1000) + b"}]", JSON, [], max_depth=5000).n_rows == 1
    message = body_error(b'[{"a": NaN, "b": ' + nested(1500) + b"}]", max_depth=5000)
    assert "nesting deeper than 1024 levels" in message


JSON_TEXT = st.text(alphabet='[]{}"\\ab,:', max_size=6)
DEEP_VALUES = st.recursive(
    st.none() | st.integers(-5, 5) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_TEXT, inner, max_size=3),
    max_leaves=25,
)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(value=DEEP_VALUES, with_nan=st.booleans())
def test_the_depth_limit_matches_the_decoded_depth(value: object, with_nan: bool) -> None:
    rows = [{"a": value, "n": math.nan if with_nan else 0.5}]
    body = json.dumps(rows).encode()
    depth = 1 + depth_of(rows[0])
    assert parse_body(body, JSON, ["a"], max_depth=max(depth, 1)).n_rows == 1
    assert parse_body(body[1:-1], NDJSON, ["a"], max_depth=max(depth - 1, 1)).n_rows == 1
    if depth - 1 >= 1:
        assert "nesting deeper" in body_error(body, fields=["a"], max_depth=depth - 1)
    if depth - 2 >= 1:
        assert "nesting deeper" in body_error(body[1:-1], NDJSON, ["a"], max_depth=depth - 2)


# --- fuzz: nothing but BodyError escapes ------------------------------------------------------


def parses_or_body_error(body: bytes, fields: Sequence[str] = FIELDS, max_depth: int = 8) -> None:
    for content_type in (JSON, NDJSON):
        try:
            batch = parse_body(body, content_type, fields, max_depth=max_depth)
        except BodyError:
            continue
        assert all(len(values) == batch.n_rows for values in batch.columns.values())
        assert batch.unknown_fields >= 0


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300))
def test_random_bytes_parse_or_raise_body_error(body: bytes) -> None:
    parses_or_body_error(body)


TOKENS = st.sampled_from(
    [
        b"[",
        b"]",
        b"{",
        b"}",
        b'"',
        b"\\",
        b",",
        b":",
        b" ",
        b"\n",
        b"\r",
        b"1",
        b"-",
        b"e9",
        b"NaN",
        b"-Infinity",
        b"Infinity",
        b"null",
        b"true",
        b'"a"',
        b"\\u",
        b"d800",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xc3",
        b"\xe9",
        b"\x00",
        b'{"columns":',
        b"9" * 30,
    ]
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    rows = draw(ROWS)
    body = bytearray(
        draw(st.sampled_from([orjson.dumps, ndjson, lambda r: json.dumps(r).encode()]))(rows)
    )
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        token = draw(TOKENS)
        if action == "insert":
            body[position:position] = token
        elif action == "delete":
            del body[position : position + draw(st.integers(1, 4))]
        else:
            body[position : position + len(token)] = token
    return bytes(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_bodies(), fields=REQUESTED)
def test_mutated_bodies_parse_or_raise_body_error(body: bytes, fields: list[str]) -> None:
    parses_or_body_error(body, fields)


@settings(max_examples=100, deadline=None)
@given(
    opening=st.integers(0, 3000),
    tokens=st.lists(TOKENS, max_size=40),
    max_depth=st.integers(1, 2000),
)
def test_deep_and_broken_nesting_parses_or_raises_body_error(
    opening: int, tokens: list[bytes], max_depth: int
) -> None:
    parses_or_body_error(b"[" * opening + b"".join(tokens), max_depth=max_depth)


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: parse_body(b"[]", JSON, ["a", "a"]), "fields"),
        (lambda: parse_body(b"[]", JSON, "ab"), "fields"),
        (lambda: parse_body(b"[]", JSON, [1]), "fields"),
        (lambda: parse_body(b"[]", JSON, FIELDS, max_depth=0), "max_depth"),
        (lambda: parse_body("[]", JSON, FIELDS), "body"),
    ],
)
def test_wrong_arguments_raise_a_plain_value_error(
    call: Callable[[], object], argument: str
) -> None:
    with pytest.raises(ValueError) as caught:
        call()
    assert type(caught.value) is ValueError
    assert str(caught.value).startswith(f"{argument}: ")


def test_a_bytearray_body_is_read_like_bytes() -> None:
    assert parse_body(bytearray(b'[{"a": 1}]'), JSON, ["a"]).columns == {"a": [1]}


# --- files ----------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1.5", 1.5),
        (" 3 ", 3.0),
        ("-2e3", -2000.0),
        ("", None),
        ("   ", None),
        ("abc", "abc"),
        ("1,5", "1,5"),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
    ],
)
def test_a_numeric_csv_cell_is_a_float_missing_or_its_raw_string(
    tmp_path: Path, cell: str, expected: object
) -> None:
    path = write(tmp_path, "ref.csv", f'x,other\n"{cell}",1\n2,1\n')
    batch = read_table(path, ["x"], numeric_fields=["x"])
    assert batch.columns["x"] == [expected, 2.0]


def test_a_nan_csv_cell_is_a_nan_float(tmp_path: Path) -> None:
    value = read_table(write(tmp_path, "r.csv", "x\nnan\n"), ["x"], numeric_fields=["x"])
    assert math.isnan(value.columns["x"][0])  # type: ignore[arg-type]


def test_csv_reads_strings_headers_quotes_and_blank_lines(tmp_path: Path) -> None:
    content = '\ufeffage,region,note,extra\n30,north,"a, b",1\n\n,,"multi\nline",2\n41, ,x,3\n'
    path = write(tmp_path, "ref.csv", content)
    batch = read_table(path, ["region", "age", "missing"], numeric_fields=["age"])
    assert batch == Batch(
        n_rows=3,
        columns={
            "region": ["north", None, " "],
            "age": [30.0, None, 41.0],
            "missing": [None, None, None],
        },
        unknown_fields=6,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n3\n", "line 3: 1 cell, expected 2 (as the header)"),
        ('a,b\n"1\n\nx",2\n3,4,5\n', "line 5: 3 cells, expected 2 (as the header)"),
        ('a,b\n1,"x"y\n', "line 2: invalid CSV ("),
        ("a,b,a\n1,2,3\n", "line 1: column 'a' appears more than once"),
        ("", "line 1: expected a header row"),
        (b"a,b\n1,2\n3,\xff\n", "line 3, column 3, byte 10: invalid UTF-8 (0xff)"),
    ],
)
def test_csv_errors_name_the_path_and_line(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = write(tmp_path, "ref.csv", content)
    with pytest.raises(BodyError) as caught:
        read_table(path, ["a", "b"])
    assert str(caught.value).startswith(f"{path}: {message}")


def test_a_csv_header_alone_is_a_table_of_no_rows(tmp_path: Path) -> None:
    assert read_table(write(tmp_path, "r.csv", "a,b\n"), ["a"]) == Batch(0, {"a": []}, 0)


ROWS_FILE = [{"age": 30, "region": "north"}, {"age": None, "z": 1}, {"region": "south"}]
EXPECTED_FILE = Batch(
    n_rows=3,
    columns={"age": [30, None, None], "region": ["north", None, "south"]},
    unknown_fields=1,
)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("ref.ndjson", ndjson(ROWS_FILE)),
        ("ref.jsonl", b"\n" + ndjson(ROWS_FILE, b"\r\n\r\n")),
        ("ref.JSON", orjson.dumps(ROWS_FILE)),
        ("ref.json", b"\xef\xbb\xbf" + orjson.dumps(ROWS_FILE)),
    ],
)
def test_json_files_follow_the_body_rules(tmp_path: Path, name: str, content: bytes) -> None:
    assert read_table(write(tmp_path, name, content), ["age", "region"]) == EXPECTED_FILE


def test_a_json_columns_file_is_read_like_a_columns_body(tmp_path: Path) -> None:
    content = orjson.dumps({"columns": {"age": [1, 2], "zz": [0, 0]}})
    assert read_table(write(tmp_path, "r.json", content), ["age"]) == Batch(2, {"age": [1, 2]}, 2)


def test_the_format_argument_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "rows.txt", ndjson(ROWS_FILE))
    assert read_table(path, ["age", "region"], format="ndjson") == EXPECTED_FILE
    with pytest.raises(ValueError, match="^format: cannot tell"):
        read_table(path, ["age"])
    with pytest.raises(ValueError, match="^format: expected csv, ndjson or json"):
        read_table(path, ["age"], format="parquet")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.ndjson", b'{"a": 1}\n\n{"a": 2,,}\n', "line 3, column 9: invalid JSON ("),
        ("r.ndjson", b'{"a": 1}\n[1]\n', "line 2: expected a JSON object, got array"),
        ("r.json", b'[{"a": 1},\n 2]', "row 2: expected a JSON object, got number"),
        ("r.json", b"\n  ", "empty file"),
        ("r.json", b"7", "expected a JSON array of row objects"),
        ("r.json", b'{"columns": {"a": [1], "b": []}}', "columns.b: length 0, expected 1"),
        ("r.ndjson", b'{"a": 1}\n{"a": "\xff"}\n', "line 2, column 8, byte 16: invalid UTF-8"),
    ],
)
def test_json_file_errors_name_the_path_and_place(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(BodyError) as caught:
        read_table(path, ["a"])
    assert str(caught.value).startswith(f"{path}: {message}")


def test_an_empty_ndjson_file_is_a_table_of_no_rows(tmp_path: Path) -> None:
    assert read_table(write(tmp_path, "r.ndjson", b"\n\n"), ["a"]) == Batch(0, {"a": []}, 0)


def test_a_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "absent.csv", ["a"])


# --- chunks -------------------------------------------------------------------------------


def chunk_files(tmp_path: Path) -> list[Path]:
    rows = [{"a": i, "b": f"v{i % 3}", "z": i} for i in range(23)]
    rows[5] = {"b": None}
    csv_text = "a,z,b\n" + "".join(
        f"{row.get('a', '')},{row.get('z', '')},{row['b'] or ''}\n\n" for row in rows
    )
    columns = {"columns": {key: [row.get(key) for row in rows] for key in ("a", "b", "z")}}
    return [
        write(tmp_path, "t.csv", csv_text),
        write(tmp_path, "t.ndjson", b"\n".join(orjson.dumps(row) + b"\n" for row in rows)),
        write(tmp_path, "t.json", orjson.dumps(rows)),
        write(tmp_path, "c.json", orjson.dumps(columns)),
    ]


@pytest.mark.parametrize("chunk_rows", [1, 4, 23, 100])
def test_chunks_concatenate_to_the_whole_table(tmp_path: Path, chunk_rows: int) -> None:
    for path in chunk_files(tmp_path):
        whole = read_table(path, ["a", "b"], numeric_fields=["a"])
        chunks = list(
            iter_table_chunks(path, ["a", "b"], numeric_fields=["a"], chunk_rows=chunk_rows)
        )
        sizes = [chunk.n_rows for chunk in chunks]
        assert sizes[:-1] == [chunk_rows] * (len(sizes) - 1), path
        assert 0 < sizes[-1] <= chunk_rows
        assert sum(sizes) == whole.n_rows == 23
        for name in ("a", "b"):
            assert [v for chunk in chunks for v in chunk.columns[name]] == whole.columns[name]
        assert sum(chunk.unknown_fields for chunk in chunks) == whole.unknown_fields


def test_read_table_merges_many_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "_READ_TABLE_CHUNK_ROWS", 5)
    for path in chunk_files(tmp_path):
        batch = read_table(path, ["a", "b"], numeric_fields=["a"])
        assert batch.n_rows == 23
        assert batch.columns["b"][:3] == ["v0", "v1", "v2"]
        assert batch.unknown_fields == (22 if path.name in ("t.ndjson", "t.json") else 23)


def test_an_error_in_a_later_chunk_comes_after_the_earlier_chunks(tmp_path: Path) -> None:
    content = b'{"a": 1}\n\n{"a": 2}\n{"a": 3}\n\n\n{"a": 4}\n{"a": 5, }\n'
    path = write(tmp_path, "r.ndjson", content)
    chunks = iter_table_chunks(path, ["a"], chunk_rows=2)
    assert next(chunks).columns == {"a": [1, 2]}
    assert next(chunks).columns == {"a": [3, 4]}
    with pytest.raises(BodyError) as caught:
        next(chunks)
    assert str(caught.value).startswith(f"{path}: line 8, column 8: invalid JSON (trailing comma")


def test_invalid_utf8_in_a_later_ndjson_chunk_names_the_file_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "r.ndjson", b'{"a": 1}\n{"a": 2}\n{"a": "\xfe"}\n')
    with pytest.raises(BodyError) as caught:
        list(iter_table_chunks(path, ["a"], chunk_rows=1))
    assert str(caught.value) == f"{path}: line 3, column 8, byte 25: invalid UTF-8 (0xfe)"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"numeric_fields": ["q"]}, "numeric_fields"),
        ({"format": "xml"}, "format"),
    ],
)
def test_chunk_arguments_are_checked_before_reading(
    tmp_path: Path, kwargs: dict[str, object], argument: str
) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: "):
        iter_table_chunks(tmp_path / "not-read.csv", ["a"], **kwargs)  # type: ignore[arg-type]


def test_ndjson_error_at_the_end_of_a_line_names_that_line() -> None:
    body = b'{"x": 1}\n{"x": 2}\n{"x": \n'
    with pytest.raises(BodyError, match=r"^line 3, column 7: invalid JSON"):
        parse_body(body, "application/x-ndjson", ["x"])


# --- numeric fields as float64 arrays ------------------------------------------------------
#
# parse_body(..., numeric_fields=...) may hand a column over as a float64 array, but only when
# the raw bytes prove that every value in it is a number: then the array is exactly what the
# binner would have made of the list. Anything else must stay the list.

NUMBER_KEYS = st.sampled_from(["a", "b", "tfn", "n", "x y", "é"])
NUMBERS = st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(
    allow_nan=False, allow_infinity=False
)
MOSTLY_NUMBERS = NUMBERS | NUMBERS | NUMBERS | SCALARS


def is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def assert_numbers_proven_or_lists(actual: Batch, expected: Batch, numeric: Sequence[str]) -> None:
    """Every column is the expected list, or, for a numeric field whose values are all numbers,
    their float64 array."""
    assert actual.n_rows == expected.n_rows
    assert actual.unknown_fields == expected.unknown_fields
    assert list(actual.columns) == list(expected.columns)
    for name, values in expected.columns.items():
        column = actual.columns[name]
        if isinstance(column, np.ndarray):
            assert name in numeric and all(map(is_number, values)), (name, values)
            assert column.dtype == np.float64
            np.testing.assert_array_equal(column, np.array(values, dtype=np.float64))
        else:
            assert comparable(column) == comparable(values), name


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.dictionaries(NUMBER_KEYS, MOSTLY_NUMBERS, max_size=4), max_size=10),
    fields=st.lists(NUMBER_KEYS, unique=True, max_size=4),
    data=st.data(),
)
def test_numeric_fields_come_as_arrays_only_when_every_value_is_a_number(
    rows: list[dict[str, object]], fields: list[str], data: st.DataObject
) -> None:
    numeric = data.draw(st.lists(st.sampled_from(fields), unique=True) if fields else st.just([]))
    expected = naive_rows_batch(rows, fields)
    bodies = [(orjson.dumps(rows), JSON)]
    if rows:
        bodies.append((ndjson(rows), NDJSON))
    for body, content_type in bodies:
        actual = parse_body(body, content_type, fields, numeric_fields=numeric)
        assert_numbers_proven_or_lists(actual, expected, numeric)
    columns = {name: [row.get(name, 0) for row in rows] for name in fields}
    actual = parse_body(orjson.dumps({"columns": columns}), JSON, fields, numeric_fields=numeric)
    assert_numbers_proven_or_lists(actual, naive_columns_batch(columns, fields), numeric)


def test_bodies_of_plain_numbers_take_the_array_path_in_every_form() -> None:
    rows = [{"tfn": 1, "n": 2.5, "a": -3e-7}, {"tfn": 2**63, "n": 0, "a": 1e300}]
    fields = ("tfn", "n", "a")
    columns = {name: [row[name] for row in rows] for name in fields}
    for body, content_type in [
        (orjson.dumps(rows), JSON),
        (json.dumps(rows, indent=2).encode(), JSON),
        (ndjson(rows, b"\r\n\n"), NDJSON),
        (orjson.dumps({"columns": columns}), JSON),
        (b"\xef\xbb\xbf" + orjson.dumps({"columns": columns}), JSON),
    ]:
        batch = parse_body(body, content_type, fields, numeric_fields=("tfn", "a"))
        assert isinstance(batch.columns["tfn"], np.ndarray), body
        assert isinstance(batch.columns["a"], np.ndarray), body
        assert batch.columns["n"] == [2.5, 0]  # not asked for
        np.testing.assert_array_equal(batch.columns["tfn"], [1.0, float(2**63)])


@pytest.mark.parametrize(
    "body",
    [
        # A string, a literal or a nested container anywhere keeps the lists.
        b'{"columns": {"a": [1, "2"], "b": [1, 2]}}',
        b'{"columns": {"a": [1, true], "b": [1, 2]}}',
        b'{"columns": {"a": [1, null], "b": [1, 2]}}',
        b'{"columns": {"a": [1, [2]], "b": [1, 2]}}',
        b'{"columns": {"a": [1, {}], "b": [1, 2]}}',
        b'[{"a": 1, "b": false}, {"a": 2, "b": 3}]',
        b'[{"a": 1, "b": 2}, {"a": "x", "b": 3}]',
        # An escaped key hides a "t" from the count: a backslash anywhere keeps the lists.
        b'{"columns": {"\\u0074": [1, 2], "a": [1, true]}}',
        # A key written twice: the parsed object has fewer keys than the text.
        b'{"columns": {"a": [1, 2], "a": [1, 2], "b": [1, 2]}}',
        b'[{"a": 1, "a": "x", "b": 2}]',
        # Rows missing a field, or holding one not asked for.
        b'[{"a": 1}, {"a": 2, "b": 3}]',
        b'[{"a": 1, "b": 2, "c": 3}]',
    ],
)
def test_anything_but_plain_numbers_keeps_the_lists(body: bytes) -> None:
    numeric = ("a", "b")
    batch = parse_body(body, JSON, numeric, numeric_fields=numeric)
    plain = parse_body(body, JSON, numeric)
    assert_same_batch(batch, plain)
    assert not any(isinstance(column, np.ndarray) for column in batch.columns.values())


def test_the_standard_library_fallback_gives_the_same_numbers() -> None:
    body = b'{"columns": {"a": [1, NaN, 2.5]}}'
    batch = parse_body(body, JSON, ("a",), numeric_fields=("a",))
    plain = parse_body(body, JSON, ("a",))
    column = batch.columns["a"]
    expected = np.array(plain.columns["a"], dtype=np.float64)
    np.testing.assert_array_equal(np.asarray(column, dtype=np.float64), expected)
