"""The running daemon over real HTTP (docs/http-api.md): every endpoint and answer, exact metrics.

Two daemons serve the whole module (module-scoped fixtures, port 0): ``daemon``, open and
roomy, for the endpoints, the formats, the error answers, the exposition and concurrent
clients; ``guarded``, with a bearer token, a one-row ingest queue and ``log_base: 2``, for 401
and 503. Each test posts to its own stream, so their counts never mix; counters shared by
the whole daemon (``driftmon_ingest_requests_total``) are compared before and after.

Every divergence the daemon exports is compared with ``tests/naive.py`` (scipy) on counts
binned here, independently, from the very rows that were posted: a slow, obvious reading of
docs/configuration.md#bins (:func:`naive_index`) over the JSON values themselves.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import naive
import numpy as np
import pytest
from harness import (
    DaemonProcess,
    Reply,
    Samples,
    async_request,
    parse_metrics,
    sample,
    series,
    wait_for,
)
from naive import METRICS, divergences_one, edges_bin, uniform_bin, wasserstein_one
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

JSON = "application/json"
NDJSON = "application/x-ndjson"
MAX_BODY_BYTES = 64 * 1024
TOKEN = "s3cret-token"

ABSENT = object()
"""A field left out of a row (JSON rows and NDJSON only)."""


# --- the monitored features and a naive reading of the bin rules ----------------------------------


@dataclass(frozen=True)
class Feature:
    """One feature as the config declares it; ``edges`` for every numeric kind."""

    name: str
    type: str
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    uniform: tuple[float, float, int] | None = None
    top_k: int | None = None
    quantiles: int | None = None
    smoothing: float = 0.5

    def config(self) -> dict[str, object]:
        """The ``features:`` entry."""
        entry: dict[str, object] = {"name": self.name, "type": self.type}
        if self.uniform is not None:
            lo, hi, count = self.uniform
            entry["bins"] = {"kind": "uniform", "lo": lo, "hi": hi, "count": count}
        elif self.quantiles is not None:
            entry["bins"] = {"kind": "quantile", "count": self.quantiles}
        elif self.type == "numeric":
            entry["bins"] = {"kind": "edges", "edges": list(self.edges)}
        elif self.top_k is not None:
            entry["top_k"] = self.top_k
        else:
            entry["categories"] = list(self.categories)
        if self.smoothing != 0.5:
            entry["smoothing"] = self.smoothing
        return entry

    @property
    def n_bins(self) -> int:
        if self.type == "numeric":
            return len(self.edges) - 1 + 4
        return len(self.categories) + 3


def naive_index(value: object, feature: Feature) -> int:
    """The bin of one decoded JSON value, read straight from docs/configuration.md#bins."""
    if feature.type == "numeric":
        n = len(feature.edges) - 1
        if value is ABSENT or value is None:
            return n + 2
        if isinstance(value, bool) or not isinstance(value, int | float):
            return n + 3
        number = float(value)
        if feature.uniform is not None:
            lo, hi, count = feature.uniform
            return uniform_bin(number, lo, hi, count)
        return edges_bin(number, feature.edges)
    c = len(feature.categories)
    if value is ABSENT or value is None or (isinstance(value, float) and math.isnan(value)):
        return c + 1
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return c + 2
    return feature.categories.index(text) if text in feature.categories else c


def naive_counts(values: Sequence[object], feature: Feature) -> np.ndarray:
    """Counts over the feature's bins of ``values``."""
    counts = np.zeros(feature.n_bins)
    for value in values:
        counts[naive_index(value, feature)] += 1
    return counts


def naive_kinds(counts: np.ndarray, feature: Feature) -> dict[str, float]:
    """``driftmon_ingest_values_total`` by kind for values binned into ``counts``."""
    if feature.type == "numeric":
        n = len(feature.edges) - 1
        return {
            "ok": float(counts[1 : n + 1].sum()),
            "underflow": float(counts[0]),
            "overflow": float(counts[n + 1]),
            "missing": float(counts[n + 2]),
            "invalid": float(counts[n + 3]),
        }
    c = len(feature.categories)
    return {
        "ok": float(counts[:c].sum()),
        "other": float(counts[c]),
        "missing": float(counts[c + 1]),
        "invalid": float(counts[c + 2]),
    }


def learned(feature: Feature, reference: Sequence[dict[str, object]]) -> Feature:
    """``feature`` with the layout a quantile or top-k feature learns from ``reference``.

    Quantile edges: ``np.quantile`` (linear) of the finite numbers, repeats removed, the
    last just above the maximum (``naive.quantile_edges``); top-k:
    the k most frequent strings (the test data has no ties).
    """
    values = [row.get(feature.name, ABSENT) for row in reference]
    if feature.quantiles is not None:
        numbers = np.array(
            [
                float(v)
                for v in values
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ]
        )
        edges = naive.quantile_edges(numbers.tolist(), feature.quantiles)
        return Feature(feature.name, "numeric", edges=tuple(edges), quantiles=1)
    if feature.top_k is not None:
        texts = [v for v in values if isinstance(v, str)]
        ranked = sorted(set(texts), key=lambda t: -texts.count(t))
        return Feature(feature.name, "categorical", categories=tuple(ranked[: feature.top_k]))
    return feature


def uniform(name: str, lo: float, hi: float, count: int, smoothing: float = 0.5) -> Feature:
    edges = tuple(np.linspace(lo, hi, count + 1).tolist())
    return Feature(name, "numeric", edges=edges, uniform=(lo, hi, count), smoothing=smoothing)


# --- rows --------------------------------------------------------------------------------------


def numeric_value(rng: np.random.Generator, lo: float, hi: float, shift: float = 0.0) -> object:
    """A numeric field's value: mostly numbers in and around [lo, hi), and every odd kind."""
    roll = rng.random()
    span = hi - lo
    if roll < 0.80:
        return round(float(rng.uniform(lo - 0.1 * span, hi + 0.1 * span) + shift * span), 3)
    if roll < 0.84:
        return int(rng.integers(int(lo), int(hi)))
    odd: list[object] = [
        None, ABSENT, math.nan, "n/a", True, math.inf, -math.inf, [1], {"a": 1}, hi, lo,
    ]  # fmt: skip
    return odd[int(rng.integers(len(odd)))]


def categorical_value(
    rng: np.random.Generator, choices: Sequence[str], p: Sequence[float]
) -> object:
    """A categorical field's value: mostly ``choices``, and every odd kind."""
    roll = rng.random()
    if roll < 0.85:
        return str(rng.choice(list(choices), p=list(p)))
    odd: list[object] = [None, ABSENT, "unknown", 3, 2.5, True, ["x"], math.nan, "0"]
    return odd[int(rng.integers(len(odd)))]


def dump_rows(rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """Rows as JSON objects: absent fields left out."""
    return [{k: v for k, v in row.items() if v is not ABSENT} for row in rows]


def rows_body(rows: Sequence[dict[str, object]]) -> bytes:
    """A JSON array of row objects (``json.dumps`` writes NaN and Infinity literals)."""
    return json.dumps(dump_rows(rows)).encode()


def ndjson_body(rows: Sequence[dict[str, object]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in dump_rows(rows)).encode()


def columns_body(rows: Sequence[dict[str, object]], names: Sequence[str]) -> bytes:
    """A ``{"columns": ...}`` body; an absent field becomes ``null`` (both are missing)."""
    columns = {
        name: [None if row.get(name, ABSENT) is ABSENT else row[name] for row in rows]
        for name in names
    }
    return json.dumps({"columns": columns}).encode()


def bodies(
    rows: Sequence[dict[str, object]], names: Sequence[str], per_request: int
) -> Iterator[tuple[bytes, str, int]]:
    """``rows`` cut into (body, content type, rows) requests, the three formats in turn."""
    for number, start in enumerate(range(0, len(rows), per_request)):
        chunk = rows[start : start + per_request]
        kind = number % 3
        if kind == 0:
            yield rows_body(chunk), JSON, len(chunk)
        elif kind == 1:
            yield columns_body(chunk, names), JSON, len(chunk)
        else:
            yield ndjson_body(chunk), NDJSON, len(chunk)


# --- streams of the module's daemons ---------------------------------------------------------

API_FEATURES = (
    uniform("x", 0.0, 10.0, 10),
    Feature("c", "categorical", categories=("red", "green", "blue")),
)
EXACT_FEATURES = (
    uniform("u", 0.0, 10.0, 10),
    Feature("e", "numeric", edges=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), smoothing=1.0),
    uniform("z", 0.0, 4.0, 4, smoothing=0.0),  # unsmoothed: a bin empty live is KL = +Inf
    Feature("q", "numeric", quantiles=5),
    Feature("k", "categorical", categories=("red", "green", "blue")),
    Feature("t", "categorical", top_k=2),
)


def make_rows(
    rng: np.random.Generator,
    n: int,
    features: Sequence[Feature],
    shift: float = 0.0,
    *,
    live: bool = True,
) -> list[dict[str, object]]:
    """``n`` rows over ``features``; ``shift`` moves the numbers (a share of their range)."""
    rows: list[dict[str, object]] = []
    for _ in range(n):
        row: dict[str, object] = {}
        for feature in features:
            if feature.name == "z":
                # Live rows never reach z's last bin: KL(reference || live) is +Inf unsmoothed.
                row["z"] = round(float(rng.uniform(0.0, 3.0 if live else 4.0)), 3)
            elif feature.name == "q":
                row["q"] = round(float(rng.normal(50.0 + 20.0 * shift, 10.0)), 2)
            elif feature.name == "t":
                row["t"] = str(
                    rng.choice(["x", "y", "w1", "w2", "w3"], p=[0.45, 0.3, 0.1, 0.1, 0.05])
                )
            elif feature.type == "numeric":
                lo, hi = feature.edges[0], feature.edges[-1]
                row[feature.name] = numeric_value(rng, lo, hi, shift)
            else:
                p = [0.2, 0.3, 0.5] if shift else [0.5, 0.3, 0.2]
                row[feature.name] = categorical_value(rng, feature.categories, p)
        rows.append(row)
    return rows


REFERENCE_RNG = np.random.default_rng(20261125)
API_REFERENCE = make_rows(REFERENCE_RNG, 300, API_FEATURES, live=False)
EXACT_REFERENCE = make_rows(REFERENCE_RNG, 400, EXACT_FEATURES, live=False)
GUARDED_FEATURES = API_FEATURES


def write_ndjson(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    path.write_bytes(ndjson_body(rows))
    return path


def stream(
    name: str, features: Sequence[Feature], reference: str, **extra: object
) -> dict[str, object]:
    return {
        "name": name,
        "reference": {"file": reference},
        "features": [f.config() for f in features],
        **extra,
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The open daemon: roomy queue, no token, evaluation every 100 ms, checkpoints on."""
    folder = tmp_path_factory.mktemp("daemon")
    write_ndjson(folder / "api.ndjson", API_REFERENCE)
    write_ndjson(folder / "exact.ndjson", EXACT_REFERENCE)
    config = {
        "server": {"listen": "127.0.0.1:0", "max_body_bytes": MAX_BODY_BYTES},
        "ingest": {"workers": 2, "queue_rows": 1_000_000},
        "engine": {"evaluate_every": "100ms"},
        "state": {"dir": str(folder / "state"), "checkpoint_every": "200ms"},
        "defaults": {"window": {"length": "1h", "panes": 6}},
        "streams": [
            stream("api", API_FEATURES, "api.ndjson"),
            stream("errors", API_FEATURES, "api.ndjson"),
            stream("exact", EXACT_FEATURES, "exact.ndjson"),
            stream("tail", API_FEATURES, "api.ndjson", window={"samples": 50}),
            stream("load", API_FEATURES, "api.ndjson"),
            stream("idle", API_FEATURES, "api.ndjson"),
            stream("misc", API_FEATURES, "api.ndjson"),
        ],
        "alerts": [
            {
                "name": "js-high",
                "match": {"stream": "*", "feature": "*"},
                "metric": "js",
                "threshold": 0.05,
                "min_samples": 10,
                "severity": "page",
            }
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    process = DaemonProcess(path)
    with process:
        yield process


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon with a bearer token, a one-row ingest queue, two workers and bits."""
    folder = tmp_path_factory.mktemp("guarded")
    write_ndjson(folder / "api.ndjson", API_REFERENCE)
    (folder / "token").write_text(f"  {TOKEN}\n")
    config = {
        "server": {"auth_token_file": "token", "max_body_bytes": "16MiB"},
        "ingest": {"workers": 2, "queue_rows": 1},
        "engine": {"evaluate_every": "100ms", "log_base": 2},
        "defaults": {"window": {"length": "1h", "panes": 6}},
        "streams": [
            stream("s", GUARDED_FEATURES, "api.ndjson"),
            stream("flood", GUARDED_FEATURES, "api.ndjson"),
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    process = DaemonProcess(path)
    with process:
        yield process


# --- reading the daemon ----------------------------------------------------------------------


def rows_total(samples: Samples, stream_name: str) -> float:
    value = sample(samples, "driftmon_ingest_rows_total", stream=stream_name)
    return 0.0 if value is None else value


def requests_by_code(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["code"]: value
        for labels, value in series(samples, "driftmon_ingest_requests_total").items()
    }


def live_counts(
    process: DaemonProcess, stream_name: str, features: Sequence[Feature]
) -> dict[str, list[float]]:
    return {f.name: process.monitor(stream_name, f.name)["live_counts"] for f in features}


def wait_evaluated(process: DaemonProcess, stream_name: str, feature: str, rows: int) -> Samples:
    """The first scrape whose evaluation has ``rows`` rows in the monitor's window."""

    def done() -> Samples | None:
        samples = process.metrics()
        window = sample(samples, "driftmon_window_samples", stream=stream_name, feature=feature)
        return samples if window == rows else None

    return wait_for(done, 30.0, f"{stream_name}/{feature} window of {rows} rows")


FAMILIES = {
    "kl": "driftmon_kl_divergence",
    "kl_reverse": "driftmon_reverse_kl_divergence",
    "js": "driftmon_js_divergence",
    "psi": "driftmon_psi",
    "hellinger": "driftmon_hellinger_distance",
    "wasserstein": "driftmon_wasserstein_distance",
    "p_value": "driftmon_drift_p_value",
}


def exported(samples: Samples, stream_name: str, feature: str) -> dict[str, float | None]:
    """Every divergence series of one monitor (``None`` when absent)."""
    values = {
        name: sample(samples, metric, stream=stream_name, feature=feature)
        for name, metric in FAMILIES.items()
    }
    for window in ("reference", "live"):
        values[f"entropy_{window}"] = sample(
            samples, "driftmon_entropy", stream=stream_name, feature=feature, window=window
        )
    return values


def assert_close(got: float | None, want: float, what: str) -> None:
    """1e-12 relative (a 1e-15 absolute floor for values that are 0); infinities exactly."""
    assert got is not None, f"{what}: series absent, expected {want!r}"
    if math.isinf(want):
        assert got == want, f"{what}: got {got!r}, scipy {want!r}"
        return
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15), (
        f"{what}: got {got!r}, scipy {want!r}"
    )


def assert_matches_scipy(
    samples: Samples,
    stream_name: str,
    feature: Feature,
    reference: np.ndarray,
    live: np.ndarray,
    base: str = "e",
) -> None:
    """Every exported divergence of one monitor against scipy on naive counts."""
    got = exported(samples, stream_name, feature.name)
    want = divergences_one(reference, live, smoothing=feature.smoothing, base=base)
    for name in (*FAMILIES, "entropy_reference", "entropy_live"):
        what = f"{stream_name}/{feature.name} {name}"
        if name == "wasserstein":
            if feature.type == "categorical":
                assert got[name] is None, f"{what}: a categorical monitor has no wasserstein"
                continue
            value_bins = len(feature.edges) + 1
            expected = wasserstein_one(reference[:value_bins], live[:value_bins], feature.edges)
        else:
            assert name in METRICS
            expected = want[name]
        assert_close(got[name], expected, what)


# --- health, readiness, the monitors API ------------------------------------------------------


def test_health_and_readiness(daemon: DaemonProcess) -> None:
    healthy = daemon.get("/-/healthy")
    ready = daemon.get("/-/ready")
    assert (healthy.status, ready.status) == (200, 200)
    assert b"healthy" in healthy.body and b"ready" in ready.body


def test_monitors_list_every_monitor(daemon: DaemonProcess) -> None:
    reply = daemon.get("/api/v1/monitors")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith(JSON)
    payload = reply.json()
    assert payload["log_base"] == "e"
    listed = {(m["stream"], m["feature"]): m for m in payload["monitors"]}
    expected = {
        (s, f.name)
        for s, features in (
            ("api", API_FEATURES),
            ("errors", API_FEATURES),
            ("exact", EXACT_FEATURES),
            ("tail", API_FEATURES),
            ("load", API_FEATURES),
            ("idle", API_FEATURES),
            ("misc", API_FEATURES),
        )
        for f in features
    }
    assert set(listed) == expected
    idle = listed[("idle", "x")]
    assert idle["type"] == "numeric" and listed[("idle", "c")]["type"] == "categorical"
    assert idle["samples"] == 0 and idle["reference_samples"] == len(API_REFERENCE)
    # An empty window has no divergence: every value is absent (null), never 0.
    assert set(idle["divergences"]) == {*METRICS, "wasserstein"}
    assert all(value is None for value in idle["divergences"].values())
    assert [(a["rule"], a["severity"], a["state"]) for a in idle["alerts"]] == [
        ("js-high", "page", "inactive")
    ]


def test_monitor_detail_bins_and_reference_counts(daemon: DaemonProcess) -> None:
    x = daemon.monitor("idle", "x")
    assert x["bins"] == [
        "underflow", *(f"[{i}, {i + 1})" for i in range(10)), "overflow", "missing", "invalid"
    ]  # fmt: skip
    feature_x = API_FEATURES[0]
    reference = naive_counts([row.get("x", ABSENT) for row in API_REFERENCE], feature_x)
    assert x["reference_counts"] == reference.tolist()
    assert x["live_counts"] == [0.0] * feature_x.n_bins
    c = daemon.monitor("idle", "c")
    assert c["bins"] == ["red", "green", "blue", "other", "missing", "invalid"]
    feature_c = API_FEATURES[1]
    reference_c = naive_counts([row.get("c", ABSENT) for row in API_REFERENCE], feature_c)
    assert c["reference_counts"] == reference_c.tolist()
    for path in ("/api/v1/monitors/idle/nope", "/api/v1/monitors/nope/x"):
        reply = daemon.get(path)
        assert reply.status == 404, path
        assert "error" in reply.json()


# --- ingest: formats, errors, limits -----------------------------------------------------------


def test_three_body_formats_are_accepted_and_binned(daemon: DaemonProcess) -> None:
    rng = np.random.default_rng(1)
    rows = make_rows(rng, 90, API_FEATURES)
    names = [f.name for f in API_FEATURES]
    posted = [
        daemon.post_rows("api", rows_body(rows[:30]), JSON),
        daemon.post_rows(
            "api", columns_body(rows[30:60], names), "application/json; charset=utf-8"
        ),
        daemon.post_rows("api", ndjson_body(rows[60:]), NDJSON),
    ]
    for reply in posted:
        assert reply.status == 200, reply.body
        assert reply.headers["Content-Type"].startswith(JSON)
        assert reply.json() == {"rows": 30}
    assert rows_total(daemon.metrics(), "api") == 90
    for feature in API_FEATURES:
        want = naive_counts([row.get(feature.name, ABSENT) for row in rows], feature)
        assert daemon.monitor("api", feature.name)["live_counts"] == want.tolist(), feature.name
    samples = wait_evaluated(daemon, "api", "x", 90)
    assert sample(samples, "driftmon_window_samples", stream="api", feature="c") == 90
    # Unknown fields are ignored and counted (two per row here).
    extra = [{"x": 1.5, "c": "red", "colour": "x", "size": 3}] * 4
    assert daemon.post_rows("api", json.dumps(extra).encode()).json() == {"rows": 4}
    samples = daemon.metrics()
    assert sample(samples, "driftmon_ingest_unknown_fields_total", stream="api") == 8
    assert rows_total(samples, "api") == 94


BAD_BODIES = [
    # (content type, body, what the message must name)
    (JSON, b'[{"x": 1},\n {"x": 2,]', r"line 2, column \d+"),
    (JSON, b'[{"x": 1}, {"x": 2}, 7]', r"row 3"),
    (JSON, b'[{"x": 1}, {"c": "red"}, ["blue"]]', r"row 3"),
    (NDJSON, b'{"x": 1}\n{"x": 2}\n{"x": ]}\n', r"line 3, column 7"),
    (NDJSON, b'{"x": 1}\n[2]\n', r"line 2"),
    (JSON, b'{"columns": {"x": [1, 2, 3], "c": ["red"]}}', r"columns\.c"),
    (JSON, b'{"columns": {"x": 3}}', r"columns\.x"),
    (JSON, b'{"rows": [{"x": 1}]}', r"columns"),
    (JSON, b'[{"c": "gr\xffeen"}]', r"line 1, column \d+"),
    (JSON, b"", r"empty"),
]


def test_bad_bodies_are_400_naming_where_and_apply_nothing(daemon: DaemonProcess) -> None:
    good = make_rows(np.random.default_rng(2), 20, API_FEATURES)
    first_rows = rows_total(daemon.metrics(), "errors")
    assert daemon.post_rows("errors", rows_body(good)).status == 200
    before_rows = rows_total(daemon.metrics(), "errors")
    assert before_rows == first_rows + 20
    before_live = live_counts(daemon, "errors", API_FEATURES)
    for content_type, body, where in BAD_BODIES:
        reply = daemon.post_rows("errors", body, content_type)
        assert reply.status == 400, (body, reply.status, reply.body)
        message = reply.json()["error"]
        assert re.search(where, message), (body, message)
        assert rows_total(daemon.metrics(), "errors") == before_rows, body
        assert live_counts(daemon, "errors", API_FEATURES) == before_live, body


def test_unknown_stream_is_404(daemon: DaemonProcess) -> None:
    reply = daemon.post_rows("no-such-stream", b'[{"x": 1}]')
    assert reply.status == 404
    assert "no-such-stream" in reply.json()["error"]


def test_body_over_the_limit_is_413(daemon: DaemonProcess) -> None:
    before = rows_total(daemon.metrics(), "errors")
    row = {"x": 1.25, "c": "green"}
    n = MAX_BODY_BYTES // len(json.dumps(row)) + 10
    body = json.dumps([row] * n).encode()
    assert len(body) > MAX_BODY_BYTES
    reply = daemon.post_rows("errors", body)
    assert reply.status == 413
    assert str(MAX_BODY_BYTES) in reply.json()["error"]
    # The same without a Content-Length (chunked): the limit holds while reading.
    chunked = asyncio.run(_post_chunked(daemon.url + "/v1/streams/errors/rows", body))
    assert chunked.status == 413
    # Exactly at the limit is still accepted.
    per_row = len(json.dumps([row, row])) - len(json.dumps([row]))
    m = (MAX_BODY_BYTES - 2) // per_row
    fits = json.dumps([row] * m).encode()
    fits += b" " * (MAX_BODY_BYTES - len(fits))
    assert len(fits) == MAX_BODY_BYTES
    assert daemon.post_rows("errors", fits).json() == {"rows": m}
    assert rows_total(daemon.metrics(), "errors") == before + m


async def _post_chunked(url: str, body: bytes) -> Reply:
    async def pieces() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    async with aiohttp.ClientSession() as session:
        return await async_request(session, "POST", url, pieces(), {"Content-Type": JSON})


@pytest.mark.parametrize("content_type", ["text/plain", "text/csv", "application/xml"])
def test_unknown_content_type_is_415(daemon: DaemonProcess, content_type: str) -> None:
    reply = daemon.post_rows("errors", b'[{"x": 1}]', content_type)
    assert reply.status == 415
    assert content_type in reply.json()["error"]


def test_requests_total_counts_every_answer_by_code(daemon: DaemonProcess) -> None:
    before = requests_by_code(daemon.metrics())
    sent = {"200": 3, "400": 2, "404": 1, "413": 1, "415": 2}
    replies = [daemon.post_rows("misc", b'[{"x": 2}]') for _ in range(3)]
    replies += [daemon.post_rows("misc", b"[{") for _ in range(2)]
    replies.append(daemon.post_rows("nowhere", b'[{"x": 2}]'))
    replies.append(daemon.post_rows("misc", b" " * (MAX_BODY_BYTES + 1)))
    replies += [daemon.post_rows("misc", b'[{"x": 2}]', "text/plain") for _ in range(2)]
    assert sorted(str(r.status) for r in replies) == sorted(
        code for code, n in sent.items() for _ in range(n)
    )
    after = requests_by_code(daemon.metrics())
    for code in {*before, *after, *sent}:
        assert after.get(code, 0) - before.get(code, 0) == sent.get(code, 0), code
    # Scrapes, monitors and health checks are not ingest requests.
    daemon.get("/api/v1/monitors")
    daemon.get("/-/healthy")
    assert requests_by_code(daemon.metrics()) == after


# --- /metrics -----------------------------------------------------------------------------------

DESIGN_METRICS = (
    "driftmon_kl_divergence",
    "driftmon_reverse_kl_divergence",
    "driftmon_js_divergence",
    "driftmon_psi",
    "driftmon_hellinger_distance",
    "driftmon_wasserstein_distance",
    "driftmon_drift_p_value",
    "driftmon_entropy",
    "driftmon_window_samples",
    "driftmon_reference_samples",
    "driftmon_alert_firing",
    "driftmon_ingest_rows_total",
    "driftmon_ingest_values_total",
    "driftmon_ingest_requests_total",
    "driftmon_evaluation_duration_seconds_bucket",
    "driftmon_evaluation_duration_seconds_count",
    "driftmon_evaluation_duration_seconds_sum",
    "driftmon_last_evaluation_timestamp_seconds",
    "driftmon_checkpoint_last_success_timestamp_seconds",
    "driftmon_config_last_reload_successful",
    "driftmon_build_info",
)


def test_every_divergence_matches_scipy_on_naive_counts(daemon: DaemonProcess) -> None:
    rng = np.random.default_rng(3)
    rows = make_rows(rng, 150, EXACT_FEATURES) + make_rows(rng, 150, EXACT_FEATURES, shift=0.3)
    names = [f.name for f in EXACT_FEATURES]
    for body, content_type, n in bodies(rows, names, 50):
        assert daemon.post_rows("exact", body, content_type).json() == {"rows": n}
    samples = wait_evaluated(daemon, "exact", "u", len(rows))
    for declared in EXACT_FEATURES:
        feature = learned(declared, EXACT_REFERENCE)
        reference = naive_counts([r.get(feature.name, ABSENT) for r in EXACT_REFERENCE], feature)
        live = naive_counts([r.get(feature.name, ABSENT) for r in rows], feature)
        detail = daemon.monitor("exact", feature.name)
        if declared.top_k is not None:
            assert set(detail["bins"][:2]) == {"x", "y"}
            feature = Feature(feature.name, "categorical", categories=tuple(detail["bins"][:2]))
            reference = naive_counts([r.get("t", ABSENT) for r in EXACT_REFERENCE], feature)
            live = naive_counts([r.get("t", ABSENT) for r in rows], feature)
        assert detail["reference_counts"] == reference.tolist(), feature.name
        assert detail["live_counts"] == live.tolist(), feature.name
        key = {"stream": "exact", "feature": feature.name}
        assert sample(samples, "driftmon_window_samples", **key) == len(rows)
        assert sample(samples, "driftmon_reference_samples", **key) == len(EXACT_REFERENCE)
        assert_matches_scipy(samples, "exact", feature, reference, live)
        kinds = {
            dict(labels)["kind"]: value
            for labels, value in series(samples, "driftmon_ingest_values_total", **key).items()
        }
        assert kinds == naive_kinds(live, feature), feature.name
    assert sample(samples, "driftmon_kl_divergence", stream="exact", feature="z") == math.inf
    firing = series(samples, "driftmon_alert_firing", stream="exact")
    assert len(firing) == len(EXACT_FEATURES)
    assert set(firing.values()) <= {0.0, 1.0}
    # The divergences are what the monitors API reports too.
    api = daemon.monitor("exact", "u")["divergences"]
    scraped = exported(daemon.metrics(), "exact", "u")
    for name in FAMILIES:
        assert api[name] == scraped[name], name


def test_sample_window_keeps_the_last_rows(daemon: DaemonProcess) -> None:
    rng = np.random.default_rng(4)
    rows = make_rows(rng, 90, API_FEATURES, shift=0.2)
    for start in range(0, 90, 30):
        assert daemon.post_rows("tail", rows_body(rows[start : start + 30])).status == 200
    samples = wait_evaluated(daemon, "tail", "x", 50)
    for feature in API_FEATURES:
        reference = naive_counts([r.get(feature.name, ABSENT) for r in API_REFERENCE], feature)
        live = naive_counts([r.get(feature.name, ABSENT) for r in rows[-50:]], feature)
        assert daemon.monitor("tail", feature.name)["live_counts"] == live.tolist()
        assert_matches_scipy(samples, "tail", feature, reference, live)
    assert rows_total(samples, "tail") == 90


def test_empty_window_has_no_divergence_series(daemon: DaemonProcess) -> None:
    samples = daemon.metrics()
    for feature in ("x", "c"):
        assert all(value is None for value in exported(samples, "idle", feature).values())
        key = {"stream": "idle", "feature": feature}
        assert sample(samples, "driftmon_window_samples", **key) == 0
        assert sample(samples, "driftmon_reference_samples", **key) == len(API_REFERENCE)
        rule = {"rule": "js-high", "severity": "page"}
        assert sample(samples, "driftmon_alert_firing", **key, **rule) == 0


def test_every_design_metric_is_exported(daemon: DaemonProcess) -> None:
    daemon.post_rows("misc", rows_body(make_rows(np.random.default_rng(5), 10, API_FEATURES)))
    wait_for(
        lambda: sample(daemon.metrics(), "driftmon_checkpoint_last_success_timestamp_seconds"),
        10.0,
        "a checkpoint",
    )
    reply = daemon.get("/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "version=0.0.4" in reply.headers["Content-Type"]
    samples = parse_metrics(reply.body.decode())
    names = {name for name, _ in samples}
    missing = [name for name in DESIGN_METRICS if name not in names]
    assert not missing, missing
    from driftmon import __version__

    assert sample(samples, "driftmon_build_info", version=__version__) == 1
    assert sample(samples, "driftmon_config_last_reload_successful") == 1
    kinds = {
        dict(labels)["kind"]
        for labels in series(samples, "driftmon_ingest_values_total", stream="misc")
    }
    assert kinds == {"ok", "missing", "invalid", "other", "underflow", "overflow"}


def test_openmetrics_when_asked(daemon: DaemonProcess) -> None:
    reply = daemon.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    text = reply.body.decode()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in openmetrics_families(text)}
    assert families["driftmon_ingest_rows"].type == "counter"
    assert families["driftmon_evaluation_duration_seconds"].type == "histogram"
    assert families["driftmon_js_divergence"].type == "gauge"
    # Same values as the text format for a monitor nothing posts to any more.
    plain = daemon.metrics()
    for s in families["driftmon_reference_samples"].samples:
        assert s.value == sample(plain, "driftmon_reference_samples", **s.labels), s
    idle_js = [
        s for s in families["driftmon_js_divergence"].samples if s.labels["stream"] == "idle"
    ]
    assert idle_js == []


# --- concurrency --------------------------------------------------------------------------------


async def post_concurrently(
    url: str, jobs: Sequence[Sequence[tuple[bytes, str]]], token: str | None = None
) -> list[list[Reply]]:
    """Each list of (body, content type) posted in order by its own client, all at once."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    async def client(own: Sequence[tuple[bytes, str]]) -> list[Reply]:
        async with aiohttp.ClientSession() as session:
            return [
                await async_request(session, "POST", url, body, {**headers, "Content-Type": kind})
                for body, kind in own
            ]

    return list(await asyncio.gather(*(client(own) for own in jobs)))


def test_concurrent_clients_lose_and_double_count_nothing(daemon: DaemonProcess) -> None:
    rng = np.random.default_rng(6)
    names = [f.name for f in API_FEATURES]
    clients, per_client, rows_each = 8, 50, 10
    all_rows: list[dict[str, object]] = []
    jobs = []
    for _ in range(clients):
        rows = make_rows(rng, per_client * rows_each, API_FEATURES, shift=0.1)
        all_rows += rows
        jobs.append([(body, kind) for body, kind, _ in bodies(rows, names, rows_each)])
    before = requests_by_code(daemon.metrics()).get("200", 0)
    replies = asyncio.run(post_concurrently(daemon.url + "/v1/streams/load/rows", jobs))
    assert [r.status for own in replies for r in own] == [200] * clients * per_client
    assert all(r.json() == {"rows": rows_each} for own in replies for r in own)
    total = clients * per_client * rows_each
    samples = wait_evaluated(daemon, "load", "x", total)
    assert rows_total(samples, "load") == total
    assert requests_by_code(samples)["200"] - before == clients * per_client
    for feature in API_FEATURES:
        key = {"stream": "load", "feature": feature.name}
        assert sample(samples, "driftmon_window_samples", **key) == total
        reference = naive_counts([r.get(feature.name, ABSENT) for r in API_REFERENCE], feature)
        live = naive_counts([r.get(feature.name, ABSENT) for r in all_rows], feature)
        assert daemon.monitor("load", feature.name)["live_counts"] == live.tolist()
        assert_matches_scipy(samples, "load", feature, reference, live)
        kinds = {
            dict(labels)["kind"]: value
            for labels, value in series(samples, "driftmon_ingest_values_total", **key).items()
        }
        assert sum(kinds.values()) == total


# --- the guarded daemon: tokens and a full queue --------------------------------------------------


def test_ingest_needs_the_bearer_token(guarded: DaemonProcess) -> None:
    body = b'[{"x": 1.5, "c": "red"}]'
    before = rows_total(guarded.metrics(), "s")
    for headers in (
        {"Content-Type": JSON},
        {"Content-Type": JSON, "Authorization": "Bearer wrong"},
        {"Content-Type": JSON, "Authorization": f"Basic {TOKEN}"},
        {"Content-Type": JSON, "Authorization": f"Bearer {TOKEN}x"},
    ):
        reply = guarded.post("/v1/streams/s/rows", body, headers)
        assert reply.status == 401, headers
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    samples = guarded.metrics()
    assert rows_total(samples, "s") == before
    assert requests_by_code(samples).get("401", 0) >= 4
    assert guarded.post_json("s", body, token=TOKEN).json() == {"rows": 1}
    assert rows_total(guarded.metrics(), "s") == before + 1


def raw_post(url: str, path: str, headers: bytes, body: bytes) -> int:
    """The status of a POST sent byte for byte (for headers no HTTP client would send)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: driftmon\r\nConnection: close\r\n"
            + headers
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body
        )  # fmt: skip
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_token_scheme_is_case_insensitive_and_odd_bytes_are_401(guarded: DaemonProcess) -> None:
    body = b'[{"x": 2.5, "c": "blue"}]'
    before = guarded.metrics()
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Content-Type": JSON, "Authorization": f"{scheme} {TOKEN}"}
        assert guarded.post("/v1/streams/s/rows", body, headers).status == 200, scheme
    path = "/v1/streams/s/rows"
    content_type = b"Content-Type: application/json\r\n"
    for authorization in (b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xe9", b"Bearer"):
        headers = content_type + b"Authorization: " + authorization + b"\r\n"
        assert raw_post(guarded.url, path, headers, body) == 401, authorization
    after = guarded.metrics()
    assert rows_total(after, "s") - rows_total(before, "s") == 3
    codes_before, codes_after = requests_by_code(before), requests_by_code(after)
    assert codes_after["401"] - codes_before.get("401", 0) == 3
    assert "500" not in codes_after


def test_reload_needs_the_token_but_reads_do_not(guarded: DaemonProcess) -> None:
    assert guarded.post("/-/reload").status == 401
    assert guarded.post("/-/reload", headers={"Authorization": "Bearer nope"}).status == 401
    reply = guarded.post("/-/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 200, reply.body
    for path in ("/metrics", "/-/healthy", "/-/ready", "/api/v1/monitors", "/api/v1/monitors/s/x"):
        assert guarded.get(path).status == 200, path
    assert sample(guarded.metrics(), "driftmon_config_last_reload_successful") == 1


def test_full_queue_is_503_with_retry_after_and_applies_nothing(guarded: DaemonProcess) -> None:
    """With a one-row queue and two workers, a request that arrives while another one is
    being binned finds the queue full. Rounds of concurrent posts go on until some did."""
    rng = np.random.default_rng(7)
    names = [f.name for f in GUARDED_FEATURES]
    before = guarded.metrics()
    accepted: list[dict[str, object]] = []
    statuses: list[int] = []
    for _ in range(30):
        batches = [make_rows(rng, 2000, GUARDED_FEATURES, shift=0.2) for _ in range(16)]
        jobs = [[(columns_body(rows, names), JSON)] for rows in batches]
        replies = asyncio.run(
            post_concurrently(guarded.url + "/v1/streams/flood/rows", jobs, TOKEN)
        )
        for rows, (reply,) in zip(batches, replies, strict=True):
            statuses.append(reply.status)
            if reply.status == 200:
                assert reply.json() == {"rows": len(rows)}
                accepted += rows
            else:
                assert reply.status == 503, reply.body
                assert int(reply.headers["Retry-After"]) >= 1
                assert "queue" in reply.json()["error"]
        if 503 in statuses and 200 in statuses:
            break
    assert 503 in statuses and 200 in statuses, statuses
    samples = wait_evaluated(guarded, "flood", "x", len(accepted) + rows_total(before, "flood"))
    assert rows_total(samples, "flood") - rows_total(before, "flood") == len(accepted)
    codes_before, codes_after = requests_by_code(before), requests_by_code(samples)
    for code in ("200", "503"):
        sent = statuses.count(int(code))
        assert codes_after.get(code, 0) - codes_before.get(code, 0) == sent, code
    assert sample(samples, "driftmon_ingest_queue_rows") == 0
    assert sample(samples, "driftmon_ingest_queue_capacity_rows") == 1
    # Only the accepted rows are in the window; divergences in bits (log_base: 2).
    assert rows_total(before, "flood") == 0
    for feature in GUARDED_FEATURES:
        reference = naive_counts([r.get(feature.name, ABSENT) for r in API_REFERENCE], feature)
        live = naive_counts([r.get(feature.name, ABSENT) for r in accepted], feature)
        assert guarded.monitor("flood", feature.name)["live_counts"] == live.tolist()
        assert_matches_scipy(samples, "flood", feature, reference, live, base="2")
