"""Columnar readers (Arrow, Parquet, fast CSV) against the row readers they replace.

The oracle is the pure-Python row reader (``driftmon.sources.read_table``, kept
for JSON files and bodies): for every fixture and every feature, the layout
learned from the new reader's values and every row's bin index must equal
the old reader's. Missing, invalid, NaN and ±Infinity cells are included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.feather as feather
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.binning import CategoricalBinner, NumericBinner, top_k_categories
from driftmon.coded import CodedColumn
from driftmon.config import FeatureConfig, QuantileBins
from driftmon.quantiles import finite_quantiles
from driftmon.reference import layout_key, learn_binner
from driftmon.sources import BodyError, read_table
from driftmon.sources.columnar import parse_arrow_body, read_batch

ROOT = Path(__file__).resolve().parent.parent


def numeric(name: str, count: int = 8) -> FeatureConfig:
    return FeatureConfig(name, "numeric", 0.5, bins=QuantileBins(count))


def categorical(name: str, top_k: int = 20) -> FeatureConfig:
    return FeatureConfig(name, "categorical", 0.5, top_k=top_k)


def assert_same_binning(features: list[FeatureConfig], old: object, new: object) -> None:
    """Learned layouts and per-row bin indices agree for every feature."""
    assert new.n_rows == old.n_rows  # type: ignore[attr-defined]
    for feature in features:
        old_values = old.columns[feature.name]  # type: ignore[attr-defined]
        new_values = new.columns[feature.name]  # type: ignore[attr-defined]
        try:
            old_binner = learn_binner(feature, old_values)
        except ValueError:
            with pytest.raises(ValueError):
                learn_binner(feature, new_values)
            old_binner = None
        binners: list[NumericBinner | CategoricalBinner] = []
        if old_binner is not None:
            new_binner = learn_binner(feature, new_values)
            assert layout_key(new_binner) == layout_key(old_binner), feature.name
            binners.append(old_binner)
        binners.append(
            NumericBinner.uniform(-5, 5, 10)
            if feature.type == "numeric"
            else CategoricalBinner(["a", "b", "3", "true", "north", "web", "DE"])
        )
        for binner in binners:
            np.testing.assert_array_equal(
                binner.index_values(new_values), binner.index_values(old_values), feature.name
            )
            counts_old = np.zeros(binner.n_bins)
            counts_new = np.zeros(binner.n_bins)
            binner.add_values(old_values, counts_old)
            binner.add_values(new_values, counts_new)
            np.testing.assert_array_equal(counts_new, counts_old, feature.name)


def compare_file(path: Path, features: list[FeatureConfig]) -> None:
    fields = [f.name for f in features]
    numeric_fields = [f.name for f in features if f.type == "numeric"]
    old = read_table(path, fields, numeric_fields=numeric_fields)
    new = read_batch(path, fields, numeric_fields=numeric_fields)
    assert_same_binning(features, old, new)


def test_credit_fixture_csv_reads_as_before() -> None:
    path = ROOT / "config/data/credit_reference.csv"
    compare_file(
        path, [numeric("income"), numeric("age"), numeric("utilisation"), categorical("region")]
    )
    # Every column read the other way round too: numbers as categories, text as numbers.
    compare_file(path, [categorical("income"), categorical("age"), numeric("region")])


def test_shop_fixture_ndjson_reads_as_before() -> None:
    path = ROOT / "config/data/shop_reference.ndjson"
    features = [numeric("basket_value"), numeric("items"), categorical("device")]
    compare_file(path, [*features, categorical("country")])
    compare_file(path, [categorical("items", 5), numeric("device")])


def test_payments_replay_fixture_reads_as_before() -> None:
    path = ROOT / "config/replay/payments.csv"
    header = path.read_text().splitlines()[0].split(",")
    compare_file(path, [numeric(name) for name in header])
    compare_file(path, [categorical(name) for name in header])


DIRTY_CSV = """\
x,c,n,extra
1.5,a,3,zz
,b,,1
nan,3,NaN,2
Infinity,,inf,3
-Infinity,true,-inf,4
abc,a, 2.5 ,5
1_000,"",1e500,6
  ,3.0,-0,7
"7",a,+1.5,8
0x10,b,.5,9
"""


def test_dirty_csv_cells_keep_the_csv_rules(tmp_path: Path) -> None:
    path = tmp_path / "dirty.csv"
    path.write_text(DIRTY_CSV)
    features = [numeric("x", 3), categorical("c"), numeric("n", 3), categorical("absent")]
    compare_file(path, features)
    compare_file(path, [categorical("x"), numeric("c"), categorical("n")])
    new = read_batch(path, ["x", "c"], numeric_fields=["x"])
    assert new.unknown_fields == 2 * 10  # columns n and extra


def test_clean_numeric_csv_takes_the_arrow_path(tmp_path: Path) -> None:
    path = tmp_path / "clean.csv"
    path.write_text("x,y\n1,2\n,nan\ninf,-3\n")
    batch = read_batch(path, ["x", "y"], numeric_fields=["x", "y"])
    x = batch.columns["x"]
    assert isinstance(x, np.ndarray) and x.dtype == np.float64
    np.testing.assert_array_equal(x, [1.0, np.nan, np.inf])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True).map(repr),
            st.integers(-(10**20), 10**20).map(str),
            st.text(alphabet="0123456789.eE+-_ xnaifINFAxX", max_size=8),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_numeric_cell_parses_as_python_float_does(cells: list[str]) -> None:
    import tempfile

    cells = [cell.replace('"', "") for cell in cells]
    text = "v,w\n" + "".join(f'"{cell}",{cell}x\n' for cell in cells)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cells.csv"
        path.write_text(text)
        compare_file(path, [numeric("v", 2), categorical("w")])


def write_formats(tmp_path: Path, table: pa.Table) -> list[Path]:
    parquet = tmp_path / "data.parquet"
    pq.write_table(table, parquet)
    arrow_file = tmp_path / "data.feather"
    feather.write_feather(table, arrow_file)
    stream_file = tmp_path / "data.arrows"
    with pa_ipc.new_stream(stream_file, table.schema) as writer:
        writer.write_table(table)
    return [parquet, arrow_file, stream_file]


def typed_table() -> tuple[pa.Table, list[dict[str, object]]]:
    """Columns of every Arrow type the bin rules map, and the same rows as JSON values."""
    rows: list[dict[str, object]] = [
        {"f": 1.5, "i": 3, "s": "a", "b": True, "ts": 1_700_000_000, "n": None},
        {"f": None, "i": None, "s": None, "b": None, "ts": None, "n": None},
        {"f": float("nan"), "i": 7, "s": "3", "b": False, "ts": 1_700_000_100, "n": None},
        {"f": float("inf"), "i": -2, "s": "b", "b": True, "ts": 1_700_000_200, "n": None},
        {"f": -float("inf"), "i": 3, "s": "a", "b": False, "ts": 1_700_000_300, "n": None},
        {"f": 0.25, "i": 2**53 + 1, "s": "", "b": True, "ts": 1_700_000_400, "n": None},
    ]
    table = pa.table(
        {
            "f": pa.array([r["f"] for r in rows], pa.float64()),
            "i": pa.array([r["i"] for r in rows], pa.int64()),
            "s": pa.array([r["s"] for r in rows], pa.string()),
            "s_dict": pa.array([r["s"] for r in rows], pa.string()).dictionary_encode(),
            "b": pa.array([r["b"] for r in rows], pa.bool_()),
            "f32": pa.array([r["f"] for r in rows], pa.float32()),
            "u8": pa.array([None if r["i"] is None else 1 for r in rows], pa.uint8()),
            "n": pa.nulls(len(rows)),
            "l": pa.array([[1], None, [], [2], [3], [4]], pa.list_(pa.int64())),
        }
    )
    json_rows = [
        {**r, "s_dict": r["s"], "f32": r["f"], "u8": None if r["i"] is None else 1,
         "l": table.column("l")[k].as_py()}
        for k, r in enumerate(rows)
    ]  # fmt: skip
    return table, json_rows


@pytest.mark.parametrize("column", ["f", "i", "s", "s_dict", "b", "f32", "u8", "n", "l"])
def test_arrow_types_follow_the_json_rules(tmp_path: Path, column: str) -> None:
    table, json_rows = typed_table()
    ndjson = tmp_path / "rows.ndjson"
    # json.dumps writes NaN/Infinity: the row parser's fallback reads them.
    ndjson.write_text("".join(json.dumps(row) + "\n" for row in json_rows))
    for feature in (numeric(column, 2), categorical(column, 4)):
        numeric_fields = [column] if feature.type == "numeric" else []
        old = read_table(ndjson, [column], numeric_fields=numeric_fields)
        for path in write_formats(tmp_path, table):
            new = read_batch(path, [column], numeric_fields=numeric_fields)
            assert_same_binning([feature], old, new)
            body = arrow_body(table)
            assert_same_binning([feature], old, parse_arrow_body(body, [column], numeric_fields))


def arrow_body(table: pa.Table, max_chunksize: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    return sink.getvalue().to_pybytes()


def test_dictionary_chunks_with_their_own_dictionaries_bin_as_the_values() -> None:
    values = ["a", "b", None, "c", "a", "3", "b", "a"]
    table = pa.table({"s": pa.array(values).dictionary_encode()})
    batches = [
        pa.record_batch({"s": pa.array(values[:3]).dictionary_encode()}),
        pa.record_batch({"s": pa.array(values[3:]).dictionary_encode()}),
    ]
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        for record_batch in batches:
            writer.write_batch(record_batch)
    batch = parse_arrow_body(sink.getvalue().to_pybytes(), ["s"])
    column = batch.columns["s"]
    assert isinstance(column, CodedColumn)
    assert list(column) == values
    assert top_k_categories(column, 2) == ("a", "b")
    binner = CategoricalBinner(["a", "3"])
    np.testing.assert_array_equal(binner.codes(column), binner.codes(values))


def test_arrow_body_errors_name_the_problem() -> None:
    with pytest.raises(BodyError, match="empty body"):
        parse_arrow_body(b"", ["x"])
    with pytest.raises(BodyError, match="invalid Arrow IPC stream"):
        parse_arrow_body(b'{"x": 1}', ["x"])
    duplicated = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["x", "x"])
    with pytest.raises(BodyError, match="column 'x' appears more than once"):
        parse_arrow_body(arrow_body(duplicated), ["x"])


def test_arrow_body_counts_unknown_values_and_fills_absent_fields() -> None:
    table = pa.table({"x": [1.0, 2.0, None], "other": [1, None, 3]})
    batch = parse_arrow_body(arrow_body(table), ["x", "gone"], ["x"])
    assert batch.n_rows == 3
    assert batch.unknown_fields == 2
    assert batch.columns["gone"] == [None, None, None]
    np.testing.assert_array_equal(batch.columns["x"], [1.0, 2.0, math.nan])


def test_csv_read_by_arrow_gives_the_reference_the_old_reader_gave(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "big.csv"
    table = pa.table(
        {
            "x": rng.normal(size=5000),
            "k": rng.choice(["u", "v", "w"], size=5000),
            "z": rng.integers(0, 9, size=5000),
        }
    )
    pa_csv.write_csv(table, path)
    compare_file(path, [numeric("x", 20), categorical("k"), numeric("z", 4)])
    compare_file(path, [categorical("z")])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1.0, 1.0, 2.5]),
            st.integers(-5, 5).map(float),
        ),
        min_size=1,
        max_size=400,
    ),
    st.integers(1, 24),
)
def test_bucketed_quantiles_equal_numpy_bit_for_bit(values: list[float], count: int) -> None:
    array = np.asarray(values, dtype=np.float64)
    q = np.linspace(0.0, 1.0, count + 1)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        with pytest.raises(ValueError):
            finite_quantiles(array, q, min_values=1)
        return
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.quantile(finite, q)
        got = finite_quantiles(array, q, min_values=1)
    assert_same_quantiles(got, want)


def assert_same_quantiles(got: np.ndarray, want: np.ndarray) -> None:
    """Bit for bit, but for the sign of a zero: which of 0.0 and -0.0 numpy's own
    partition puts at a rank depends on where they sat, so neither sign is "the" answer."""
    np.testing.assert_array_equal(got, want)
    nonzero = want != 0
    assert got[nonzero].tobytes() == want[nonzero].tobytes()


def test_bucketed_quantiles_on_large_columns_equal_numpy() -> None:
    rng = np.random.default_rng(7)
    q = np.linspace(0.0, 1.0, 11)
    columns = [
        np.round(rng.normal(size=300_000), 3),
        rng.integers(0, 4, 200_000).astype(np.float64),
        np.concatenate(
            [rng.standard_cauchy(100_000), [np.inf] * 7, [-np.inf] * 30_000, [np.nan] * 9]
        ),
        np.sort(rng.exponential(size=100_000))[::-1].copy(),
    ]
    for column in columns:
        want = np.quantile(column[np.isfinite(column)], q)
        assert_same_quantiles(finite_quantiles(column, q), want)



@pytest.mark.parametrize(
    ("make", "uniform"),
    [
        (lambda rng: np.round(rng.normal(size=300_000), 4), True),
        (lambda rng: rng.uniform(-5, 5, 300_000), True),
        (lambda rng: rng.lognormal(0, 3, 300_000), False),  # one bucket would hold most values
        (lambda rng: rng.integers(0, 4, 300_000).astype(np.float64), False),
    ],
)
def test_both_bucket_kinds_give_numpys_quantiles_and_the_binned_counts(
    make: Callable[[np.random.Generator], np.ndarray], uniform: bool
) -> None:
    from driftmon.binning import edges_from_quantiles, quantile_levels
    from driftmon.quantiles import QuantileSearch

    column = make(np.random.default_rng(5))
    column[:5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    chunks = np.array_split(column, 3)
    search = QuantileSearch(chunks)
    assert (search._binner.kind == "uniform") is uniform
    q = quantile_levels(10)
    got = search.quantiles(q)
    assert_same_quantiles(got, np.quantile(column[np.isfinite(column)], q))
    binner = NumericBinner.from_edges(edges_from_quantiles(got))
    want = np.zeros(binner.n_bins)
    binner.add(column, want)
    counts = search.counts(binner)
    assert counts is not None
    np.testing.assert_array_equal(counts, want)


def payments_as_parquet(tmp_path: Path, timestamps: bool) -> Path:
    """config/replay/payments.csv as Parquet: ``ts`` as Arrow timestamps or as its text."""
    table = pa_csv.read_csv(
        ROOT / "config/replay/payments.csv",
        convert_options=pa_csv.ConvertOptions(
            column_types={"ts": pa.string(), "channel": pa.string(), "country": pa.string()}
        ),
    )
    if timestamps:
        seconds = [
            np.datetime64(text.replace("Z", ""), "ms").astype(np.int64)
            for text in table.column("ts").to_pylist()
        ]
        parsed = pa.array(seconds, pa.int64()).cast(pa.timestamp("ms", "UTC"))
        table = table.set_column(table.column_names.index("ts"), "ts", parsed)
    path = tmp_path / f"payments-{timestamps}.parquet"
    pq.write_table(table, path, row_group_size=1000)
    return path


@pytest.mark.parametrize("timestamps", [True, False])
def test_replay_of_parquet_prints_what_replay_of_the_csv_prints(
    tmp_path: Path, timestamps: bool
) -> None:
    import io

    from driftmon.config import load_config
    from driftmon.tools.replay import replay

    config = load_config(ROOT / "config/replay/payments.yaml")
    from_csv, from_parquet = io.StringIO(), io.StringIO()
    replay(config, "payments", ROOT / "config/replay/payments.csv", from_csv)
    path = payments_as_parquet(tmp_path, timestamps)
    replay(config, "payments", path, from_parquet, chunk_rows=777)
    assert from_parquet.getvalue() == from_csv.getvalue()
    assert from_csv.getvalue().count("\n") > 100


def test_reference_build_from_parquet_equals_the_build_from_csv(tmp_path: Path) -> None:
    import contextlib
    import io

    from driftmon.cli import main

    config = str(ROOT / "config/replay/payments.yaml")
    outputs = {}
    for name, source in [
        ("csv", ROOT / "config/replay/payments.csv"),
        ("parquet", payments_as_parquet(tmp_path, True)),
    ]:
        outputs[name] = tmp_path / f"{name}.npz"
        with contextlib.redirect_stdout(io.StringIO()):
            status = main(["reference", "build", "-c", config, "--stream", "payments",
                           "--input", str(source), "-o", str(outputs[name])])  # fmt: skip
        assert status == 0
    with np.load(outputs["csv"]) as want, np.load(outputs["parquet"]) as got:
        assert sorted(want.files) == sorted(got.files)
        for name in want.files:
            if name != "meta":
                np.testing.assert_array_equal(got[name], want[name], name)


def exotic_columns() -> dict[str, pa.Array]:
    """Three rows (the middle one null where the type allows) of Arrow types JSON lacks."""
    import decimal

    return {
        "float16": pa.array(np.array([1.5, np.nan, 2], np.float16), mask=np.array([0, 0, 1], bool)),
        "decimal256": pa.array([decimal.Decimal("1.5"), None, decimal.Decimal("2")],
                               pa.decimal256(40, 2)),  # fmt: skip
        "string_view": pa.array(["a", None, "b"], pa.string_view()),
        "binary_view": pa.array([b"a", None, b"b"], pa.binary_view()),
        "large_list": pa.array([[1], None, [2]], pa.large_list(pa.int64())),
        "struct": pa.array([{"a": 1}, None, {"a": 2}]),
        "map": pa.array([[("a", 1)], None, []], pa.map_(pa.string(), pa.int64())),
        "union": pa.UnionArray.from_sparse(
            pa.array([0, 1, 0], pa.int8()), [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])]
        ),
        "dict_struct": pa.DictionaryArray.from_arrays(
            pa.array([0, None, 0], pa.int8()), pa.array([{"a": 1}])
        ),
        "dict_float": pa.DictionaryArray.from_arrays(
            pa.array([0, None, 1], pa.int8()), pa.array([1.5, float("nan")])
        ),
        "time32": pa.array([1, None, 2], pa.time32("s")),
        "duration": pa.array([1, None, 2], pa.duration("s")),
        "fixed_binary": pa.array([b"ab", None, b"cd"], pa.binary(2)),
        "interval": pa.array([pa.MonthDayNano([1, 2, 3]), None, pa.MonthDayNano([1, 2, 3])],
                             pa.month_day_nano_interval()),  # fmt: skip
        "run_end_float": pa.RunEndEncodedArray.from_arrays(
            pa.array([2, 3], pa.int32()), pa.array([1.5, None])
        ),
        "run_end_text": pa.RunEndEncodedArray.from_arrays(
            pa.array([2, 3], pa.int32()), pa.array(["a", None])
        ),
        "uint64": pa.array([2**64 - 1, None, 3], pa.uint64()),
    }


@pytest.mark.parametrize("name", sorted(exotic_columns()))
def test_any_arrow_type_bins_without_error_into_every_row(name: str) -> None:
    column = exotic_columns()[name]
    body = arrow_body(pa.table({name: column}))
    for numeric in (True, False):
        batch = parse_arrow_body(body, [name], [name] if numeric else [])
        binner = (
            NumericBinner.uniform(0, 4, 4) if numeric else CategoricalBinner(["a", "1", "1.5"])
        )
        counts = np.zeros(binner.n_bins)
        binner.add_values(batch.columns[name], counts)
        assert counts.sum() == 3, (name, numeric)
        decoded = column.to_pylist() if name != "run_end_float" else [1.5, 1.5, None]
        if name in ("float16", "decimal256", "run_end_float", "dict_float") and numeric:
            # Numbers: the same bins as the decoded Python floats.
            expected = np.zeros(binner.n_bins)
            binner.add_values([None if v is None else float(v) for v in decoded], expected)
            np.testing.assert_array_equal(counts, expected)
        if name == "run_end_text" and not numeric:
            assert counts.tolist() == [2, 0, 0, 0, 1, 0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True, width=32),
            st.sampled_from([0.0, -0.0, 1.0, 1.0, 2.5, math.inf, -math.inf]),
        ),
        min_size=1,
        max_size=300,
    ),
    st.integers(1, 12),
    st.integers(1, 4),
)
def test_counts_from_the_bucket_pass_equal_binning_again(
    values: list[float], count: int, n_chunks: int
) -> None:
    from driftmon.binning import edges_from_quantiles, quantile_levels
    from driftmon.quantiles import QuantileSearch

    array = np.asarray(values, dtype=np.float64)
    chunks = np.array_split(array, n_chunks)
    search = QuantileSearch(chunks, min_values=1)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            binner = NumericBinner.from_edges(
                edges_from_quantiles(search.quantiles(quantile_levels(count)))
            )
    except ValueError:
        return  # no finite value, or fewer than two distinct quantiles
    want = np.zeros(binner.n_bins)
    binner.add(array, want)
    got = search.counts(binner)
    assert got is not None
    np.testing.assert_array_equal(got, want)


def test_a_parquet_reference_of_many_row_groups_loads_as_its_values_bin(tmp_path: Path) -> None:
    from driftmon.config import ReferenceConfig, SampleWindow, StreamConfig
    from driftmon.reference import load_reference_file

    rng = np.random.default_rng(11)
    n = 200_000
    x = np.round(rng.normal(size=n), 3)
    x[rng.integers(0, n, 500)] = np.nan
    x[:3] = [np.inf, -np.inf, np.inf]
    ties = rng.integers(0, 3, n).astype(np.float64)
    path = tmp_path / "reference.parquet"
    pq.write_table(pa.table({"x": x, "t": ties}), path, row_group_size=30_000)
    stream = StreamConfig(
        name="s",
        reference=ReferenceConfig(kind="file", path=path, format="parquet"),
        window=SampleWindow(10),
        features=(numeric("x", 10), numeric("t", 10)),
    )
    reference = load_reference_file(stream, path)
    for column, binner, counts in zip((x, ties), reference.binners, reference.counts, strict=True):
        finite = column[np.isfinite(column)]
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, 11)))
        edges[-1] = np.nextafter(edges[-1], np.inf)  # the maximum lies in a regular bin
        assert isinstance(binner, NumericBinner)
        np.testing.assert_array_equal(binner.edges, edges)
        want = np.zeros(binner.n_bins)
        binner.add(column, want)
        np.testing.assert_array_equal(counts, want)


def test_one_list_of_data_formats_for_the_config_the_cli_and_the_readers() -> None:
    from typing import get_args

    from driftmon.config import DataFormat
    from driftmon.sources.media import DATA_FORMATS, FILE_FORMATS, TEXT_FORMATS, file_format

    assert get_args(DataFormat) == DATA_FORMATS
    assert set(FILE_FORMATS.values()) == set(DATA_FORMATS)
    assert file_format(Path("x.PQ")) == "parquet"
    with pytest.raises(ValueError, match="^format: cannot tell .* give the format"):
        file_format(Path("x.parquet"), None, TEXT_FORMATS)
