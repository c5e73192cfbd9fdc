"""References from files, warmups and snapshots (docs/configuration.md).

Layouts learned from data (quantile edges, top-k categories) and counts are
checked against the naive recomputations of tests/test_engine.py. Snapshots
must round-trip exactly and be refused, with a ``ReferenceError`` and
without running anything, when they do not fit the config or are not
snapshots at all.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_engine import (
    ALL_FEATURES,
    CATEGORIES,
    EDGES,
    QUANTILE,
    TOP_K,
    UNIFORM,
    csv_cell,
    make_config,
    naive_counts,
    naive_layout,
    random_rows,
    stream_doc,
)

from driftmon.binning import NumericBinner
from driftmon.config import StreamConfig
from driftmon.engine import Engine
from driftmon.reference import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    Reference,
    ReferenceError,
    build_reference,
    layout_key,
    load_reference_file,
    load_snapshot,
    save_snapshot,
)

FIELDS = [f["name"] for f in ALL_FEATURES]


@pytest.mark.parametrize("distribution", ["normal", "lognormal", "ties"])
def test_a_large_column_learns_quantiles_that_hold_the_whole_reference(distribution: str) -> None:
    """The one-pass quantile search of large float columns (driftmon.quantiles) ends the
    layout above the maximum too: no reference value in underflow or overflow."""
    rng = np.random.default_rng(21)
    values = {
        "normal": rng.normal(size=200_000),
        "lognormal": rng.lognormal(size=200_000),
        "ties": np.round(rng.normal(size=200_000), 1),
    }[distribution]
    feature = {"name": "q", "type": "numeric", "bins": {"kind": "quantile", "count": 10}}
    stream = make_config([stream_doc(features=[feature])]).stream("s")
    reference = build_reference(stream, values.size, {"q": values})
    binner = reference.binners[0]
    assert isinstance(binner, NumericBinner)
    counts = reference.counts[0]
    assert counts[0] == 0 and counts[binner.n_regular + 1] == 0
    assert counts[1 : binner.n_regular + 1].sum() == values.size
    assert binner.edges[-1] == np.nextafter(values.max(), np.inf)


# --- learned layouts hold their own reference --------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, width=64),
            st.integers(min_value=-(2**53), max_value=2**53),
            st.floats(min_value=-1e3, max_value=1e3),
            st.sampled_from([0.0, 1.0, -1.0, 5e-324, None, float("nan"), "x"]),
        ),
        min_size=1,
        max_size=200,
    ),
    count=st.integers(min_value=1, max_value=64),
)
def test_a_learned_layout_puts_every_finite_reference_value_in_a_regular_bin(
    values: list[Any], count: int
) -> None:
    """Every layout learned from data (quantile edges; top-k has no edges): after learning,
    the reference's underflow and overflow counts are 0 and its regular bins hold every
    finite number."""
    feature = {"name": "q", "type": "numeric", "bins": {"kind": "quantile", "count": count}}
    stream = make_config([stream_doc(features=[feature])]).stream("s")
    try:
        reference = build_reference(stream, len(values), {"q": values})
    except ReferenceError as error:
        # Constant data, a span float64 cannot interpolate over, or a maximum with no
        # float above it: refused with a message, never mis-binned.
        refusals = (
            "distinct quantiles",
            "interpolate",
            "largest float64",
            "no finite",
            "absent from the input",  # no value at all: most likely the wrong file
        )
        assume(not any(reason in str(error) for reason in refusals))
        raise
    binner = reference.binners[0]
    assert isinstance(binner, NumericBinner)
    counts = reference.counts[0]
    n = binner.n_regular
    finite = [
        v for v in values if type(v) in (int, float) and np.isfinite(float(v))
    ]
    assert counts[0] == 0, "underflow"
    assert counts[n + 1] == 0, "overflow"
    assert counts[1 : n + 1].sum() == len(finite)
    assert binner.edges[-1] == np.nextafter(max(float(v) for v in finite), np.inf)


def write_rows(path: Path, rows: Sequence[Mapping[str, object]], fmt: str) -> Path:
    """Write rows as a CSV, NDJSON or JSON-array file."""
    if fmt == "csv":
        lines = [",".join(FIELDS)]
        lines += [",".join(csv_cell(row.get(name)) for name in FIELDS) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "ndjson":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


def assert_reference_is_naive(
    reference: Reference,
    features: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, object]],
) -> None:
    """Each feature's layout and counts are those docs/configuration.md#bins gives the rows."""
    assert reference.rows == len(rows)
    for feature, binner, counts in zip(features, reference.binners, reference.counts, strict=True):
        name = feature["name"]
        values = [row.get(name) for row in rows]
        layout = naive_layout(feature, values)
        if layout[0] == "categorical":
            assert list(binner.categories) == layout[1], name  # type: ignore[union-attr]
        else:
            assert (
                binner.n_bins == (layout[3] if layout[0] == "uniform" else len(layout[1]) - 1) + 4
            )
            if layout[0] == "edges":
                np.testing.assert_array_equal(binner.edges, layout[1])  # type: ignore[union-attr]
        np.testing.assert_array_equal(counts, naive_counts(layout, values), err_msg=name)


def sample_stream(tmp_path: Path, reference: Mapping[str, Any] | None = None) -> StreamConfig:
    """A stream with every kind of feature (uniform, edges, quantile, categories, top_k)."""
    return make_config([stream_doc(reference=reference)], base_dir=tmp_path).stream("s")


# --- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
def test_a_reference_file_in_every_format_gives_the_naive_layouts_and_counts(
    fmt: str, tmp_path: Path
) -> None:
    rows = random_rows(np.random.default_rng(7), 400, shift=0.0, containers=False)
    path = write_rows(tmp_path / f"reference.{fmt}", rows, fmt)
    stream = sample_stream(tmp_path, {"file": path.name})
    assert stream.reference.path == path
    reference = load_reference_file(stream, path, stream.reference.format)
    assert_reference_is_naive(reference, ALL_FEATURES, rows)
    # The engine loads the same reference from the config on its own.
    engine = Engine(make_config([stream_doc(reference={"file": str(path)})]), now=0.0)
    np.testing.assert_array_equal(engine.reference, np.concatenate(reference.counts))
    assert [layout_key(m.binner) for m in engine.monitors] == [
        layout_key(b) for b in reference.binners
    ]


def test_every_format_of_the_same_rows_gives_the_same_reference(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(8), 300, shift=0.5, containers=False)
    stream = sample_stream(tmp_path)
    loaded = [
        load_reference_file(stream, write_rows(tmp_path / f"r.{fmt}", rows, fmt))
        for fmt in ("csv", "ndjson", "json")
    ]
    for other in loaded[1:]:
        assert other.binners == loaded[0].binners
        for a, b in zip(other.counts, loaded[0].counts, strict=True):
            np.testing.assert_array_equal(a, b)


def test_format_overrides_the_suffix(tmp_path: Path) -> None:
    rows = [{"u": 1.0, "c": "a"}, {"u": 2.5, "c": "b"}]
    path = write_rows(tmp_path / "reference.txt", rows, "ndjson")
    doc = stream_doc(
        features=(UNIFORM, CATEGORIES), reference={"file": str(path), "format": "ndjson"}
    )
    engine = Engine(make_config([doc]), now=0.0)
    assert engine.reference_samples.tolist() == [2.0, 2.0]


def test_a_warmup_reference_equals_the_file_reference_of_the_same_rows(tmp_path: Path) -> None:
    rows = random_rows(np.random.default_rng(9), 120, shift=0.0, containers=True)
    file_reference = load_reference_file(
        sample_stream(tmp_path), write_rows(tmp_path / "r.ndjson", rows, "ndjson")
    )
    engine = Engine(make_config([stream_doc(reference={"warmup": len(rows)})]), now=0.0)
    for start in range(0, len(rows), 50):  # the warmup ends inside the third batch
        chunk = rows[start : start + 50]
        engine.ingest("s", len(chunk), {n: [r.get(n) for r in chunk] for n in FIELDS}, 0.0)
    assert [m.binner for m in engine.monitors] == list(file_reference.binners)
    np.testing.assert_array_equal(engine.reference, np.concatenate(file_reference.counts))


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("u,q,t\n", "csv", "holds no rows"),
        ('[{"u": 1}, {"u": ', "json", "line 1"),
        ('{"u": 1}\n[1]\n', "ndjson", "line 2"),
        ("u,t\n1,x\n2\n", "csv", "line 3"),
        ("u,q,t\n1,5,\n2,6,\n", "csv", "'t'.*no valid category"),
        ("u,q\n1,5\n2,6\n", "csv", "column 't' is absent from the input"),
        ("u,q,t\n1,5,x\n2,5,y\n", "csv", "'q'.*cannot learn quantile bins"),
    ],
)
def test_a_reference_file_that_cannot_define_a_reference_is_refused(
    content: str, suffix: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / f"reference.{suffix}"
    path.write_text(content)
    stream = make_config([stream_doc(features=(UNIFORM, QUANTILE, TOP_K))]).stream("s")
    with pytest.raises(ReferenceError, match=message):
        load_reference_file(stream, path)


def test_an_unreadable_reference_file_is_a_reference_error(tmp_path: Path) -> None:
    stream = sample_stream(tmp_path)
    with pytest.raises(ReferenceError, match="cannot read reference file .*missing.csv"):
        load_reference_file(stream, tmp_path / "missing.csv")


# --- snapshots -------------------------------------------------------------------------------


def built_snapshot(tmp_path: Path, seed: int = 1) -> tuple[StreamConfig, Reference, Path]:
    """A reference of every feature kind, saved as a snapshot."""
    stream = sample_stream(tmp_path)
    rows = random_rows(np.random.default_rng(seed), 250, shift=0.0, containers=True)
    reference = build_reference(stream, len(rows), {n: [r.get(n) for r in rows] for n in FIELDS})
    path = tmp_path / "reference.npz"
    save_snapshot(path, stream, reference)
    return stream, reference, path


def test_a_snapshot_round_trips_counts_layouts_and_rows(tmp_path: Path) -> None:
    stream, reference, path = built_snapshot(tmp_path)
    loaded = load_snapshot(path, stream)
    assert loaded.rows == reference.rows
    assert loaded.binners == reference.binners
    assert [layout_key(b) for b in loaded.binners] == [layout_key(b) for b in reference.binners]
    for a, b in zip(loaded.counts, reference.counts, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["reference.npz"]  # no temporary left behind
    # And through the config, as `reference: {snapshot: PATH}`.
    engine = Engine(make_config([stream_doc(reference={"snapshot": str(path)})]), now=0.0)
    np.testing.assert_array_equal(engine.reference, np.concatenate(reference.counts))


def test_a_snapshot_bins_live_values_exactly_as_the_config_does(tmp_path: Path) -> None:
    """A uniform layout loaded from a snapshot keeps its formula, not just its edges.

    The snapshot stores edges; uniform(0.1, 0.7, 3) binned by those edges
    would put 0.3 one bin lower than the uniform formula (the edge is
    0.30000000000000004), so reference and live counts would disagree.
    """
    bins = {"kind": "uniform", "lo": 0.1, "hi": 0.7, "count": 3}
    feature = {"name": "x", "type": "numeric", "bins": bins}
    values = [0.3, 0.3, 0.5, 0.2, 0.65]
    stream = make_config([stream_doc(features=(feature,))]).stream("s")
    configured = NumericBinner.uniform(0.1, 0.7, 3)
    by_edges = NumericBinner.from_edges(configured.edges)
    assert by_edges.index(np.array([0.3]))[0] != configured.index(np.array([0.3]))[0]
    path = tmp_path / "x.npz"
    save_snapshot(path, stream, build_reference(stream, len(values), {"x": values}))
    config = make_config([stream_doc(features=(feature,), reference={"snapshot": str(path)})])
    engine = Engine(config, now=0.0)
    assert engine.monitor("s", "x").binner == configured
    engine.ingest("s", len(values), {"x": np.array(values)}, 0.0)
    np.testing.assert_array_equal(engine.live, engine.reference)
    assert engine.evaluate(0.0).values["js"][0] == 0.0


def test_saving_over_an_existing_snapshot_replaces_it(tmp_path: Path) -> None:
    stream, _, path = built_snapshot(tmp_path, seed=1)
    rows = random_rows(np.random.default_rng(2), 90, shift=1.0, containers=False)
    second = build_reference(stream, len(rows), {n: [r.get(n) for r in rows] for n in FIELDS})
    save_snapshot(path, stream, second)
    assert load_snapshot(path, stream).rows == 90


def test_saving_a_snapshot_fsyncs_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename over the old snapshot is made durable, as a checkpoint's is."""
    stream, _, path = built_snapshot(tmp_path, seed=1)
    rows = random_rows(np.random.default_rng(2), 90, shift=1.0, containers=False)
    second = build_reference(stream, len(rows), {n: [r.get(n) for r in rows] for n in FIELDS})
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_snapshot(path, stream, second)
    assert synced == [False, True]  # the file, then the folder holding it


def test_a_failed_snapshot_write_keeps_the_old_one_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, _, path = built_snapshot(tmp_path, seed=1)
    before = path.read_bytes()

    def failing_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        save_snapshot(path, stream, load_snapshot(path, stream))
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_learned_layouts_come_from_the_snapshot_with_any_larger_count(tmp_path: Path) -> None:
    _, reference, path = built_snapshot(tmp_path)
    wider = [{**QUANTILE, "bins": {"kind": "quantile", "count": 9}}, {**TOP_K, "top_k": 5}]
    features = [UNIFORM, EDGES, wider[0], CATEGORIES, wider[1]]
    stream = make_config([stream_doc(features=features)]).stream("s")
    loaded = load_snapshot(path, stream)
    assert loaded.binners == reference.binners  # the snapshot's edges and categories, kept


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"u": {**UNIFORM, "bins": {**UNIFORM["bins"], "count": 6}}}, "'u'.*other bins"),
        ({"e": {**EDGES, "bins": {"kind": "edges", "edges": [-1, 0, 1, 2, 8]}}}, "'e'.*other bins"),
        ({"c": {**CATEGORIES, "categories": ["a", "b"]}}, "'c'.*other bins"),
        ({"q": {**QUANTILE, "bins": {"kind": "quantile", "count": 2}}}, "'q' has 4 quantile bins"),
        ({"t": {**TOP_K, "top_k": 1}}, "'t' has 2 categories, the config's top_k is 1"),
        ({"u": {"name": "u", "type": "categorical", "top_k": 3}}, "'u' is numeric there"),
        ({"t": {**TOP_K, "name": "t2"}}, r"covers features \['u', 'e', 'q', 'c', 't'\]"),
    ],
)  # fmt: skip
def test_a_snapshot_whose_layout_does_not_match_the_config_is_refused(
    changed: dict[str, dict[str, Any]], message: str, tmp_path: Path
) -> None:
    _, _, path = built_snapshot(tmp_path)
    features = [changed.get(f["name"], f) for f in ALL_FEATURES]
    doc = stream_doc(features=features, reference={"snapshot": str(path)})
    stream = make_config([doc]).stream("s")
    with pytest.raises(ReferenceError, match=message):
        load_snapshot(path, stream)
    with pytest.raises(ReferenceError, match="reference.npz"):
        Engine(make_config([doc]), now=0.0)


def test_a_snapshot_without_a_feature_the_config_adds_is_refused(tmp_path: Path) -> None:
    _, _, path = built_snapshot(tmp_path)
    extra = {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 3}}
    stream = make_config([stream_doc(features=[*ALL_FEATURES, extra])]).stream("s")
    with pytest.raises(ReferenceError, match="rebuild it with `driftmon reference build`"):
        load_snapshot(path, stream)


# --- files that are not good snapshots ----------------------------------------------------------


def _touch(path: str) -> None:
    """What the pickle below runs when a loader lets it: leave a mark."""
    Path(path).write_text("executed")


class _Payload:
    """An object whose unpickling calls :func:`_touch` (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_touch, (self.marker,))


def _members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _with(path: Path, **arrays: Any) -> Path:
    """A copy of the snapshot at ``path`` with some members replaced or added."""
    members = {**_members(path), **arrays}
    out = path.with_name("edited.npz")
    np.savez(out, **members)
    return out


def _meta(path: Path) -> dict[str, Any]:
    return json.loads(_members(path)["meta"].tobytes())


def _meta_array(meta: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def test_a_snapshot_holding_a_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    stream, _, path = built_snapshot(tmp_path)
    marker = tmp_path / "marker"
    evil = np.array([_Payload(marker)], dtype=object)
    for member in ("counts/0", "meta", "extra"):
        poisoned = path.with_name(f"poisoned-{member.replace('/', '-')}.npz")
        np.savez(poisoned, **{**_members(path), member: evil})  # np.savez pickles object arrays
        with pytest.raises(ReferenceError, match="cannot read reference snapshot"):
            load_snapshot(poisoned, stream)
        assert not marker.exists()
    # The file really carries code: a loader that allows pickles runs it.
    with np.load(poisoned, allow_pickle=True) as archive:
        archive["extra"]
    assert marker.read_text() == "executed"


def test_a_pickle_file_named_like_a_snapshot_is_refused_without_running_it(tmp_path: Path) -> None:
    stream = sample_stream(tmp_path)
    marker = tmp_path / "marker"
    path = tmp_path / "reference.npz"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ReferenceError, match="cannot read reference snapshot"):
        load_snapshot(path, stream)
    assert not marker.exists()


def _truncated(path: Path) -> Path:
    out = path.with_name("truncated.npz")
    out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


def _flipped(path: Path) -> Path:
    """The snapshot with one byte of a member's data flipped (its CRC no longer matches)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("counts/0.npy")
    # The member's data starts after its local header (30 bytes + name + extra).
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size - 1] ^= 0xFF
    out = path.with_name("flipped.npz")
    out.write_bytes(bytes(data))
    return out


def _npy(path: Path) -> Path:
    out = path.with_name("array.npz")
    with out.open("wb") as handle:
        np.save(handle, np.arange(3.0))
    return out


def _text(path: Path) -> Path:
    out = path.with_name("text.npz")
    out.write_text("income,age\n1,2\n")
    return out


def _empty(path: Path) -> Path:
    out = path.with_name("empty.npz")
    out.write_bytes(b"")
    return out


def _other_zip(path: Path) -> Path:
    out = path.with_name("other.npz")
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "not a snapshot")
    return out


def _meta_edit(**changes: Any) -> Any:
    def edit(path: Path) -> Path:
        meta = _meta(path)
        for key, value in changes.items():
            meta[key] = value(meta) if callable(value) else value
        return _with(path, meta=_meta_array(meta))

    return edit


def _member(name: str, value: Any) -> Any:
    return lambda path: _with(path, **{name: value})


def _without(name: str) -> Any:
    def edit(path: Path) -> Path:
        members = _members(path)
        del members[name]
        out = path.with_name("without.npz")
        np.savez(out, **members)
        return out

    return edit


def _categories_as_text(meta: dict[str, Any]) -> list[Any]:
    """Feature metadata whose category list (feature 3, ``c``) is a string."""
    features = list(meta["features"])
    features[3] = {**features[3], "categories": "ab"}
    return features


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_truncated, "cannot read reference snapshot"),
        (_flipped, "cannot read reference snapshot"),
        (_npy, "cannot read reference snapshot"),
        (_text, "cannot read reference snapshot"),
        (_empty, "cannot read reference snapshot"),
        (_other_zip, "no readable metadata"),
        (_without("meta"), "no readable metadata"),
        (_member("meta", np.frombuffer(b"\xff\xfe{", dtype=np.uint8)), "no readable metadata"),
        (_member("meta", _meta_array([1, 2])), "is not a driftmon reference snapshot"),
        (_meta_edit(format="something-else"), "is not a driftmon reference snapshot"),
        (_meta_edit(version=SNAPSHOT_VERSION + 1), "format version 2.*rebuild it"),
        (_meta_edit(features="u,e"), "covers features None"),
        (_meta_edit(features=["u", "e", "q", "c", "t"]), "malformed"),
        (_meta_edit(features=lambda m: [*m["features"][:2], 7, *m["features"][3:]]), "malformed"),
        (_meta_edit(rows=-1), "malformed row count -1"),
        (_meta_edit(rows="250"), "malformed row count '250'"),
        (_without("counts/2"), "'q' has malformed counts"),
        (_without("edges/0"), "'u' has a malformed layout"),
        (_member("counts/0", np.full(9, -1.0)), "'u' has malformed counts"),
        (_member("counts/0", np.full(9, np.nan)), "'u' has malformed counts"),
        (_member("counts/0", np.zeros(8)), "'u' has malformed counts"),
        (_member("counts/0", np.array(["x"] * 9)), "'u' has malformed counts"),
        (_member("counts/0", np.full(9, 1 + 1j)), "'u' has malformed counts"),
        (_member("edges/1", np.array([3.0, 2.0, 1.0])), "'e' has a malformed layout"),
        (_member("edges/2", np.zeros((2, 2))), "'q' has a malformed layout"),
        (_meta_edit(features=_categories_as_text), "'c' has a malformed layout"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_good_snapshot_is_refused_with_a_reference_error(
    make: Any, message: str, tmp_path: Path
) -> None:
    stream, _, path = built_snapshot(tmp_path)
    bad = make(path)
    with pytest.raises(ReferenceError, match=message):
        load_snapshot(bad, stream)


def test_snapshot_metadata_is_plain_json(tmp_path: Path) -> None:
    stream, reference, path = built_snapshot(tmp_path)
    meta = _meta(path)
    assert meta["format"] == SNAPSHOT_FORMAT and meta["version"] == SNAPSHOT_VERSION
    assert meta["stream"] == "s" and meta["rows"] == reference.rows
    assert [f["name"] for f in meta["features"]] == FIELDS
    assert [f["type"] for f in meta["features"]] == [f.type for f in stream.features]
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                assert b"pickle" not in member.read()
