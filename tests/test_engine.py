"""The engine against slow, obvious recomputations (docs/, docs/durability.md).

The contract suite (in the spirit of river's ``check_estimator``) runs one
scenario over every window kind and every input format: rows go in as a
user would send them (JSON rows, a ``columns`` body, NDJSON through
``parse_body``; CSV, NDJSON and JSON-array files through ``read_table``), and
after every batch the live counts of each monitor must equal the naive
histogram of exactly the rows inside the window, and every divergence of the
``Evaluation`` must equal ``tests/naive.py``'s on (reference counts, live
counts). Hypothesis then drives random times and batches through the same
checks, and the warmup, reach, alert, reload and state-export behaviours get
their own tests.

The naive side never asks the engine how to bin: layouts (uniform, edges,
quantile edges, top-k categories) and the type rules of docs/configuration.md are recomputed here.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import naive
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from naive import METRICS, divergences_one, histogram_edges, histogram_uniform, wasserstein_one

from driftmon.alerting import AlertState
from driftmon.config import Config, parse_config, parse_duration
from driftmon.engine import Engine, UnknownStreamError
from driftmon.evaluation import ALL_METRICS, Evaluation
from driftmon.reference import Reference, ReferenceError, build_reference
from driftmon.sources import Batch, parse_body, read_table

# --- configs -------------------------------------------------------------------

UNIFORM = {
    "name": "u",
    "type": "numeric",
    "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5},
}
EDGES = {"name": "e", "type": "numeric", "bins": {"kind": "edges", "edges": [-1, 0, 0.5, 2, 8]}}
QUANTILE = {"name": "q", "type": "numeric", "bins": {"kind": "quantile", "count": 4}}
CATEGORIES = {"name": "c", "type": "categorical", "categories": ["a", "b", "3"]}
TOP_K = {"name": "t", "type": "categorical", "top_k": 2}
ALL_FEATURES = (UNIFORM, EDGES, QUANTILE, CATEGORIES, TOP_K)

PANES = {"length": "60s", "panes": 6}  # 10 s panes
SAMPLES = {"samples": 50}
WINDOWS = {"panes": PANES, "samples": SAMPLES}


def stream_doc(
    name: str = "s",
    *,
    features: Sequence[Mapping[str, Any]] = ALL_FEATURES,
    window: Mapping[str, Any] = PANES,
    reference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``streams:`` entry; the reference spec defaults to a warmup nobody reaches."""
    return {
        "name": name,
        "reference": dict(reference or {"warmup": 1_000_000}),
        "window": dict(window),
        "features": [dict(f) for f in features],
    }


def make_config(
    streams: Sequence[Mapping[str, Any]],
    alerts: Sequence[Mapping[str, Any]] = (),
    *,
    engine: Mapping[str, Any] | None = None,
    base_dir: Path = Path("."),
) -> Config:
    """A validated config from plain dictionaries (the YAML document's shape)."""
    doc: dict[str, Any] = {"streams": list(streams)}
    if alerts:
        doc["alerts"] = list(alerts)
    if engine is not None:
        doc["engine"] = dict(engine)
    return parse_config(doc, base_dir=base_dir)


# --- naive binning (docs/configuration.md#bins), one value at a time -----------------------------

Layout = tuple[Any, ...]  # ("uniform", lo, hi, count) | ("edges", edges) | ("categorical", names)


def naive_quantile_edges(values: Sequence[object], count: int) -> list[float]:
    """Quantile bins: the reference's quantiles 0, 1/count, ..., 1, duplicates removed,
    the last edge just above the maximum."""
    finite = [
        float(v)
        for v in values
        if type(v) in (int, float) and math.isfinite(float(v))  # type: ignore[arg-type]
    ]
    return naive.quantile_edges(finite, count)


def category_text(value: object) -> str | None:
    """Categorical: strings as they are, ints and booleans by their canonical text; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return None


def naive_top_k(values: Sequence[object], k: int) -> list[str]:
    """The k most frequent categories, ties by text (non-empty strings only)."""
    counts = Counter(t for t in map(category_text, values) if t)
    return [t for t, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]]


def naive_layout(feature: Mapping[str, Any], reference_values: Sequence[object]) -> Layout:
    """The layout the bin rules give ``feature``, learning from ``reference_values`` if needed."""
    if feature["type"] == "categorical":
        if "categories" in feature:
            return ("categorical", list(feature["categories"]))
        return ("categorical", naive_top_k(reference_values, feature["top_k"]))
    bins = feature["bins"]
    if bins["kind"] == "uniform":
        return ("uniform", float(bins["lo"]), float(bins["hi"]), int(bins["count"]))
    if bins["kind"] == "edges":
        return ("edges", [float(e) for e in bins["edges"]])
    return ("edges", naive_quantile_edges(reference_values, bins["count"]))


def layout_edges(layout: Layout) -> list[float]:
    """The regular bins' edges of a numeric layout."""
    if layout[0] == "uniform":
        _, lo, hi, count = layout
        return [lo + i * (hi - lo) / count for i in range(count)] + [hi]
    return list(layout[1])


def naive_counts(layout: Layout, values: Sequence[object]) -> np.ndarray:
    """Counts of ``values`` over ``layout`` by the bin rules (None = absent or null)."""
    if layout[0] == "categorical":
        names = list(layout[1])
        out = np.zeros(len(names) + 3)
        for value in values:
            text = category_text(value)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out[len(names) + 1] += 1
            elif text is None:
                out[len(names) + 2] += 1
            else:
                out[names.index(text) if text in names else len(names)] += 1
        return out
    n_regular = layout[3] if layout[0] == "uniform" else len(layout[1]) - 1
    out = np.zeros(n_regular + 4)
    numbers: list[float] = []
    for value in values:
        if value is None:
            out[n_regular + 2] += 1
        elif isinstance(value, bool) or not isinstance(value, int | float):
            out[n_regular + 3] += 1
        else:
            numbers.append(float(value))
    if layout[0] == "uniform":
        return out + histogram_uniform(numbers, layout[1], layout[2], layout[3])
    return out + histogram_edges(numbers, layout[1])


# --- comparing an evaluation with tests/naive.py --------------------------------------


def assert_close(got: float, want: float, what: str) -> None:
    """Equal to 1e-12 relative (1e-15 absolute near 0); NaN and ±Inf exactly."""
    if math.isnan(want) or math.isinf(want):
        assert got == want or (math.isnan(got) and math.isnan(want)), f"{what}: {got} != {want}"
    else:
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15), f"{what}: {got} != {want}"


def assert_monitor_matches(
    evaluation: Evaluation,
    index: int,
    reference: np.ndarray,
    live: np.ndarray,
    *,
    smoothing: float,
    edges: Sequence[float] | None,
    base: str = "e",
) -> None:
    """Every value of monitor ``index`` equals naive's on (reference, live) counts."""
    what = evaluation.monitors[index].feature
    expected = divergences_one(reference, live, smoothing, base)
    for name in METRICS:
        got = float(evaluation.values[name][index])
        if name == "hellinger" and math.isfinite(expected[name]):
            # naive's 1 - Σ sqrt(p q) has an absolute rounding floor of a few
            # ulps of 1 in the square (see tests/test_divergence.py).
            floor = 2.3e-16 * (4.0 + math.sqrt(reference.size))
            assert abs(got**2 - expected[name] ** 2) <= 1e-12 * expected[name] ** 2 + floor
        elif name == "p_value" and math.isfinite(expected[name]):
            # scipy's chi2.sf and driftmon's agree to 1e-12 relative on this
            # range; tiny p-values are compared relative, large ones absolute.
            assert math.isclose(got, expected[name], rel_tol=1e-12, abs_tol=1e-13), (
                f"{what}.p_value: {got} != {expected[name]}"
            )
        else:
            assert_close(got, expected[name], f"{what}.{name}")
    wasserstein = float(evaluation.values["wasserstein"][index])
    if edges is None:
        assert math.isnan(wasserstein), f"{what}: categorical monitors have no wasserstein"
    else:
        value_bins = len(edges) + 1
        want = wasserstein_one(reference[:value_bins], live[:value_bins], edges)
        assert_close(wasserstein, want, f"{what}.wasserstein")
    assert evaluation.window_samples[index] == live.sum()
    assert evaluation.reference_samples[index] == reference.sum()


class NaiveStream:
    """What one stream's window should hold: the reference rows and every row sent."""

    def __init__(
        self,
        features: Sequence[Mapping[str, Any]],
        reference_rows: Sequence[Mapping[str, object]],
        window: Mapping[str, Any],
    ) -> None:
        self.features = list(features)
        self.layouts = {
            f["name"]: naive_layout(f, [row.get(f["name"]) for row in reference_rows])
            for f in features
        }
        self.reference_rows = list(reference_rows)
        self.window = window
        self.sent: list[tuple[float, Mapping[str, object]]] = []

    def send(self, rows: Sequence[Mapping[str, object]], now: float) -> None:
        """Record rows sent at ``now``."""
        self.sent.extend((now, row) for row in rows)

    def window_rows(self, now: float) -> list[Mapping[str, object]]:
        """The rows inside the window when evaluated at ``now`` (times never go back)."""
        if "samples" in self.window:
            return [row for _, row in self.sent[-self.window["samples"] :]]
        width = parse_duration(self.window["length"]) / self.window["panes"]
        newest = math.floor(now / width)
        panes = self.window["panes"]
        return [row for t, row in self.sent if newest - panes < math.floor(t / width) <= newest]

    def counts(self, feature: str, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Naive counts of ``feature`` over the rows that reach it."""
        return naive_counts(self.layouts[feature], [row.get(feature) for row in rows])

    def check(self, engine: Engine, evaluation: Evaluation, stream: str = "s") -> None:
        """Reference and live counts, samples and every divergence of each monitor."""
        inside = self.window_rows(evaluation.time)
        for feature in self.features:
            name = feature["name"]
            monitor = engine.monitor(stream, name)
            reference = self.counts(name, self.reference_rows)
            live = self.counts(name, inside)
            np.testing.assert_array_equal(engine.reference[monitor.bins], reference, err_msg=name)
            np.testing.assert_array_equal(engine.live[monitor.bins], live, err_msg=name)
            layout = self.layouts[name]
            edges = None if layout[0] == "categorical" else layout_edges(layout)
            assert_monitor_matches(
                evaluation,
                monitor.index,
                reference,
                live,
                smoothing=float(feature.get("smoothing", 0.5)),
                edges=edges,
            )


# --- input formats ---------------------------------------------------------------------

BODY_FORMATS = ("json-rows", "json-columns", "ndjson-body")
FILE_FORMATS = ("csv-file", "ndjson-file", "json-file")
FORMATS = BODY_FORMATS + FILE_FORMATS


def csv_cell(value: object) -> str:
    """The CSV text a producer would write for a value (empty for missing)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 'nan', 'inf' and '-inf' parse back as floats
    assert isinstance(value, int | str), value
    return str(value)


def to_batch(
    fmt: str, rows: Sequence[Mapping[str, object]], fields: Sequence[str], numeric: Sequence[str],
    folder: Path,
) -> Batch:  # fmt: skip
    """Send ``rows`` through one input format, as the daemon or a replay would read them."""
    if fmt == "json-rows":
        return parse_body(json.dumps(rows).encode(), "application/json", fields)
    if fmt == "json-columns":
        columns = {name: [row.get(name) for row in rows] for name in fields}
        return parse_body(json.dumps({"columns": columns}).encode(), "application/json", fields)
    ndjson = "".join(json.dumps(row) + "\n" for row in rows)
    if fmt == "ndjson-body":
        return parse_body(ndjson.encode(), "application/x-ndjson", fields)
    folder.mkdir(exist_ok=True)
    if fmt == "csv-file":
        path = folder / "rows.csv"
        lines = [",".join(fields)]
        lines += [",".join(csv_cell(row.get(name)) for name in fields) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "ndjson-file":
        path = folder / "rows.ndjson"
        path.write_text(ndjson)
    else:
        path = folder / "rows.json"
        path.write_text(json.dumps(rows))
    return read_table(path, fields, numeric_fields=numeric)


def random_rows(
    rng: np.random.Generator, n: int, *, shift: float, containers: bool
) -> list[dict[str, object]]:
    """Rows with values of every bin kind; ``containers`` adds lists and objects (JSON only).

    A key left out of a row is an absent field (missing); every value here
    reads back the same from every format that can carry it.
    """
    numeric_specials: list[object] = [None, math.nan, math.inf, -math.inf, "oops", True, 3, -1]
    category_pool: list[object] = ["a", "b", "3", 3, "zz", "x", "y", True, None]
    if containers:
        numeric_specials += [[1.0], {"v": 1}]
        category_pool += [[1], 1.5]
    rows = []
    for _ in range(n):
        row: dict[str, object] = {}
        for name in ("u", "e", "q"):
            draw = rng.random()
            if draw < 0.05:
                continue  # absent field
            if draw < 0.2:
                row[name] = numeric_specials[rng.integers(len(numeric_specials))]
            elif draw < 0.25:
                row[name] = float(rng.choice([0.0, 0.5, 2.0, 8.0, 10.0, -1.0]))  # on an edge
            else:
                row[name] = round(float(rng.normal(3.0 + shift, 3.0)), 3)
        for name in ("c", "t"):
            draw = rng.random()
            if draw < 0.05:
                continue
            weights = np.ones(len(category_pool))
            weights[0] += 4.0 + 6.0 * shift  # "a" grows under drift
            value = category_pool[rng.choice(len(category_pool), p=weights / weights.sum())]
            row[name] = value
        rows.append(row)
    return rows


def reference_of(stream: Any, rows: Sequence[Mapping[str, object]]) -> Reference:
    """The stream's reference built from Python rows (what a reference file would hold)."""
    columns = {f.name: [row.get(f.name) for row in rows] for f in stream.features}
    return build_reference(stream, len(rows), columns)


# --- the contract suite ------------------------------------------------------------------

BATCH_TIMES = (1.0, 12.0, 14.5, 33.0, 61.0, 64.0, 95.0, 99.0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("window_kind", sorted(WINDOWS))
def test_live_counts_and_divergences_equal_naive_for_every_window_and_format(
    window_kind: str, fmt: str, tmp_path: Path
) -> None:
    window = WINDOWS[window_kind]
    rng = np.random.default_rng([FORMATS.index(fmt), window_kind == "panes"])
    config = make_config([stream_doc(window=window)])
    stream = config.stream("s")
    containers = fmt not in ("csv-file",)
    reference_rows = random_rows(rng, 300, shift=0.0, containers=containers)
    engine = Engine(config, now=0.0, references={"s": reference_of(stream, reference_rows)})
    naive = NaiveStream(ALL_FEATURES, reference_rows, window)
    fields = [f["name"] for f in ALL_FEATURES]
    numeric = [f["name"] for f in ALL_FEATURES if f["type"] == "numeric"]
    for step, now in enumerate(BATCH_TIMES):
        rows = random_rows(rng, int(rng.integers(1, 40)), shift=step / 3, containers=containers)
        batch = to_batch(fmt, rows, fields, numeric, tmp_path / str(step))
        assert batch.n_rows == len(rows)
        engine.ingest("s", batch.n_rows, batch.columns, now)
        naive.send(rows, now)
        naive.check(engine, engine.evaluate(now + 0.5))
    # Long after the last row: a time window has emptied (every divergence
    # absent), a sample window still holds its last rows.
    late = engine.evaluate(10_000.0)
    naive.check(engine, late)
    if window_kind == "panes":
        assert not late.window_samples.any()
        for name in ALL_METRICS:
            assert np.isnan(late.values[name]).all(), name
    else:
        assert (late.window_samples == SAMPLES["samples"]).all()


# --- hypothesis: random times and batches -----------------------------------------------

NUMERIC_VALUES = st.one_of(
    st.floats(-2.0, 12.0, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 10.0, 2.0]),
)
CATEGORY_VALUES = st.sampled_from(["a", "b", "3", 3, "zz", None, True, 1.5])


@dataclass(frozen=True)
class Step:
    """One step of a timeline: rows sent ``dt`` seconds after the previous step, or an evaluation.

    ``c`` is None when the rows do not reach feature ``c`` (their columns
    mapping has no ``c``); ``as_array`` sends ``u`` as a float64 array (the
    kernels' fast path) rather than a list.
    """

    dt: float
    u: list[float] | None = None
    c: list[object] | None = None
    as_array: bool = True


@st.composite
def timelines(draw: st.DrawFn) -> list[Step]:
    """Row batches and evaluations in time order, gaps of every size, ending on an evaluation."""
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 14))):
        dt = draw(st.sampled_from([0.0, 0.0, 0.3, 1.0, 4.0, 9.99, 10.0, 25.0, 61.0, 500.0]))
        if draw(st.booleans()):
            n = draw(st.integers(0, 12))
            u = draw(st.lists(NUMERIC_VALUES, min_size=n, max_size=n))
            c = draw(st.one_of(st.none(), st.lists(CATEGORY_VALUES, min_size=n, max_size=n)))
            steps.append(Step(dt, u, c, draw(st.booleans())))
        else:
            steps.append(Step(dt))
    steps.append(Step(draw(st.sampled_from([0.0, 5.0, 30.0]))))
    return steps


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=timelines(),
    window=st.one_of(
        st.builds(lambda n: {"length": f"{10 * n}s", "panes": n}, st.integers(1, 6)),
        st.builds(lambda n: {"samples": n}, st.integers(1, 30)),
    ),
    start=st.floats(0.0, 1e6),
)
def test_window_holds_exactly_the_rows_inside_it_at_every_evaluation(
    steps: list[Step], window: dict[str, Any], start: float
) -> None:
    """Pane expiry and sample eviction never lose nor double-count a row."""
    features = (UNIFORM, CATEGORIES)
    config = make_config([stream_doc(features=features, window=window)])
    stream = config.stream("s")
    reference_rows = [{"u": 1.0, "c": "a"}, {"u": 7.5, "c": "b"}, {"u": None, "c": "zz"}]
    engine = Engine(config, now=start, references={"s": reference_of(stream, reference_rows)})
    layouts = {"u": naive_layout(UNIFORM, []), "c": naive_layout(CATEGORIES, [])}
    sent: list[tuple[float, dict[str, object]]] = []  # (time, the features the row reached)
    now = start
    for step in steps:
        now += step.dt
        if step.u is not None:
            columns: dict[str, Any] = {"u": np.array(step.u) if step.as_array else list(step.u)}
            if step.c is not None:
                columns["c"] = step.c
            engine.ingest("s", len(step.u), columns, now)
            for i, u in enumerate(step.u):
                sent.append((now, {"u": u} if step.c is None else {"u": u, "c": step.c[i]}))
            continue
        evaluation = engine.evaluate(now)
        if "samples" in window:
            inside = sent[-window["samples"] :]
        else:
            newest = math.floor(now / 10.0)
            inside = [
                row
                for row in sent
                if newest - window["panes"] < math.floor(row[0] / 10.0) <= newest
            ]
        for feature in ("u", "c"):
            monitor = engine.monitor("s", feature)
            reached = [row[feature] for _, row in inside if feature in row]
            expected = naive_counts(layouts[feature], reached)
            np.testing.assert_array_equal(engine.live[monitor.bins], expected)
            assert evaluation.window_samples[monitor.index] == len(reached)
        assert engine.live.min() >= 0.0


WARMUP_FEATURES = (UNIFORM, QUANTILE, TOP_K)
Q_VALUES = st.one_of(st.sampled_from([0.5, 1.5, 2.0, 7.25, -3.0, None, math.inf]), st.floats(0, 5))
T_VALUES = st.sampled_from(["a", "b", "c", 1, True, None, 2.5])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_warmup=st.integers(2, 30),
    sizes=st.lists(st.integers(0, 15), min_size=1, max_size=8),
    data=st.data(),
)
def test_warmup_reference_is_the_histogram_of_exactly_the_first_n_rows(
    n_warmup: int, sizes: list[int], data: st.DataObject
) -> None:
    """Batches straddling the N-th row included; quantile and top_k learned from those rows."""
    total = sum(sizes)
    rows = [
        {
            "u": data.draw(Q_VALUES),
            "q": data.draw(Q_VALUES),
            "t": data.draw(T_VALUES),
        }
        for _ in range(total)
    ]
    first = rows[:n_warmup]
    q_numbers = {r["q"] for r in first if isinstance(r["q"], float) and math.isfinite(r["q"])}
    # A warmup that cannot define its layouts starts over (tested on its own below).
    assume(len(q_numbers) >= 2 and any(category_text(r["t"]) for r in first))
    config = make_config(
        [stream_doc(features=WARMUP_FEATURES, window={"samples": 10_000},
                    reference={"warmup": n_warmup})]
    )  # fmt: skip
    engine = Engine(config, now=0.0)
    sent = 0
    for size in sizes:
        chunk = rows[sent : sent + size]
        columns = {name: [row[name] for row in chunk] for name in ("u", "q", "t")}
        engine.ingest("s", size, columns, float(sent))
        sent += size
    if total < n_warmup:
        assert engine.warmup_progress("s") == (total, n_warmup)
        assert engine.monitors == ()
        return
    assert engine.warmup_progress("s") is None
    naive = NaiveStream(WARMUP_FEATURES, first, {"samples": 10_000})
    naive.send(rows[n_warmup:], 0.0)
    naive.check(engine, engine.evaluate(float(total)))
    quantile = engine.monitor("s", "q").binner
    np.testing.assert_array_equal(quantile.edges, naive.layouts["q"][1])  # type: ignore[union-attr]


def test_a_batch_straddling_the_warmup_boundary_splits_between_reference_and_window() -> None:
    config = make_config([stream_doc(features=(UNIFORM,), window=PANES, reference={"warmup": 3})])
    engine = Engine(config, now=0.0)
    engine.ingest("s", 2, {"u": [1.0, 1.5]}, 1.0)
    assert engine.warmup_progress("s") == (2, 3)
    assert engine.evaluate(1.0).monitors == ()
    engine.ingest("s", 4, {"u": np.array([3.0, 9.0, 9.5, math.nan])}, 2.0)
    monitor = engine.monitor("s", "u")
    # The 3rd row (3.0) ends the warmup; the next three go live.
    np.testing.assert_array_equal(engine.reference[monitor.bins], [0, 2, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(engine.live[monitor.bins], [0, 0, 0, 0, 0, 2, 0, 1, 0])
    assert engine.stream_rows("s") == 6


def test_a_warmup_that_cannot_learn_its_layout_starts_over_with_the_next_rows() -> None:
    config = make_config(
        [stream_doc(features=(QUANTILE,), window=SAMPLES, reference={"warmup": 3})]
    )
    engine = Engine(config, now=0.0)
    engine.ingest("s", 3, {"q": [2.0, 2.0, None]}, 1.0)  # one distinct value: no quantiles
    assert engine.warmup_progress("s") == (0, 3)
    engine.ingest("s", 4, {"q": [1.0, 2.0, 4.0, 8.0]}, 2.0)
    naive = NaiveStream((QUANTILE,), [{"q": 1.0}, {"q": 2.0}, {"q": 4.0}], SAMPLES)
    naive.send([{"q": 8.0}], 2.0)
    naive.check(engine, engine.evaluate(3.0))


# --- edge cases of the numerics through the engine ---------------------------------------


def test_an_empty_window_has_absent_divergences_and_zero_samples() -> None:
    config = make_config([stream_doc("a", features=(UNIFORM, CATEGORIES)), stream_doc("b")])
    rows = [{"u": 1.0, "c": "a"}, {"u": 5.0, "c": "b"}]
    engine = Engine(
        config,
        now=0.0,
        references={
            "a": reference_of(config.stream("a"), rows),
            "b": reference_of(config.stream("b"), [{"u": 1.0, "q": 1.0, "t": "x"}, {"q": 2.0}]),
        },
    )
    engine.ingest("a", 2, {"u": [1.0, 2.0], "c": ["a", "a"]}, 1.0)
    evaluation = engine.evaluate(1.0)
    for monitor in evaluation.monitors:
        empty = monitor.stream == "b"
        assert (evaluation.window_samples[monitor.index] == 0) == empty
        for name in ALL_METRICS:
            value = float(evaluation.values[name][monitor.index])
            absent = empty or (name == "wasserstein" and monitor.type == "categorical")
            assert math.isnan(value) == absent, (monitor.feature, name, value)


def test_kl_is_reported_as_plus_infinity_without_smoothing() -> None:
    feature = {**UNIFORM, "smoothing": 0}
    config = make_config([stream_doc(features=(feature,))])
    reference = reference_of(config.stream("s"), [{"u": 1.0}, {"u": 3.0}, {"u": 3.5}])
    engine = Engine(config, now=0.0, references={"s": reference})
    engine.ingest("s", 3, {"u": [1.0, 1.2, 1.9]}, 0.0)  # bin [2, 4) is empty live
    evaluation = engine.evaluate(0.0)
    values = {name: float(evaluation.values[name][0]) for name in ALL_METRICS}
    assert values["kl"] == math.inf
    assert values["psi"] == math.inf and values["cross_entropy"] == math.inf
    assert math.isfinite(values["kl_reverse"]) and 0 < values["js"] < math.log(2)
    naive = NaiveStream((feature,), [{"u": 1.0}, {"u": 3.0}, {"u": 3.5}], PANES)
    naive.send([{"u": 1.0}, {"u": 1.2}, {"u": 1.9}], 0.0)
    naive.check(engine, evaluation)


def test_log_base_2_reports_bits() -> None:
    config = make_config([stream_doc(features=(UNIFORM, CATEGORIES))], engine={"log_base": 2})
    rows = [{"u": float(v), "c": c} for v, c in zip(range(10), "aabb3aabzz", strict=True)]
    engine = Engine(config, now=0.0, references={"s": reference_of(config.stream("s"), rows)})
    live = [{"u": 9.0, "c": "a"}, {"u": 2.0, "c": "b"}, {"u": 2.5, "c": "a"}]
    engine.ingest("s", 3, {"u": [r["u"] for r in live], "c": [r["c"] for r in live]}, 0.0)
    evaluation = engine.evaluate(0.0)
    for feature in (UNIFORM, CATEGORIES):
        layout = naive_layout(feature, [])
        name = feature["name"]
        assert_monitor_matches(
            evaluation,
            engine.monitor("s", name).index,
            naive_counts(layout, [r.get(name) for r in rows]),
            naive_counts(layout, [r[name] for r in live]),
            smoothing=0.5,
            edges=None if layout[0] == "categorical" else layout_edges(layout),
            base="2",
        )


def test_an_evaluation_is_immutable_and_later_rows_do_not_change_it() -> None:
    config = make_config([stream_doc(features=(UNIFORM,))])
    engine = Engine(
        config, now=0.0, references={"s": reference_of(config.stream("s"), [{"u": 1.0}])}
    )
    engine.ingest("s", 1, {"u": [1.0]}, 0.0)
    first = engine.evaluate(0.0)
    kept = {name: first.values[name].copy() for name in ALL_METRICS}
    engine.ingest("s", 5, {"u": [9.0] * 5}, 1.0)
    engine.evaluate(1.0)
    for name in ALL_METRICS:
        np.testing.assert_array_equal(first.values[name], kept[name])
        with pytest.raises(ValueError):
            first.values[name][0] = 1.0
    assert first.window_samples[0] == 1
    with pytest.raises(ValueError):
        first.window_samples[0] = 2.0


def test_unknown_streams_and_ragged_columns_are_refused() -> None:
    config = make_config([stream_doc(features=(UNIFORM, CATEGORIES))])
    engine = Engine(config, now=0.0, references={"s": reference_of(config.stream("s"), [{"u": 1}])})
    with pytest.raises(UnknownStreamError):
        engine.ingest("nope", 1, {"u": [1.0]}, 0.0)
    with pytest.raises(ValueError, match="'c' has 1 values, expected 2"):
        engine.ingest("s", 2, {"u": [1.0, 2.0], "c": ["a"]}, 0.0)
    assert not engine.live.any()


# --- rows that reach only some features ----------------------------------------------------


@pytest.mark.parametrize("window_kind", sorted(WINDOWS))
def test_rows_that_do_not_reach_a_feature_leave_its_counts_untouched(window_kind: str) -> None:
    window = WINDOWS[window_kind]
    config = make_config([stream_doc(features=(UNIFORM, CATEGORIES), window=window)])
    rows = [{"u": 1.0, "c": "a"}, {"u": 4.0, "c": "b"}]
    engine = Engine(config, now=0.0, references={"s": reference_of(config.stream("s"), rows)})
    u, c = engine.monitor("s", "u"), engine.monitor("s", "c")
    engine.ingest("s", 3, {"u": [1.0, 2.0, 3.0], "c": ["a", None, "b"]}, 1.0)
    c_before = engine.live[c.bins].copy()
    engine.ingest("s", 4, {"u": np.array([5.0, 6.0, 7.0, 8.0])}, 2.0)  # a columns mapping without c
    evaluation = engine.evaluate(2.0)
    np.testing.assert_array_equal(engine.live[c.bins], c_before)
    assert c_before[c.binner.missing] == 1  # a None that reached c is missing, not absent
    assert evaluation.window_samples[u.index] == 7
    assert evaluation.window_samples[c.index] == 3
    assert engine.stream_rows("s") == 7


def test_in_a_sample_window_rows_that_skip_a_feature_still_take_their_slot() -> None:
    """{samples: N} is the stream's last N rows: a row reaching only ``u`` evicts a row of ``c``."""
    config = make_config([stream_doc(features=(UNIFORM, CATEGORIES), window={"samples": 3})])
    engine = Engine(config, now=0.0, references={"s": reference_of(config.stream("s"), [{"u": 1}])})
    c = engine.monitor("s", "c")
    engine.ingest("s", 2, {"u": [1.0, 2.0], "c": ["a", "b"]}, 0.0)
    engine.ingest("s", 2, {"u": [3.0, 4.0]}, 0.0)
    np.testing.assert_array_equal(engine.live[c.bins], [0, 1, 0, 0, 0, 0])  # "a" was evicted


def test_warmup_rows_that_do_not_reach_a_feature_are_not_counted_as_missing() -> None:
    config = make_config(
        [stream_doc(features=(UNIFORM, CATEGORIES), window=PANES, reference={"warmup": 4})]
    )
    engine = Engine(config, now=0.0)
    engine.ingest("s", 2, {"u": [1.0, 2.0]}, 0.0)  # e.g. CloudEvents requests: inputs only
    engine.ingest("s", 2, {"u": [3.0, None], "c": ["a", None]}, 0.0)
    u, c = engine.monitor("s", "u"), engine.monitor("s", "c")
    np.testing.assert_array_equal(engine.reference[u.bins], [0, 1, 2, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(engine.reference[c.bins], [1, 0, 0, 0, 1, 0])
    evaluation = engine.evaluate(0.0)
    assert list(evaluation.reference_samples) == [4, 2]


# --- alerts through the engine -------------------------------------------------------------

JS_RULE = {
    "name": "js-high",
    "match": {"stream": "s", "feature": "u"},
    "metric": "js",
    "threshold": 0.2,
    "for": "20s",
    "min_samples": 30,
}


def test_a_rule_fires_at_the_right_evaluation_and_min_samples_holds_it() -> None:
    config = make_config([stream_doc(features=(UNIFORM,), window={"samples": 100})], [JS_RULE])
    reference_rows = [{"u": 1.0}] * 50 + [{"u": 3.0}] * 50  # all in bins [0, 2) and [2, 4)
    engine = Engine(
        config, now=0.0, references={"s": reference_of(config.stream("s"), reference_rows)}
    )
    naive = NaiveStream((UNIFORM,), reference_rows, {"samples": 100})
    layout = naive.layouts["u"]
    reference = naive_counts(layout, [r["u"] for r in reference_rows])

    # Drifted rows (all in [8, 10)) arrive 10 at a time, one evaluation every 10 s.
    # Walk the docs/divergences.md state machine by hand over naive js: over threshold with at
    # least min_samples starts pending; pending for >= 20 s fires.
    state, active_at = "inactive", math.nan
    timeline = []
    for step in range(8):
        now = 10.0 * step
        engine.ingest("s", 10, {"u": [9.0] * 10}, now)
        naive.send([{"u": 9.0}] * 10, now)
        evaluation = engine.evaluate(now)
        live = naive_counts(layout, [r["u"] for r in naive.window_rows(now)])
        js = divergences_one(reference, live)["js"]
        assert js > JS_RULE["threshold"]  # over from the first batch on: only min_samples holds it
        if live.sum() >= JS_RULE["min_samples"]:
            if state == "inactive":
                state, active_at = "pending", now
            if now - active_at >= 20.0:
                state = "firing"
        expected = {"inactive": 0, "pending": 1, "firing": 2}[state]
        assert int(evaluation.alerts.state[0]) == expected, (now, state)
        assert evaluation.firing_rules(0) == (["js-high"] if state == "firing" else [])
        timeline.append(state)
    assert timeline[:5] == ["inactive", "inactive", "pending", "pending", "firing"]

    # Back to the reference's distribution: once js is back under the threshold
    # (clear_below defaults to it) the alert resolves.
    for step in range(8, 20):
        now = 10.0 * step
        engine.ingest("s", 10, {"u": [1.0] * 5 + [3.0] * 5}, now)
        evaluation = engine.evaluate(now)
        js = float(evaluation.values["js"][0])
        if js <= JS_RULE["threshold"]:
            assert evaluation.alerts.state[0] == AlertState.INACTIVE
            break
        assert evaluation.alerts.state[0] == AlertState.FIRING
    else:
        pytest.fail("js never came back under the threshold")


def test_rules_pair_with_every_matching_monitor_but_wasserstein_skips_categorical_ones() -> None:
    rules = [
        {"name": "any-psi", "metric": "psi", "threshold": 0.1},
        {"name": "w", "metric": "wasserstein", "threshold": 0.5, "match": {"feature": "*"}},
    ]
    config = make_config([stream_doc(features=(UNIFORM, CATEGORIES))], rules)
    engine = Engine(config, now=0.0, references={"s": reference_of(config.stream("s"), [{"u": 1}])})
    pairs = sorted((p.rule.name, engine.monitors[p.monitor].feature) for p in engine.alert_pairs)
    assert pairs == [("any-psi", "c"), ("any-psi", "u"), ("w", "u")]


# --- reload: successor + take_over, export_state, adopt ----------------------------------


def _reload(engine: Engine, config: Config, now: float) -> Engine:
    """What the daemon's reload does: a successor engine, then the state moved across."""
    new = engine.successor(config, now)
    new.take_over(engine, now)
    return new


def _reload_fixture(tmp_path: Path) -> tuple[Engine, dict[str, Any]]:
    """An engine with stream s (file reference; u, c), stream w (warmup) and a firing rule."""
    reference_file = tmp_path / "reference.csv"
    reference_file.write_text("u,c\n1,a\n3,b\n1,a\n3,b\n")
    docs = {
        "s": stream_doc(
            "s", features=(UNIFORM, CATEGORIES), window=PANES,
            reference={"file": str(reference_file)},
        ),
        "w": stream_doc("w", features=(UNIFORM,), window=SAMPLES, reference={"warmup": 2}),
        "rules": [
            {"name": "psi-high", "metric": "psi", "threshold": 0.5, "match": {"stream": "s"}}
        ],
    }  # fmt: skip
    engine = Engine(make_config([docs["s"], docs["w"]], docs["rules"]), now=0.0)
    engine.ingest("s", 4, {"u": [9.0, 9.0, 9.0, 1.0], "c": ["b", "b", "b", "zz"]}, 5.0)
    engine.ingest("w", 3, {"u": [1.0, 2.0, 7.0]}, 5.0)
    evaluation = engine.evaluate(6.0)
    assert evaluation.alerts.state.tolist() == [AlertState.FIRING, AlertState.FIRING]
    return engine, docs


def test_reload_keeps_unchanged_monitors_and_resets_changed_ones(tmp_path: Path) -> None:
    engine, docs = _reload_fixture(tmp_path)
    before = {(m.stream, m.feature): engine.live[m.bins].copy() for m in engine.monitors}
    new_uniform = {**UNIFORM, "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 4}}
    s_changed = {**docs["s"], "features": [new_uniform, CATEGORIES]}
    rules = docs["rules"] + [{"name": "js-new", "metric": "js", "threshold": 0.01}]
    new = _reload(engine, make_config([s_changed], rules), now=7.0)

    assert new.stream_names() == ["s"]  # w was removed
    with pytest.raises(UnknownStreamError):
        new.ingest("w", 1, {"u": [1.0]}, 7.0)
    c, u = new.monitor("s", "c"), new.monitor("s", "u")
    np.testing.assert_array_equal(new.live[c.bins], before[("s", "c")])
    assert u.n_bins == 8 and not new.live[u.bins].any()  # new bins: starts empty

    evaluation = new.evaluate(8.0)
    states = {
        (p.rule.name, new.monitors[p.monitor].feature): AlertState(int(s))
        for p, s in zip(evaluation.alert_pairs, evaluation.alerts.state, strict=True)
    }
    assert states == {
        ("psi-high", "c"): AlertState.FIRING,  # unchanged monitor and rule: kept
        ("psi-high", "u"): AlertState.INACTIVE,  # new bins: starts fresh (docs/durability.md)
        ("js-new", "c"): AlertState.FIRING,  # new rule: starts inactive, fires at once (for 0s)
        ("js-new", "u"): AlertState.INACTIVE,  # ... but u's window is empty: held
    }
    fired_at = {
        (p.rule.name, new.monitors[p.monitor].feature): float(t)
        for p, t in zip(evaluation.alert_pairs, evaluation.alerts.fired_at, strict=True)
    }
    assert fired_at[("psi-high", "c")] == 6.0 and fired_at[("js-new", "c")] == 8.0
    # The old engine is untouched.
    assert engine.stream_names() == ["s", "w"]
    np.testing.assert_array_equal(engine.live[engine.monitor("s", "u").bins], before[("s", "u")])


def test_reload_reuses_references_instead_of_reading_files_again(tmp_path: Path) -> None:
    engine, docs = _reload_fixture(tmp_path)
    reference_before = engine.reference.copy()
    # Only smoothing and the alert rules change: no file is read again, and w
    # keeps its frozen warmup reference.
    s_smoothing = {**docs["s"], "features": [{**UNIFORM, "smoothing": 1.0}, CATEGORIES]}
    smoothing_only = make_config([s_smoothing, docs["w"]])
    s_changed = {**docs["s"], "features": [UNIFORM, {**CATEGORIES, "categories": ["a"]}]}
    feature_changed = make_config([s_changed, docs["w"]])
    (tmp_path / "reference.csv").unlink()
    new = _reload(engine, smoothing_only, now=7.0)
    np.testing.assert_array_equal(new.reference, reference_before)
    assert new.warmup_progress("w") is None
    assert new.monitor("s", "u").smoothing == 1.0
    # A changed feature needs the file again: the reload fails and nothing changes.
    with pytest.raises(ReferenceError, match="reference.csv"):
        _reload(engine, feature_changed, now=7.0)
    np.testing.assert_array_equal(engine.reference, reference_before)


def test_reload_of_a_changed_window_starts_it_empty(tmp_path: Path) -> None:
    engine, docs = _reload_fixture(tmp_path)
    longer = {**docs["s"], "window": {"length": "120s", "panes": 6}}
    new = _reload(engine, make_config([longer, docs["w"]], docs["rules"]), now=7.0)
    assert not new.live[new.monitor("s", "u").bins].any()
    np.testing.assert_array_equal(
        new.live[new.monitor("w", "u").bins], engine.live[engine.monitor("w", "u").bins]
    )


def _alert_rows(engine: Engine) -> list[tuple[object, ...]]:
    """Alert states as comparable rows (NaN times as None)."""
    return sorted(
        (key, state[1], *(None if math.isnan(t) else t for t in state[2:]))
        for key, state in engine.alert_states().items()
    )


def test_export_state_then_adopt_restores_everything_in_a_fresh_engine(tmp_path: Path) -> None:
    engine, docs = _reload_fixture(tmp_path)
    half = stream_doc("h", features=(UNIFORM, TOP_K), window=SAMPLES, reference={"warmup": 5})
    config = make_config([docs["s"], docs["w"], half], docs["rules"])
    engine = _reload(engine, config, now=7.0)
    engine.ingest("h", 3, {"u": [1.0, 2.0, 3.0], "t": ["x", "y", "x"]}, 7.0)  # mid-warmup
    engine.evaluate(8.0)
    state = engine.export_state()

    fresh = Engine(config, now=9.0)
    fresh.adopt(state, now=9.0)
    np.testing.assert_array_equal(fresh.reference, engine.reference)
    np.testing.assert_array_equal(fresh.live, engine.live)
    assert [(m.stream, m.feature, m.binner) for m in fresh.monitors] == [
        (m.stream, m.feature, m.binner) for m in engine.monitors
    ]
    assert fresh.warmup_progress("h") == engine.warmup_progress("h") == (3, 5)
    assert _alert_rows(fresh) == _alert_rows(engine)

    # From here on both engines behave alike, the warmup finishing included.
    for target in (engine, fresh):
        target.ingest("h", 3, {"u": [4.0, 5.0, 6.0], "t": ["x", "z", "z"]}, 10.0)
        target.ingest("s", 2, {"u": [2.0, 2.0], "c": ["a", "a"]}, 11.0)
    one, two = engine.evaluate(12.0), fresh.evaluate(12.0)
    for name in ALL_METRICS:
        np.testing.assert_array_equal(one.values[name], two.values[name])
    np.testing.assert_array_equal(one.alerts.state, two.alerts.state)
    assert fresh.monitor("h", "t").binner.categories == ("x", "y")  # type: ignore[union-attr]


def test_adopt_drops_panes_that_expired_meanwhile(tmp_path: Path) -> None:
    engine, docs = _reload_fixture(tmp_path)
    state = engine.export_state()
    config = make_config([docs["s"], docs["w"]], docs["rules"])
    later = Engine(config, now=100.0)
    later.adopt(state, now=100.0)  # rows were sent at 5 s; the 60 s window has passed
    assert not later.live[later.monitor("s", "u").bins].any()
    # The sample window has no clock: it keeps its rows.
    np.testing.assert_array_equal(
        later.live[later.monitor("w", "u").bins], engine.live[engine.monitor("w", "u").bins]
    )


def test_a_batch_binned_before_a_reload_is_binned_again_by_the_new_engine(
    tmp_path: Path,
) -> None:
    reference_file = tmp_path / "reference.ndjson"
    reference_file.write_text('{"u": 1.0, "c": "a"}\n{"u": 7.0, "c": "b"}\n')
    reference = {"file": str(reference_file)}
    old_config = make_config([stream_doc(features=(UNIFORM, CATEGORIES), reference=reference)])
    engine = Engine(old_config, now=0.0)
    # An ingest worker bins against the old engine (count 5 over [0, 10)) ...
    batch = engine.bin_batch("s", 3, {"u": [0.5, 9.5, 9.6], "c": ["a", "a", "b"]})
    # ... a reload changes u's bins to count 5 over [0, 5) (same number of bins) ...
    narrow = {**UNIFORM, "bins": {"kind": "uniform", "lo": 0, "hi": 5, "count": 5}}
    new_config = make_config([stream_doc(features=(narrow, CATEGORIES), reference=reference)])
    new = _reload(engine, new_config, now=1.0)
    # ... and the batch is applied to the new engine: it must be binned again.
    new.apply(batch, 1.5)
    np.testing.assert_array_equal(new.live[new.monitor("s", "u").bins], [0, 1, 0, 0, 0, 0, 2, 0, 0])
    np.testing.assert_array_equal(new.live[new.monitor("s", "c").bins], [2, 1, 0, 0, 0, 0])


def test_the_split_ingest_path_equals_ingest(tmp_path: Path) -> None:
    """bin_batch (no shared state) then apply gives what ingest gives, in any bin order."""
    engine, docs = _reload_fixture(tmp_path)
    twin, _ = _reload_fixture(tmp_path)
    rows = [({"u": [1.0, 5.0], "c": ["a", "b"]}, 20.0), ({"u": [7.0], "c": [None]}, 21.0)]
    batches = [engine.bin_batch("s", len(cols["u"]), cols) for cols, _ in rows]
    for batch, (_, now) in zip(batches, rows, strict=True):
        engine.apply(batch, now)
    for cols, now in rows:
        twin.ingest("s", len(cols["u"]), cols, now)
    np.testing.assert_array_equal(engine.live, twin.live)
    np.testing.assert_array_equal(engine.ingested, twin.ingested)


@pytest.mark.parametrize("window", [PANES, SAMPLES])
def test_numeric_columns_as_arrays_bin_exactly_as_the_lists_they_replace(
    window: Mapping[str, Any],
) -> None:
    """parse_body(numeric_fields=...) hands plain-number bodies over as float64 arrays; a warmup
    and both window kinds must end with the same counts as from the lists."""
    features = (UNIFORM, EDGES, QUANTILE)
    fields = [f["name"] for f in features]
    config = make_config([stream_doc(features=features, window=window, reference={"warmup": 70})])
    rng = np.random.default_rng(5)
    engines = {"lists": Engine(config, now=0.0), "arrays": Engine(config, now=0.0)}
    for step in range(6):
        rows = [
            {"u": round(float(v), 3), "e": int(w), "q": float(x)}
            for v, w, x in zip(
                rng.normal(5, 3, 40), rng.integers(-2, 10, 40), rng.exponential(2, 40), strict=True
            )
        ]
        body = json.dumps({"columns": {f: [r[f] for r in rows] for f in fields}}).encode()
        plain = parse_body(body, "application/json", fields)
        fast = parse_body(body, "application/json", fields, numeric_fields=fields)
        assert all(isinstance(fast.columns[f], np.ndarray) for f in fields)
        engines["lists"].ingest("s", 40, plain.columns, float(step))
        engines["arrays"].ingest("s", 40, fast.columns, float(step))
    lists, arrays = engines["lists"], engines["arrays"]
    assert [m.feature for m in arrays.monitors] == fields
    np.testing.assert_array_equal(arrays.reference, lists.reference)
    np.testing.assert_array_equal(arrays.live, lists.live)
    live_rows = 6 * 40 - 70
    assert arrays.live.sum() == 3 * min(live_rows, window.get("samples", live_rows))


def test_a_warmup_keeps_normalised_values_bounded_in_bytes(tmp_path: Path) -> None:
    """Rows of 1 MiB strings, huge ints, lists and dicts: the warmup keeps floats, canonical
    text capped at 1 KiB, ``None`` and one small invalid token, so its memory and its
    checkpoint stay small; and the reference it freezes into counts what binning the
    original values counts (an over-long category as invalid)."""
    from driftmon.checkpoint import CHECKPOINT_NAME, write_checkpoint

    config = make_config(
        [stream_doc(features=(UNIFORM, CATEGORIES, TOP_K), reference={"warmup": 40})]
    )
    engine = Engine(config, now=0.0)
    huge = "x" * (1 << 20)
    hostile: list[object] = [huge, 10**5000, [1, 2] * 1000, {"k": huge}, True, None]
    fine: list[object] = [1, 2.5, "a", "3", 3, float("nan"), -1e309]
    columns = {
        "u": (hostile + fine) * 2 + [1.0] * 4,
        "c": (hostile + fine) * 2 + ["a"] * 4,
        "t": (fine + hostile) * 2 + ["b"] * 4,
    }
    engine.ingest("s", 30, columns, 1.0)
    state = engine.export_state().streams["s"]
    kept = state.warmup_columns
    strings = [v for column in kept.values() for v in column if isinstance(v, str)]
    assert strings and max(map(len, strings)) <= 1024
    assert all(type(v) in (float, type(None), list) for v in kept["u"]), kept["u"]
    assert all(v == [] for v in kept["u"] if isinstance(v, list))
    assert all(type(v) in (str, type(None), list) for v in kept["c"] + kept["t"])
    write_checkpoint(tmp_path, engine.export_state(), saved_at=2.0)
    assert (tmp_path / CHECKPOINT_NAME).stat().st_size < 64 * 1024

    # The frozen reference: the counts binning the original rows gives.
    engine.ingest("s", 10, {k: v[:10] for k, v in columns.items()}, 3.0)
    assert engine.warmup_progress("s") is None
    whole = {k: v + v[:10] for k, v in columns.items()}
    for feature in ("u", "c"):
        monitor = engine.monitor("s", feature)
        expected = np.zeros(monitor.n_bins)
        monitor.binner.add_values(whole[feature], expected)
        if feature == "c":  # 1 MiB strings and unprintable ints were `other`; kept as invalid
            long_ones = sum(
                1
                for v in whole["c"]
                if (isinstance(v, str) and len(v) > 1024)
                or (type(v) is int and v.bit_length() > 10_000)
            )
            expected[monitor.binner.other] -= long_ones  # type: ignore[union-attr]
            expected[monitor.binner.invalid] += long_ones  # type: ignore[union-attr]
            assert long_ones > 0
        assert engine.reference[monitor.bins].tolist() == expected.tolist(), feature
