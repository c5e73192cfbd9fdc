"""Binning (docs/configuration.md#bins): kernels against tests/naive.py, properties, type rules."""

from __future__ import annotations

import copy
import math
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon import binning
from driftmon.binning import (
    CategoricalBinner,
    NumericBinner,
    top_k_categories,
)
from driftmon.kernels import binning as kernels
from driftmon.quantiles import quantile_edges

RNG_SEED = 20240601
LINEAR, ORDERED = kernels.GRID_LINEAR, kernels.GRID_ORDERED_BITS

UNIFORM_LAYOUTS = [
    (0.0, 1.0, 10),
    (-3.5, 7.25, 64),
    (0.0, 1.0, 1),
    (1e-300, 3e-300, 7),
    (-1e10, 1e10, 1000),
    (0.0, 1e300, 3),
    (18.0, 98.0, 16),
    (-1.0, 1.0, 5000),  # more bins than kernels.MAX_BINS_FOR_LANES: one shared lane
]

EDGE_LAYOUTS = {
    "uneven": [0.0, 1e-9, 1.0, 1e6],
    "two": [-1.0, 1.0],
    "linear": np.linspace(0.0, 1.0, 65).tolist(),
    "geometric": np.geomspace(1e-6, 1e6, 65).tolist(),
    "symmetric-log": sorted([-x for x in np.geomspace(1e-6, 1e6, 13)] + [0.0, 1e-6, 1.0, 1e6]),
    "ulp-apart": [1.0, math.nextafter(1.0, 2.0), math.nextafter(math.nextafter(1.0, 2.0), 2.0)],
    "subnormal": [5e-324, 1e-323, 1.5e-323, 1e-300],
    "whole-range": [-1e308, -1.0, 0.0, 1.0, 1e308],
    "cluster": [0.0, *(1.0 + k * 1e-12 for k in range(40)), 1e9],
    "big-cluster": [-5.0, *(2.0 + k * 1e-9 for k in range(300)), 7.0],
}


def _lognormal_quantile_edges() -> list[float]:
    sample = np.random.default_rng(RNG_SEED).lognormal(0.0, 2.0, 20_000)
    return quantile_edges(sample, 64).tolist()


EDGE_LAYOUTS["lognormal-quantile"] = _lognormal_quantile_edges()
EDGE_LAYOUTS["random-5000"] = np.unique(
    np.random.default_rng(RNG_SEED).standard_cauchy(5000)
).tolist()


def _special_values() -> list[float]:
    return [
        math.nan,
        math.inf,
        -math.inf,
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        sys.float_info.max,
        -sys.float_info.max,
        sys.float_info.min,
        1e300,
        -1e300,
    ]


def _probe_values(edges: list[float], rng: np.random.Generator, n_random: int = 2000) -> np.ndarray:
    """Every edge, its float neighbours, specials, and random values around the range."""
    probes: list[float] = _special_values()
    for edge in edges:
        probes += [edge, math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)]
    lo, hi = edges[0], edges[-1]
    width = hi - lo if math.isfinite(hi - lo) else sys.float_info.max
    uniform = rng.uniform(-0.25, 1.25, n_random)
    with np.errstate(over="ignore"):  # a few may overflow to ±inf: fine probes too
        probes += (lo + uniform * width).tolist()
    # values spread over the orders of magnitude the edges span
    magnitudes = np.abs(np.array([e for e in edges if e != 0.0]))
    exponents = rng.uniform(np.log10(magnitudes.min()) - 1, np.log10(magnitudes.max()) + 1, 500)
    with np.errstate(over="ignore"):
        probes += (np.sign(rng.standard_normal(500)) * 10.0**exponents).tolist()
    return np.array(probes, dtype=np.float64)


def _naive_uniform_index(values: np.ndarray, lo: float, hi: float, count: int) -> np.ndarray:
    return np.array([naive.uniform_bin(float(v), lo, hi, count) for v in values], dtype=np.int64)


def _naive_edges_index(values: np.ndarray, edges: list[float]) -> np.ndarray:
    edge_array = np.array(edges)  # naive.edges_bin would convert a list on every call
    return np.array([naive.edges_bin(float(v), edge_array) for v in values], dtype=np.int64)


def _with_grid(binner: NumericBinner, **grid_options: object) -> NumericBinner:
    """A copy of an explicit-edges binner whose lookup table was built with options."""
    forced = NumericBinner.from_edges(binner.edges)
    grid = binning._build_edges_grid(np.array(binner.edges), **grid_options)  # type: ignore[arg-type]
    object.__setattr__(forced, "_grid", grid)
    return forced


# --- uniform kernels against naive.py -----------------------------------------------


@pytest.mark.parametrize(("lo", "hi", "count"), UNIFORM_LAYOUTS)
def test_uniform_index_and_add_match_naive(lo: float, hi: float, count: int) -> None:
    rng = np.random.default_rng(RNG_SEED)
    binner = NumericBinner.uniform(lo, hi, count)
    edges = binner.edges.tolist()
    values = _probe_values(edges[:: max(1, count // 200)] + [edges[-1]], rng)
    # every edge exactly, not just a sample: the rounding of v on an edge matters
    values = np.concatenate([values, binner.edges, lo + np.arange(count + 1) * (hi - lo) / count])

    expected = _naive_uniform_index(values, lo, hi, count)
    np.testing.assert_array_equal(binner.index(values), expected)

    counts = np.zeros(binner.n_bins)
    binner.add(values, counts)
    np.testing.assert_array_equal(counts, naive.histogram_uniform(values, lo, hi, count))


def test_uniform_special_values_go_to_special_bins() -> None:
    binner = NumericBinner.uniform(0.0, 1.0, 4)
    values = np.array([-math.inf, -1e-300, 0.0, 0.999999, 1.0, math.inf, math.nan])
    assert binner.index(values).tolist() == [0, 0, 1, 4, 5, 5, 6]
    assert (binner.UNDERFLOW, binner.overflow, binner.missing, binner.invalid) == (0, 5, 6, 7)


# --- explicit-edges kernels against naive.py -----------------------------------------


@pytest.mark.parametrize("name", sorted(EDGE_LAYOUTS))
def test_edges_index_and_add_match_naive(name: str) -> None:
    edges = EDGE_LAYOUTS[name]
    rng = np.random.default_rng(RNG_SEED)
    binner = NumericBinner.from_edges(edges)
    values = _probe_values(edges, rng)
    expected = _naive_edges_index(values, edges)
    np.testing.assert_array_equal(binner.index(values), expected)
    counts = np.zeros(binner.n_bins)
    binner.add(values, counts)
    np.testing.assert_array_equal(counts, naive.histogram_edges(values, np.array(edges)))


# Every grid the chooser could take, and deliberately poor ones: exactness must
# not depend on the table's quality (only speed does).
GRID_OPTIONS = [
    {"grid_kinds": (LINEAR,)},
    {"grid_kinds": (ORDERED,)},
    {"grid_kinds": (LINEAR,), "max_cells": 1},  # one cell: the full search
    {"grid_kinds": (ORDERED,), "max_cells": 2},
    {"grid_kinds": (LINEAR,), "max_cells": 16},
]


@pytest.mark.parametrize("options", GRID_OPTIONS, ids=lambda o: repr(sorted(o.items())))
@pytest.mark.parametrize("name", sorted(EDGE_LAYOUTS))
def test_edges_exact_for_every_grid(name: str, options: dict[str, object]) -> None:
    edges = EDGE_LAYOUTS[name]
    binner = _with_grid(NumericBinner.from_edges(edges), **options)
    values = _probe_values(edges, np.random.default_rng(RNG_SEED + 1), n_random=500)
    np.testing.assert_array_equal(binner.index(values), _naive_edges_index(values, edges))
    counts = np.zeros(binner.n_bins)
    binner.add(values, counts)
    np.testing.assert_array_equal(counts, naive.histogram_edges(values, np.array(edges)))


def test_grid_search_paths_are_all_exercised() -> None:
    """The layouts above reach the short walk, the six-step search and the
    narrowing loop for cells of 64 or more edges."""
    steps = {
        binning._build_edges_grid(np.array(edges), **options).steps  # type: ignore[arg-type]
        for edges in EDGE_LAYOUTS.values()
        for options in GRID_OPTIONS
    }
    assert min(steps) <= kernels.MAX_LINEAR_STEPS
    assert any(kernels.MAX_LINEAR_STEPS < s < kernels.SEARCH_PADDING for s in steps)
    assert max(steps) >= kernels.SEARCH_PADDING


def test_chosen_grid_resolves_skewed_edges() -> None:
    """The default table keeps the correction short on uneven and quantile edges."""
    for name in ("uneven", "lognormal-quantile", "geometric", "symmetric-log", "linear"):
        grid = NumericBinner.from_edges(EDGE_LAYOUTS[name])._grid
        assert grid is not None
        assert grid.steps <= 1, name
        assert grid.cell_start.size - 1 <= binning.MAX_GRID_CELLS


def test_edges_value_on_edge_goes_up() -> None:
    binner = NumericBinner.from_edges([0, 1e-9, 1, 1e6])
    values = np.array([-1.0, 0.0, 1e-10, 1e-9, 0.5, 1.0, 999_999.0, 1e6, 2e6, math.nan, -0.0])
    assert binner.index(values).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 1]


# --- properties ----------------------------------------------------------------------

float_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=3.0),
    st.sampled_from([0.0, 0.5, 1.0, 1e-9, 1e6, -0.0]),
)
value_arrays = st.lists(float_values, max_size=300).map(lambda v: np.array(v, dtype=np.float64))

PROPERTY_BINNERS = [
    NumericBinner.uniform(0.0, 1.0, 10),
    NumericBinner.from_edges([0, 1e-9, 1, 1e6]),
    NumericBinner.from_edges(np.linspace(-1.0, 2.0, 31)),
]


@settings(max_examples=60, deadline=None)
@given(first=value_arrays, second=value_arrays, which=st.integers(0, len(PROPERTY_BINNERS) - 1))
def test_binning_a_concatenation_is_the_sum_of_the_parts(
    first: np.ndarray, second: np.ndarray, which: int
) -> None:
    binner = PROPERTY_BINNERS[which]
    whole = np.zeros(binner.n_bins)
    binner.add(np.concatenate([first, second]), whole)
    parts = np.zeros(binner.n_bins)
    binner.add(first, parts)
    binner.add(second, parts)
    np.testing.assert_array_equal(whole, parts)
    assert whole.sum() == first.size + second.size
    assert whole[binner.invalid] == 0


@settings(max_examples=60, deadline=None)
@given(values=value_arrays, which=st.integers(0, len(PROPERTY_BINNERS) - 1))
def test_index_and_add_agree(values: np.ndarray, which: int) -> None:
    binner = PROPERTY_BINNERS[which]
    indices = binner.index(values)
    assert indices.dtype == np.int32 and indices.shape == values.shape
    counts = np.zeros(binner.n_bins)
    binner.add(values, counts)
    np.testing.assert_array_equal(np.bincount(indices, minlength=binner.n_bins), counts)


@settings(max_examples=40, deadline=None)
@given(
    edges=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=2, max_size=40
    ).map(lambda e: sorted(set(e))),
    values=value_arrays,
)
def test_edges_match_naive_for_arbitrary_edges(edges: list[float], values: np.ndarray) -> None:
    if len(edges) < 2:
        return
    binner = NumericBinner.from_edges(edges)
    probes = np.concatenate([values, np.array(edges)])
    np.testing.assert_array_equal(binner.index(probes), _naive_edges_index(probes, edges))


def test_large_batches_and_odd_lengths() -> None:
    """Sizes across the kernels' block and four-lane boundaries, and adding twice."""
    rng = np.random.default_rng(RNG_SEED)
    for binner in PROPERTY_BINNERS:
        for size in (0, 1, 3, 4, 5, kernels.BLOCK_VALUES - 1, kernels.BLOCK_VALUES + 3, 10_001):
            values = rng.normal(0.5, 1.0, size)
            values[::97] = math.nan
            expected = np.bincount(
                _naive_edges_index(values, binner.edges.tolist())
                if binner.kind == "edges"
                else _naive_uniform_index(values, 0.0, 1.0, 10),
                minlength=binner.n_bins,
            )
            counts = np.zeros(binner.n_bins)
            binner.add(values, counts)
            binner.add(values, counts)
            np.testing.assert_array_equal(counts, 2 * expected)


def test_constant_values_counted_exactly() -> None:
    """A run of one value (every lane on the same bin) is counted exactly."""
    binner = NumericBinner.uniform(0.0, 1.0, 4)
    counts = np.zeros(binner.n_bins)
    binner.add(np.full(100_003, 0.3), counts)
    assert counts.tolist() == [0, 0, 100_003, 0, 0, 0, 0, 0]


def test_strided_values_and_counts_views() -> None:
    binner = NumericBinner.from_edges([0.0, 1.0, 2.0])
    matrix = np.array([[0.5, 9.0], [1.5, 9.0], [-1.0, 9.0], [math.nan, 9.0]])
    state = np.zeros((2, binner.n_bins + 2))
    binner.add(matrix[:, 0], state[1, 1:-1])  # a strided column into a row slice
    assert state[1].tolist() == [0, 1, 1, 1, 0, 1, 0, 0]
    assert binner.index(matrix[:, 0]).tolist() == [1, 2, 0, 4]


def test_per_thread_buffers_merge_to_the_whole() -> None:
    binner = NumericBinner.from_edges(EDGE_LAYOUTS["lognormal-quantile"])
    values = np.random.default_rng(RNG_SEED).lognormal(0.0, 2.0, 200_000)
    chunks = np.array_split(values, 4)
    buffers = [np.zeros(binner.n_bins) for _ in chunks]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(binner.add, chunks, buffers))
    whole = np.zeros(binner.n_bins)
    binner.add(values, whole)
    np.testing.assert_array_equal(sum(buffers), whole)


# --- checks before JIT code ------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 1.5],
        np.array([0.5], dtype=np.float32),
        np.array([1, 2]),
        np.zeros((2, 2)),
    ],
    ids=["list", "float32", "int64", "2-D"],
)
def test_add_and_index_reject_bad_values(values: object) -> None:
    for binner in (NumericBinner.uniform(0, 1, 2), NumericBinner.from_edges([0, 1, 2])):
        counts = np.zeros(binner.n_bins)
        with pytest.raises(ValueError, match="values"):
            binner.add(values, counts)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="values"):
            binner.index(values)  # type: ignore[arg-type]
        assert not counts.any()


def test_add_rejects_bad_counts() -> None:
    binner = NumericBinner.uniform(0, 1, 2)
    values = np.array([0.5])
    readonly = np.zeros(binner.n_bins)
    readonly.flags.writeable = False
    bad_counts = [
        np.zeros(binner.n_bins - 1),
        np.zeros(binner.n_bins, dtype=np.int64),
        np.zeros((1, binner.n_bins)),
        [0.0] * binner.n_bins,
    ]
    for counts in bad_counts:
        with pytest.raises(ValueError, match="counts"):
            binner.add(values, counts)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="counts"):
            binner.add_values([0.5], counts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counts must be writeable"):
        binner.add(values, readonly)


def test_index_out_argument() -> None:
    binner = NumericBinner.uniform(0, 1, 2)
    values = np.array([0.1, 0.9, 2.0])
    out = np.full(3, -1, dtype=np.int32)
    assert binner.index(values, out) is out
    assert out.tolist() == [1, 2, 3]
    for bad in (np.zeros(3, dtype=np.int64), np.zeros(2, dtype=np.int32)):
        with pytest.raises(ValueError, match="out"):
            binner.index(values, bad)


@pytest.mark.parametrize(
    ("lo", "hi", "count", "message"),
    [
        (0, 1, 0, "count"),
        (0, 1, -3, "count"),
        (0, 1, 2.0, "count"),
        (0, 1, True, "count"),
        (1, 1, 4, "lo must be < hi"),
        (2, 1, 4, "lo must be < hi"),
        (0, math.inf, 4, "hi must be finite"),
        (math.nan, 1, 4, "lo must be finite"),
        ("0", 1, 4, "lo must be a number"),
        (-1e308, 1e308, 4, "finite"),
        (1.0, math.nextafter(1.0, 2.0), 4, "narrower than float64"),
    ],
)
def test_uniform_constructor_validates(lo: object, hi: object, count: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NumericBinner.uniform(lo, hi, count)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([1.0], "at least 2"),
        ([], "at least 2"),
        ([[0.0, 1.0]], "flat"),
        ([0.0, 1.0, 1.0], "strictly increasing"),
        ([1.0, 0.0], "strictly increasing"),
        ([0.0, math.inf], "finite"),
        ([math.nan, 1.0], "finite"),
        (["a", "b"], "numbers"),
    ],
)
def test_from_edges_validates(edges: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NumericBinner.from_edges(edges)  # type: ignore[arg-type]


def test_numeric_binner_is_immutable_and_comparable() -> None:
    binner = NumericBinner.uniform(0.0, 1.0, 4)
    with pytest.raises(AttributeError):
        binner.n_regular = 3
    with pytest.raises(ValueError):
        binner.edges[0] = -1.0
    with pytest.raises(TypeError):
        NumericBinner()
    assert binner == NumericBinner.uniform(0, 1, 4)
    assert hash(binner) == hash(NumericBinner.uniform(0, 1, 4))
    # same edges, other rule: not the same layout
    assert binner != NumericBinner.from_edges(binner.edges)
    assert NumericBinner.from_edges([0, 1]) == NumericBinner.from_edges(np.array([0.0, 1.0]))
    assert binner.edges.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (binner.n_regular, binner.n_bins, binner.kind) == (4, 8, "uniform")
    assert repr(binner) == "NumericBinner.uniform(0.0, 1.0, 4)"


def test_binners_copy_and_pickle() -> None:
    for binner in (
        NumericBinner.uniform(-1.0, 3.0, 7),
        NumericBinner.from_edges([0, 1e-9, 1, 1e6]),
        CategoricalBinner(["a", "b"]),
    ):
        for twin in (copy.copy(binner), copy.deepcopy(binner), pickle.loads(pickle.dumps(binner))):
            assert twin == binner and hash(twin) == hash(binner)
            assert twin.bin_labels() == binner.bin_labels()
    assert hash(NumericBinner.from_edges([-0.0, 1.0])) == hash(NumericBinner.from_edges([0, 1]))


def test_from_edges_copies_its_input() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    binner = NumericBinner.from_edges(edges)
    edges[1] = 5.0
    assert binner.edges.tolist() == [0.0, 1.0, 2.0]
    assert edges.flags.writeable


def test_uniform_last_edge_is_hi() -> None:
    binner = NumericBinner.uniform(0.1, 0.7, 3)
    assert binner.edges[-1] == 0.7
    assert binner.edges.tolist()[:-1] == [0.1 + i * (0.7 - 0.1) / 3 for i in range(3)]


def test_numeric_bin_labels() -> None:
    assert NumericBinner.uniform(0, 1, 10).bin_labels() == [
        "underflow",
        "[0, 0.1)",
        "[0.1, 0.2)",
        "[0.2, 0.3)",
        "[0.3, 0.4)",
        "[0.4, 0.5)",
        "[0.5, 0.6)",
        "[0.6, 0.7)",
        "[0.7, 0.8)",
        "[0.8, 0.9)",
        "[0.9, 1)",
        "overflow",
        "missing",
        "invalid",
    ]
    assert NumericBinner.from_edges([-0.0, 1e-9, 1, 1e6, 1e20]).bin_labels() == [
        "underflow",
        "[0, 1e-09)",
        "[1e-09, 1)",
        "[1, 1000000)",
        "[1000000, 1e+20)",
        "overflow",
        "missing",
        "invalid",
    ]


# --- numeric type rules (add_values / index_values) -------------------------------


def test_numeric_type_rules() -> None:
    binner = NumericBinner.from_edges(
        [0.0, 1.0, 10.0]
    )  # 0 under, 1-2 regular, 3 over, 4 miss, 5 inv
    column: list[object] = [
        0.5,  # float
        3,  # int
        True,  # bool is not a number
        False,
        "1.5",  # a numeric-looking string is still a string
        None,  # missing
        math.nan,  # missing
        [1.0],  # nested list
        {"a": 1},
        10**400,  # beyond float64: +inf, overflow
        -(10**400),  # -inf, underflow
        math.inf,
        -math.inf,
        -2,
        np.float32(0.25),
        np.int64(7),
        np.bool_(True),
        (1, 2),
    ]
    expected = [1, 2, 5, 5, 5, 4, 4, 5, 5, 3, 0, 3, 0, 0, 1, 2, 5, 5]
    assert binner.index_values(column).tolist() == expected
    counts = np.zeros(binner.n_bins)
    binner.add_values(column, counts)
    np.testing.assert_array_equal(counts, np.bincount(expected, minlength=binner.n_bins))


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ([0.5, 2.5, 20.0], [1, 2, 3]),  # all float: fast path
        ([1, 2, 30], [2, 2, 3]),  # all int
        ([1, 0.5, None, math.nan], [2, 1, 4, 4]),  # numbers and missing
        ([1, 10**400, 0.5], [2, 3, 1]),  # an int beyond float64 in the fast path
        ([], []),
    ],
)
def test_numeric_fast_paths(column: list[object], expected: list[int]) -> None:
    binner = NumericBinner.from_edges([0.0, 1.0, 10.0])
    assert binner.index_values(column).tolist() == expected
    counts = np.zeros(binner.n_bins)
    binner.add_values(column, counts)
    np.testing.assert_array_equal(counts, np.bincount(expected, minlength=binner.n_bins))


def test_numeric_ndarray_columns() -> None:
    binner = NumericBinner.from_edges([0.0, 1.0, 10.0])
    cases: list[tuple[np.ndarray, list[int]]] = [
        (np.array([0.5, math.nan, 11.0]), [1, 4, 3]),
        (np.array([0.5, 2.0], dtype=np.float32), [1, 2]),
        (np.array([-1, 5], dtype=np.int16), [0, 2]),
        (np.array([2**64 - 1], dtype=np.uint64), [3]),
        (np.array([True, False]), [5, 5]),
        (np.array(["0.5", "x"]), [5, 5]),
        (np.array([0.5, None, "x", 3], dtype=object), [1, 4, 5, 2]),
        (np.array([0.5, 2.0, 20.0])[::2], [1, 3]),
    ]
    for column, expected in cases:
        assert binner.index_values(column).tolist() == expected, column
        counts = np.zeros(binner.n_bins)
        binner.add_values(column, counts)
        np.testing.assert_array_equal(counts, np.bincount(expected, minlength=binner.n_bins))
    with pytest.raises(ValueError, match="1-D"):
        binner.index_values(np.zeros((2, 2)))


def test_uniform_add_values_matches_naive_on_floats() -> None:
    values = np.random.default_rng(RNG_SEED).normal(40.0, 30.0, 3000)
    values[::50] = math.nan
    binner = NumericBinner.uniform(18, 98, 16)
    counts = np.zeros(binner.n_bins)
    binner.add_values(values.tolist(), counts)
    np.testing.assert_array_equal(counts, naive.histogram_uniform(values, 18.0, 98.0, 16))


# --- categorical -------------------------------------------------------------------


def test_categorical_codes_type_rules() -> None:
    binner = CategoricalBinner(["a", "3", "true", "-7"])  # 4 other, 5 missing, 6 invalid
    column: list[object] = [
        "a",
        3,  # int matches by its text
        True,  # bool as "true"
        False,  # "false" is not a category: other
        1.5,  # floats are invalid
        3.0,
        None,  # missing
        math.nan,  # NaN is missing
        "zz",  # unknown: other
        [1],  # invalid
        {"a": 1},
        "",  # a string, not a category: other
        "A",  # case-sensitive
        -7,
        np.int64(3),
        np.str_("a"),
        np.bool_(True),
        np.float64(math.nan),
        10**5000,  # an int too long to print: other
    ]
    expected = [0, 1, 2, 4, 6, 6, 5, 5, 4, 6, 6, 4, 4, 3, 1, 0, 2, 5, 4]
    assert binner.codes(column).tolist() == expected
    assert binner.index_values(column).tolist() == expected
    counts = np.zeros(binner.n_bins)
    binner.add_values(column, counts)
    np.testing.assert_array_equal(counts, np.bincount(expected, minlength=binner.n_bins))


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (["a", "3", "a", "c"], [0, 1, 0, 2]),  # all str
        (["a", 3, 10, -1], [0, 1, 2, 2]),  # str and int
        ([3, 3], [1, 1]),  # all int
        ([], []),
        (np.array(["a", "3"]), [0, 1]),
        (np.array([3, 4]), [1, 2]),
    ],
)
def test_categorical_fast_paths(column: list[object], expected: list[int]) -> None:
    assert CategoricalBinner(["a", "3"]).codes(column).tolist() == expected


def test_categorical_large_column() -> None:
    categories = [f"c{i}" for i in range(12)]
    binner = CategoricalBinner(categories)
    rng = np.random.default_rng(RNG_SEED)
    column = [f"c{i}" for i in rng.integers(0, 15, 10_000)]
    codes = binner.codes(column)
    expected = [categories.index(v) if v in categories else 12 for v in column]
    np.testing.assert_array_equal(codes, expected)
    counts = np.ones(binner.n_bins)
    binner.add_codes(codes, counts)
    np.testing.assert_array_equal(counts, 1 + np.bincount(expected, minlength=binner.n_bins))


def test_add_codes_validates() -> None:
    binner = CategoricalBinner(["a"])
    counts = np.zeros(binner.n_bins)
    for codes in (np.array([0, 4], dtype=np.int32), np.array([-1], dtype=np.int32)):
        with pytest.raises(ValueError, match="codes must be layout indices"):
            binner.add_codes(codes, counts)
    bad_codes: list[object] = [np.array([0]), [0], np.zeros((1, 1), dtype=np.int32)]
    for bad in bad_codes:
        with pytest.raises(ValueError, match="codes"):
            binner.add_codes(bad, counts)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="counts"):
        binner.add_codes(np.array([0], dtype=np.int32), np.zeros(3))
    assert not counts.any()
    binner.add_codes(np.array([], dtype=np.int32), counts)
    assert not counts.any()


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        (["a", "a"], "unique"),
        (["a", ""], "non-empty"),
        (["a", 3], "non-empty strings"),
        ("abc", "list of strings"),
    ],
)
def test_categorical_constructor_validates(categories: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CategoricalBinner(categories)  # type: ignore[arg-type]


def test_categorical_layout_and_labels() -> None:
    binner = CategoricalBinner(["free", "pro", "team"])
    assert binner.categories == ("free", "pro", "team")
    assert (binner.n_bins, binner.other, binner.missing, binner.invalid) == (6, 3, 4, 5)
    assert binner.bin_labels() == ["free", "pro", "team", "other", "missing", "invalid"]
    assert binner == CategoricalBinner(("free", "pro", "team"))
    assert binner != CategoricalBinner(["pro", "free", "team"])
    assert hash(binner) == hash(CategoricalBinner(["free", "pro", "team"]))
    with pytest.raises(AttributeError):
        binner.categories = ("x",)
    empty = CategoricalBinner([])
    assert empty.n_bins == 3
    assert empty.codes(["x", None, 1.5]).tolist() == [0, 1, 2]


# --- learning layouts ------------------------------------------------------------------


def test_quantile_edges() -> None:
    # The last edge is the next float above the maximum (it used to be the
    # maximum itself, which put the reference's largest value in overflow).
    above_100 = np.nextafter(100.0, math.inf)
    values = np.arange(101, dtype=np.float64)
    np.testing.assert_array_equal(quantile_edges(values, 4), [0, 25, 50, 75, above_100])
    np.testing.assert_array_equal(quantile_edges(values, 1), [0, above_100])
    with_specials = np.concatenate([values, [math.nan, math.inf, -math.inf]])
    np.testing.assert_array_equal(quantile_edges(with_specials, 4), [0, 25, 50, 75, above_100])
    np.testing.assert_array_equal(
        quantile_edges(np.arange(5), 2), [0, 2, np.nextafter(4.0, 5.0)]
    )  # ints
    sample = np.random.default_rng(RNG_SEED).normal(size=1001)
    np.testing.assert_array_equal(quantile_edges(sample, 10), naive.quantile_edges(sample, 10))
    assert quantile_edges(sample, 10)[-1] == np.nextafter(sample.max(), math.inf)


def test_quantile_edges_put_the_maximum_in_a_regular_bin() -> None:
    """The worked case: the reference's maximum bins as a regular value, not overflow."""
    values = np.random.default_rng(RNG_SEED).normal(size=10_000)
    binner = NumericBinner.from_edges(quantile_edges(values, 2))
    counts = np.zeros(binner.n_bins)
    binner.add(values, counts)
    assert counts.tolist() == [0, 5000, 5000, 0, 0, 0]  # underflow, 2 bins, overflow, ...


def test_quantile_edges_removes_duplicates() -> None:
    values = np.array([0.0] * 90 + list(range(1, 11)), dtype=np.float64)
    edges = quantile_edges(values, 10)
    # nine of the eleven quantiles are 0; the 0.9 one falls between 0 and 1
    assert edges.size == 3 and edges[0] == 0.0 and 0.0 < edges[1] < 1.0
    assert edges[2] == np.nextafter(10.0, math.inf)
    np.testing.assert_array_equal(edges, naive.quantile_edges(values, 10))
    assert np.all(np.diff(edges) > 0)
    NumericBinner.from_edges(edges)  # always a valid layout


@pytest.mark.parametrize(
    ("values", "count", "message"),
    [
        (np.full(10, 3.0), 4, "fewer than 2 distinct"),
        (np.array([0.0, np.finfo(np.float64).max]), 1, "largest float64"),
        (np.array([-1.7e308, 1.7e308]), 4, "span more than float64"),
        (np.array([]), 4, "no finite"),
        (np.array([math.nan, math.inf]), 4, "no finite"),
        (np.arange(10.0), 0, "count"),
        (np.arange(10.0), True, "count"),
        (np.array(["a", "b"]), 2, "numeric"),
        (np.array([True, False]), 2, "numeric"),
        ([1.0, 2.0], 2, "numeric"),
        (np.zeros((2, 2)), 2, "1-D"),
    ],
)
def test_quantile_edges_errors(values: object, count: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quantile_edges(values, count)  # type: ignore[arg-type]


def test_top_k_categories() -> None:
    column: list[object] = ["b", "a", "b", 3, "3", True, "true", None, 1.5, math.nan, [1], "", "c"]
    # "b": 2, "3": 2, "true": 2, "a": 1, "c": 1; ties by text
    assert top_k_categories(column, 2) == ("3", "b")
    assert top_k_categories(column, 10) == ("3", "b", "true", "a", "c")
    assert top_k_categories(["x"] * 3 + ["y"] * 5, 1) == ("y",)
    assert top_k_categories([None, 1.5, ""], 3) == ()
    assert top_k_categories([], 3) == ()
    assert top_k_categories(np.array(["a", "b", "b"]), 1) == ("b",)
    assert top_k_categories([10**5000, "a"], 2) == ("a",)
    with pytest.raises(ValueError, match="k must be"):
        top_k_categories(["a"], 0)
    # what top_k learns is always a valid layout
    CategoricalBinner(top_k_categories(column, 10))


KERNELS = (
    kernels.uniform_index,
    kernels.uniform_count,
    kernels.edges_grid_cells,
    kernels.edges_index,
    kernels.edges_count,
    kernels.codes_count,
)


def test_warm_up_compiles_the_signatures_the_api_uses() -> None:
    """After warm_up, no public call (writeable, read-only or strided input) compiles."""
    kernels.warm_up()
    compiled = [len(kernel.signatures) for kernel in KERNELS]
    assert all(compiled)
    values = np.array([0.5, -1.0, 7.0, math.nan])
    readonly = np.frombuffer(values.tobytes())
    strided = np.repeat(values, 2)[::2]
    for binner in (NumericBinner.uniform(0, 1, 3), NumericBinner.from_edges([0, 0.1, 1, 8])):
        counts = np.zeros(binner.n_bins)
        for column in (values, readonly, strided):
            binner.add(column, counts)
            binner.index(column)
            binner.add_values(column, counts)
        binner.add_values([0.5, None, "x"], counts)
        binner.index_values([0.5, True])
        assert counts.sum() == 3 * 2 * values.size + 3
    categorical = CategoricalBinner(["a", "b"])
    counts = np.zeros(categorical.n_bins)
    categorical.add_values(["a", 1, None], counts)
    categorical.add_codes(np.frombuffer(np.array([0, 1], np.int32).tobytes(), np.int32), counts)
    assert counts.tolist() == [2, 1, 1, 1, 0]
    assert [len(kernel.signatures) for kernel in KERNELS] == compiled
