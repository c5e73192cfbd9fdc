"""Checkpoints (docs/durability.md): exact round trips, atomic writes, corrupt files moved aside."""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftmon.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    LoadedCheckpoint,
    move_aside,
    read_checkpoint,
    remove_stale_temporaries,
    restore_or_move_aside,
    write_checkpoint,
)
from driftmon.config import AlertRule, Config, parse_config
from driftmon.engine import Engine, EngineState, StreamState, stream_fingerprint

T0 = 1_000_000.0
SAVED_AT = T0 + 330.0
MAGIC = b"DRIFTMON-CHECKPOINT\n"


# --- a real engine with every kind of state -------------------------------------------


def make_config(folder: Path) -> Config:
    """Three streams: a file reference with a time window, a frozen warmup with a
    sample window, a warmup still collecting; rules that end inactive, pending,
    firing, and firing-but-cleared (``keep_firing_for`` running)."""
    rng = np.random.default_rng(7)
    lines = ["income,age,region,utilisation"]
    for _ in range(200):
        region = rng.choice(["north", "south", "east"], p=[0.5, 0.3, 0.2])
        lines.append(
            f"{rng.normal(50, 10):.3f},{rng.integers(18, 90)},{region},{rng.uniform(0, 1):.3f}"
        )
    (folder / "credit.csv").write_text("\n".join(lines) + "\n")
    document = {
        "state": {"dir": str(folder / "state")},
        "streams": [
            {
                "name": "credit",
                "reference": {"file": "credit.csv"},
                "window": {"length": "10m", "panes": 10},
                "features": [
                    {"name": "income", "type": "numeric", "bins": {"kind": "quantile", "count": 4}},
                    {
                        "name": "age",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 18, "hi": 98, "count": 8},
                    },
                    {"name": "region", "type": "categorical", "top_k": 2},
                    {
                        "name": "utilisation",
                        "type": "numeric",
                        "bins": {"kind": "edges", "edges": [0, 0.1, 0.5, 1]},
                    },
                ],
            },
            {
                "name": "churn",
                "reference": {"warmup": 30},
                "window": {"samples": 25},
                "features": [
                    {
                        "name": "score",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 5},
                    },
                    {"name": "plan", "type": "categorical", "categories": ["free", "pro", "team"]},
                ],
            },
            {
                "name": "fresh",
                "reference": {"warmup": 1000},
                "window": {"length": "1h", "panes": 4},
                "features": [
                    {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 3}},
                    {"name": "tag", "type": "categorical", "top_k": 2},
                ],
            },
        ],
        "alerts": [
            {
                "name": "js-now",
                "match": {"stream": "*", "feature": "*"},
                "metric": "js",
                "threshold": 0.05,
            },
            {
                "name": "psi-slow",
                "match": {"stream": "credit", "feature": "*"},
                "metric": "psi",
                "threshold": 0.05,
                "for": "1h",
            },
            {
                "name": "kl-keep",
                "match": {"stream": "churn", "feature": "*"},
                "metric": "kl",
                "threshold": 0.3,
                "clear_below": 0.1,
                "keep_firing_for": "10m",
                "min_samples": 1,
                "max_p_value": 0.5,
                "severity": "page",
            },
        ],
    }
    return parse_config(document, base_dir=folder)


def credit_rows(rng: np.random.Generator, n: int) -> dict[str, list[object]]:
    return {
        "income": list(rng.normal(80, 10, n)),
        "age": [int(a) for a in rng.integers(18, 90, n)],
        "region": list(rng.choice(["north", "south", "west"], n)),
        "utilisation": list(rng.uniform(0, 1, n)),
    }


def churn_rows(n: int, *, drifted: bool) -> dict[str, list[object]]:
    scores: list[object] = [0.95] * n if drifted else [(i % 5) / 5 + 0.1 for i in range(n)]
    return {"score": scores, "plan": [["free", "pro", "team"][i % 3] for i in range(n)]}


# Decoded-JSON oddities a warmup must keep exactly (docs/configuration.md#bins: they are data).
ODD_VALUES: list[object] = [
    None,
    True,
    False,
    0,
    -0.0,
    7,
    2**80,
    -(2**5000) + 3,
    2**20000 + 1,  # over Python's 4300-digit int/str limit
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    5e-324,
    "b",
    "",
    "\ud800 lone surrogate",
    "naïve ✓",
    [1, [2.5, None], {"k": "v"}],
    {"$int": "ff", "other": [True]},
    {"plain": {"nested": -1}},
]


def fresh_rows(start: int, n: int) -> dict[str, list[object]]:
    xs: list[object] = []
    tags: list[object] = []
    for i in range(start, start + n):
        odd = ODD_VALUES[i % len(ODD_VALUES)]
        xs.append(odd if i % 3 == 0 else float(i % 17))
        tags.append(odd if i % 3 == 1 else ["a", "b", "c"][i % 3])
    return {"x": xs, "tag": tags}


def scripted_engine(config: Config) -> Engine:
    """The engine the round-trip tests save: every kind of state is present."""
    rng = np.random.default_rng(11)
    engine = Engine(config, now=T0)
    engine.ingest("credit", 40, credit_rows(rng, 40), T0)
    engine.ingest("churn", 30, churn_rows(30, drifted=False), T0)  # freezes the warmup
    engine.ingest("churn", 25, churn_rows(25, drifted=True), T0 + 1)
    engine.ingest("fresh", 25, fresh_rows(0, 25), T0 + 2)
    engine.ingest("credit", 30, credit_rows(rng, 30), T0 + 300)
    engine.ingest("fresh", 15, fresh_rows(25, 15), T0 + 300)
    engine.evaluate(T0 + 300)
    engine.ingest("churn", 25, churn_rows(25, drifted=False), T0 + 310)
    engine.evaluate(T0 + 320)
    return engine


@dataclass
class Saved:
    folder: Path
    config: Config
    engine: Engine
    state: EngineState
    data: bytes  # the checkpoint file's bytes


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    folder = tmp_path_factory.mktemp("saved")
    config = make_config(folder)
    engine = scripted_engine(config)
    state = engine.export_state()
    path = write_checkpoint(folder / "state", state, saved_at=SAVED_AT)
    return Saved(folder, config, engine, state, path.read_bytes())


# --- exact comparison ----------------------------------------------------------------


def same_value(a: object, b: object) -> bool:
    """Equal in type and value; NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    return a == b


def assert_same_alerts(a: EngineState | Engine, b: EngineState | Engine) -> None:
    left = a.alerts if isinstance(a, EngineState) else a.alert_states()
    right = b.alerts if isinstance(b, EngineState) else b.alert_states()
    assert list(left) == list(right)
    for key, kept in left.items():
        other = right[key]
        assert kept[0] == other[0], key  # the AlertRule, compared as Engine.adopt does
        assert kept[1] == other[1], key
        np.testing.assert_array_equal(np.array(kept[2:]), np.array(other[2:]), err_msg=str(key))


def assert_same_state(a: EngineState, b: EngineState) -> None:
    assert list(a.streams) == list(b.streams)
    for name, left in a.streams.items():
        right = b.streams[name]
        assert left.fingerprint == right.fingerprint
        assert (left.reference is None) == (right.reference is None)
        if left.reference is not None and right.reference is not None:
            assert left.reference.rows == right.reference.rows
            assert left.reference.binners == right.reference.binners  # kind and edges
            for x, y in zip(left.reference.counts, right.reference.counts, strict=True):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        assert (left.window is None) == (right.window is None)
        if left.window is not None and right.window is not None:
            assert left.window.window == right.window.window
            assert left.window.layouts == right.window.layouts
            assert set(left.window.arrays) == set(right.window.arrays)
            for key, array in left.window.arrays.items():
                assert array.dtype == right.window.arrays[key].dtype, key
                np.testing.assert_array_equal(array, right.window.arrays[key])
        assert left.warmup_rows == right.warmup_rows
        assert same_value(dict(left.warmup_columns), dict(right.warmup_columns)), name
    assert_same_alerts(a, b)


# --- round trip ----------------------------------------------------------------------


def test_the_saved_engine_has_every_kind_of_state(saved: Saved) -> None:
    """Guards the scenario itself, so the round-trip tests below test something."""
    states = {key: kept[1:] for key, kept in saved.state.alerts.items()}
    assert states[("psi-slow", "credit", "income")][:1] == (1,)  # pending
    assert states[("js-now", "credit", "income")][:1] == (2,)  # firing
    assert states[("js-now", "credit", "age")][:1] == (0,)  # inactive
    kept = states[("kl-keep", "churn", "score")]
    assert kept[0] == 2 and kept[3] == T0 + 320  # firing, keep_firing_for running
    assert saved.engine.warmup_progress("fresh") == (40, 1000)
    assert saved.engine.warmup_progress("churn") is None  # frozen
    fresh = saved.state.streams["fresh"]
    assert fresh.reference is None and len(fresh.warmup_columns["x"]) == 40


def test_round_trip_is_exact(saved: Saved, tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(saved.data)
    loaded = read_checkpoint(tmp_path)
    assert isinstance(loaded, LoadedCheckpoint)
    assert loaded.saved_at == SAVED_AT
    assert loaded.path == tmp_path / CHECKPOINT_NAME
    assert_same_state(saved.state, loaded.state)
    # Learned layouts come back as the same binner kinds (uniform stays uniform).
    churn_reference = loaded.state.streams["churn"].reference
    assert churn_reference is not None
    assert churn_reference.binners[0].kind == "uniform"


def test_file_starts_with_the_documented_header(saved: Saved) -> None:
    assert saved.data.startswith(MAGIC)
    header_line, _, payload = saved.data[len(MAGIC) :].partition(b"\n")
    header = json.loads(header_line)
    assert header["version"] == FORMAT_VERSION == 1
    assert header["length"] == len(payload)
    # The payload is a plain npz: numpy itself reads it without pickle.
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes())
    assert [s["name"] for s in meta["streams"]] == ["credit", "churn", "fresh"]


def warmup_references(config: Config, state: EngineState) -> dict[str, object]:
    """What the daemon passes to ``Engine``: frozen warmups whose fingerprint matches."""
    return {
        name: kept.reference
        for name, kept in state.streams.items()
        if config.stream(name).reference.kind == "warmup"
        and kept.fingerprint == stream_fingerprint(config.stream(name))
    }


def restored_engine(saved: Saved, folder: Path, now: float) -> Engine:
    (folder / CHECKPOINT_NAME).write_bytes(saved.data)
    loaded = read_checkpoint(folder)
    assert loaded is not None
    engine = Engine(
        saved.config,
        now=now,
        references=warmup_references(saved.config, loaded.state),
    )
    engine.adopt(loaded.state, now)
    return engine


def test_a_restored_engine_carries_on_exactly_like_the_saved_one(
    saved: Saved, tmp_path: Path
) -> None:
    restored = restored_engine(saved, tmp_path, SAVED_AT)
    original = scripted_engine(saved.config)  # a twin of the saved engine, free to go on
    np.testing.assert_array_equal(restored.reference, original.reference)
    np.testing.assert_array_equal(restored.live, original.live)
    assert restored.live.sum() > 0
    assert_same_alerts(restored, original)
    assert restored.warmup_progress("fresh") == original.warmup_progress("fresh") == (40, 1000)

    # Both go on with the same rows: the fresh warmup completes from the
    # restored raw values, so the reference it learns must be identical too.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    for step, now in enumerate((SAVED_AT + 10, SAVED_AT + 200, SAVED_AT + 400)):
        for engine, rng in ((restored, rng_a), (original, rng_b)):
            engine.ingest("credit", 20, credit_rows(rng, 20), now)
            engine.ingest("churn", 10, churn_rows(10, drifted=step == 1), now)
            engine.ingest("fresh", 400, fresh_rows(40 + 400 * step, 400), now)
        left, right = restored.evaluate(now + 1), original.evaluate(now + 1)
        for name, values in left.values.items():
            np.testing.assert_array_equal(values, right.values[name], err_msg=name)
        assert_same_alerts(restored, original)
    assert restored.warmup_progress("fresh") is None  # frozen after 1000 rows
    np.testing.assert_array_equal(restored.reference, original.reference)
    np.testing.assert_array_equal(restored.live, original.live)


def test_panes_that_expired_while_down_are_dropped(saved: Saved, tmp_path: Path) -> None:
    # credit's panes are 60 s wide, 10 of them: the rows of T0 fall out of the
    # window at T0 + 560, those of T0 + 300 only at T0 + 860.
    now = T0 + 700
    restored = restored_engine(saved, tmp_path, now)
    only_later = Engine(saved.config, now=T0)
    rng = np.random.default_rng(11)
    credit_rows(rng, 40)  # the first batch's draws, not ingested
    only_later.ingest("credit", 30, credit_rows(rng, 30), T0 + 300)
    only_later.advance_windows(now)
    credit = [m for m in restored.monitors if m.stream == "credit"]
    span = slice(credit[0].offset, credit[-1].offset + credit[-1].n_bins)
    assert only_later.live[: span.stop - span.start].sum() == 30 * 4
    np.testing.assert_array_equal(restored.live[span], only_later.live[: span.stop - span.start])
    # The sample window does not age: churn keeps its last 25 rows.
    churn = [m for m in restored.monitors if m.stream == "churn"]
    for monitor in churn:
        np.testing.assert_array_equal(
            restored.live[monitor.bins],
            saved.engine.live[saved.engine.monitor("churn", monitor.feature).bins],
        )
    assert_same_alerts(restored, saved.state)


def test_a_window_older_than_its_length_comes_back_empty(saved: Saved, tmp_path: Path) -> None:
    restored = restored_engine(saved, tmp_path, T0 + 10_000)
    credit = [m for m in restored.monitors if m.stream == "credit"]
    assert credit and all(restored.live[m.bins].sum() == 0 for m in credit)
    assert restored.live[restored.monitor("churn", "score").bins].sum() == 25


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**1990, max_value=2**2100).map(lambda v: v * (-1) ** (v % 2))
    | st.integers(min_value=2**15000, max_value=2**15100).map(lambda v: -v)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_keys = st.sampled_from(["$int", "$dict", "$", "$x", "a"]) | st.text(max_size=4)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(columns=st.lists(st.lists(json_values, min_size=3, max_size=3), min_size=1, max_size=4))
def test_warmup_values_round_trip_exactly(columns: list[list[object]]) -> None:
    warmup = {f"f{i}": values for i, values in enumerate(columns)}
    stream = StreamState(
        fingerprint="abc", reference=None, window=None, warmup_rows=3, warmup_columns=warmup
    )
    state = EngineState(streams={"s": stream}, alerts={})
    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(Path(folder), state, saved_at=1.0)
        loaded = read_checkpoint(Path(folder))
    assert loaded is not None
    assert same_value(dict(loaded.state.streams["s"].warmup_columns), warmup)


def test_every_alert_rule_field_round_trips(tmp_path: Path) -> None:
    rule = AlertRule(
        name="r",
        stream_pattern="s*",
        feature_pattern="f?",
        metric="wasserstein",
        threshold=1.5,
        for_s=30.0,
        clear_below=0.5,
        min_samples=12,
        max_p_value=0.01,
        keep_firing_for_s=60.0,
        severity="page",
        p_value_correction="bh",
    )
    alerts = {("r", "s1", "f1"): (rule, 1, 10.0, math.nan, math.nan)}
    write_checkpoint(tmp_path, EngineState(streams={}, alerts=alerts), saved_at=2.0)
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None
    assert_same_alerts(loaded.state, EngineState(streams={}, alerts=alerts))


def test_a_checkpoint_from_before_p_value_correction_loads_with_none(tmp_path: Path) -> None:
    """Rules saved before the key existed keep their state: the key defaults to "none"."""
    rule = AlertRule("r", "*", "*", "psi", 0.1, max_p_value=0.01)
    alerts = {("r", "s1", "f1"): (rule, 2, 10.0, 20.0, math.nan)}
    write_checkpoint(tmp_path, EngineState(streams={}, alerts=alerts), saved_at=2.0)
    path = tmp_path / CHECKPOINT_NAME
    meta, arrays = split(path.read_bytes())
    stored_rule = meta["alerts"][0]["rule"]  # type: ignore[index]
    assert stored_rule.pop("p_value_correction") == "none"
    path.write_bytes(rebuild(meta, arrays))
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None
    assert_same_alerts(loaded.state, EngineState(streams={}, alerts=alerts))
    # An unknown correction is still refused.
    stored_rule["p_value_correction"] = "sidak"
    path.write_bytes(rebuild(meta, arrays))
    with pytest.raises(CheckpointError, match="p_value_correction"):
        read_checkpoint(tmp_path)


def test_a_value_that_is_not_decoded_json_is_refused_and_nothing_replaced(
    saved: Saved, tmp_path: Path
) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(saved.data)
    stream = StreamState(
        fingerprint="abc",
        reference=None,
        window=None,
        warmup_rows=1,
        warmup_columns={"when": [object()]},
    )
    with pytest.raises(ValueError, match="stream 's', feature 'when'"):
        write_checkpoint(tmp_path, EngineState({"s": stream}, {}), saved_at=3.0)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == saved.data
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]


# --- atomic writes ---------------------------------------------------------------------


def test_write_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    saved: Saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        events.append("fsync dir" if stat.S_ISDIR(mode) else "fsync file")
        real_fsync(fd)

    def spy_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    path = write_checkpoint(tmp_path / "new" / "dir", saved.state, saved_at=SAVED_AT)
    assert events == ["fsync file", "replace", "fsync dir"]
    assert path == tmp_path / "new" / "dir" / CHECKPOINT_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == saved.data


def test_a_failed_rename_leaves_the_previous_checkpoint_whole(
    saved: Saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checkpoint(tmp_path, saved.state, saved_at=SAVED_AT)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    empty = EngineState(streams={}, alerts={})
    with pytest.raises(OSError, match="No space"):
        write_checkpoint(tmp_path, empty, saved_at=SAVED_AT + 60)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # temp removed
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None and loaded.saved_at == SAVED_AT
    assert_same_state(loaded.state, saved.state)


def test_a_crash_before_the_rename_leaves_a_temporary_that_start_removes(
    saved: Saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_checkpoint(tmp_path, saved.state, saved_at=SAVED_AT)

    class Crash(BaseException):
        """The process dying: no cleanup code gets to run."""

    def crash(*args: object) -> None:
        raise Crash

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(Crash):
        write_checkpoint(tmp_path, EngineState({}, {}), saved_at=SAVED_AT + 60)
    monkeypatch.undo()
    leftovers = [p for p in tmp_path.iterdir() if p.name != CHECKPOINT_NAME]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{CHECKPOINT_NAME}.tmp-")
    assert remove_stale_temporaries(tmp_path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None and loaded.saved_at == SAVED_AT


def test_remove_stale_temporaries_touches_only_temporaries(tmp_path: Path) -> None:
    stale = [tmp_path / f".{CHECKPOINT_NAME}.tmp-{n}-0a1b2c3d" for n in (17, 4242)]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = [
        tmp_path / CHECKPOINT_NAME,
        tmp_path / f"{CHECKPOINT_NAME}.corrupt-20260101T000000Z",
        tmp_path / "notes.tmp-1",
        tmp_path / f".{CHECKPOINT_NAME}.tmp",
    ]
    for path in keep:
        path.write_bytes(b"keep me")
    (tmp_path / f".{CHECKPOINT_NAME}.tmp-dir").mkdir()
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.read_bytes() == b"keep me" for p in keep)
    assert (tmp_path / f".{CHECKPOINT_NAME}.tmp-dir").is_dir()
    assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path / "missing") == []


# --- corrupt and foreign files ---------------------------------------------------------


class PickleMarker:
    """Unpickling this creates ``path``: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.path,))


def frame(payload: bytes, *, version: int = FORMAT_VERSION) -> bytes:
    """A checkpoint file around ``payload``, with a right checksum (the documented layout)."""
    header = {
        "version": version,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "length": len(payload),
    }
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def split(data: bytes) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """The meta document and arrays of a good checkpoint file."""
    payload = data[len(MAGIC) :].partition(b"\n")[2]
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    return meta, arrays


def rebuild(
    meta: object, arrays: dict[str, np.ndarray], *, meta_bytes: bytes | None = None
) -> bytes:
    raw = json.dumps(meta).encode() if meta_bytes is None else meta_bytes
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(raw, dtype=np.uint8), **arrays)
    return frame(buffer.getvalue())


def pickle_marker_bytes(marker: Path) -> bytes:
    data = pickle.dumps(PickleMarker(marker))
    # Positive control: these bytes do create the marker when unpickled.
    pickle.loads(data)
    assert marker.exists()
    marker.unlink()
    return data


def object_npz_bytes(marker: Path) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array([PickleMarker(marker), 1], dtype=object))
    data = buffer.getvalue()
    with np.load(io.BytesIO(data), allow_pickle=True) as archive:
        archive["meta"]  # positive control, as above
    assert marker.exists()
    marker.unlink()
    return data


def bad_files(saved: Saved, marker: Path) -> Iterator[tuple[str, bytes, str]]:
    """(label, file bytes, regex the error must match) of files that must be refused."""
    data = saved.data
    header_end = data.index(b"\n", len(MAGIC)) + 1
    payload = data[header_end:]
    yield "zero-length", b"", "empty file"
    yield "magic only", MAGIC, "header"
    yield "truncated payload", data[: len(data) // 2], "truncated"
    yield "trailing bytes", data + b"\0", "unexpected bytes after the payload"
    flipped = bytearray(data)
    flipped[header_end + len(payload) // 3] ^= 0x10
    yield "bit flip", bytes(flipped), "checksum"
    yield "wrong version", frame(payload, version=2), "format version 2"
    yield "version 0", frame(payload, version=0), "format version 0"
    yield "wrong magic", b"DRIFTMON-CHECKPOINX\n" + data[len(MAGIC) :], "wrong magic"
    yield "a JSON file", json.dumps({"version": 1, "streams": []}).encode(), "wrong magic"
    yield "a pickle file", pickle_marker_bytes(marker), "wrong magic"
    yield "a framed pickle", frame(pickle_marker_bytes(marker)), "npz"
    yield "an npz", object_npz_bytes(marker), "wrong magic"
    yield "a framed npz with an object array", frame(object_npz_bytes(marker)), "dtype object"
    meta, arrays = split(data)
    yield (
        "an object array under a right name",
        rebuild(meta, arrays | {"streams/0/window/pane_counts": np.array([PickleMarker(marker)])}),
        "dtype object",
    )


@pytest.fixture()
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "UNPICKLED"
    yield path
    assert not path.exists(), "a checkpoint load unpickled something"


def test_bad_files_raise_checkpoint_error(saved: Saved, tmp_path: Path, marker: Path) -> None:
    for label, data, reason in bad_files(saved, marker):
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        (folder / CHECKPOINT_NAME).write_bytes(data)
        with pytest.raises(CheckpointError, match=reason):
            read_checkpoint(folder)
        assert not marker.exists(), label


def test_bad_files_are_moved_aside_never_raising(
    saved: Saved, tmp_path: Path, marker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for label, data, reason in bad_files(saved, marker):
        folder = tmp_path / label.replace(" ", "-")
        folder.mkdir()
        path = folder / CHECKPOINT_NAME
        path.write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="driftmon.checkpoint"):
            loaded, why = restore_or_move_aside(folder)
        assert loaded is None and why is not None and re.search(reason, why), label
        assert not path.exists(), label
        (aside,) = folder.iterdir()
        assert aside.name.startswith(f"{CHECKPOINT_NAME}.corrupt-"), label
        assert aside.read_bytes() == data, label  # moved, not rewritten
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, label
        message = errors[0].getMessage()
        assert str(path) in message and str(aside) in message and why in message, label
        assert not marker.exists(), label


def test_truncation_at_any_offset_is_refused(saved: Saved, tmp_path: Path) -> None:
    data = saved.data
    header_end = data.index(b"\n", len(MAGIC)) + 1
    offsets = set(range(0, header_end + 2)) | set(range(header_end, len(data), 97))
    offsets |= {len(data) - k for k in range(1, 5)}
    path = tmp_path / CHECKPOINT_NAME
    for offset in sorted(offsets):
        path.write_bytes(data[:offset])
        with pytest.raises(CheckpointError):
            read_checkpoint(tmp_path)


def test_a_flipped_bit_anywhere_is_refused(saved: Saved, tmp_path: Path) -> None:
    data = saved.data
    header_end = data.index(b"\n", len(MAGIC)) + 1
    flips = [(offset, bit) for offset in range(header_end) for bit in range(8)]
    flips += [(offset, offset % 8) for offset in range(header_end, len(data), 53)]
    flips.append((len(data) - 1, 0))
    path = tmp_path / CHECKPOINT_NAME
    for offset, bit in flips:
        damaged = bytearray(data)
        damaged[offset] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError):
            read_checkpoint(tmp_path)


# Files with a right checksum but a wrong structure: each mutation of (meta,
# arrays) and the error it must raise. Streams: 0 credit (time window), 1
# churn (sample window), 2 fresh (warming up).
Mutation = Callable[[dict, dict], bytes | None]


def _set(path: str, value: object) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        target = meta
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _array(name: str, change: Callable[[np.ndarray], np.ndarray | None]) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        array = arrays[name].copy()
        result = change(array)
        arrays[name] = array if result is None else result

    return mutate


def _setitem(index: object, value: object) -> Callable[[np.ndarray], None]:
    def change(array: np.ndarray) -> None:
        array[index] = value

    return change


def _warmup(text: str) -> Mutation:
    return _array("streams/2/warmup", lambda a: np.frombuffer(text.encode(), dtype=np.uint8))


def _delete(name: str) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        del arrays[name]

    return mutate


def _raw_meta(transform: Callable[[str], str]) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> bytes:
        return transform(json.dumps(meta)).encode()

    return mutate


def _add_array(name: str, array: np.ndarray) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        arrays[name] = array

    return mutate


def _drop(path: str, key: str) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        target = meta
        for part in path.split("."):
            target = target[int(part)] if part.isdigit() else target[part]
        del target[key]

    return mutate


def _as_sample_window(stream: int) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        window = meta["streams"][stream]["window"]
        meta["streams"][stream]["window"] = {
            "kind": "samples",
            "samples": 10,
            "layouts": window["layouts"],
        }

    return mutate


AlertKey = tuple[str, str, str]
PENDING: AlertKey = ("psi-slow", "credit", "income")
INACTIVE: AlertKey = ("js-now", "credit", "age")
FIRING: AlertKey = ("js-now", "credit", "income")


def _alert_entry(meta: dict, key: AlertKey) -> dict:
    (entry,) = [e for e in meta["alerts"] if (e["rule"]["name"], e["stream"], e["feature"]) == key]
    return entry


def _alert(key: AlertKey, **fields: object) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        _alert_entry(meta, key).update(fields)

    return mutate


def _rule(key: AlertKey, **fields: object) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        _alert_entry(meta, key)["rule"].update(fields)

    return mutate


def _drop_rule_field(key: AlertKey, name: str) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        del _alert_entry(meta, key)["rule"][name]

    return mutate


def _duplicate_alert(key: AlertKey) -> Mutation:
    def mutate(meta: dict, arrays: dict) -> None:
        meta["alerts"].append(dict(_alert_entry(meta, key)))

    return mutate


STRUCTURE_CASES: dict[str, tuple[Mutation, str]] = {
    "pane counts of the wrong width": (
        _array("streams/0/window/pane_counts", lambda a: a[:, :-1]),
        r"pane_counts.*shape",
    ),
    "pane counts as a flat array": (
        _array("streams/0/window/pane_counts", lambda a: a.ravel()),
        "expected 2 dimensions",
    ),
    "a negative pane count": (
        _array("streams/0/window/pane_counts", _setitem((3, 1), -1.0)),
        "finite and >= 0",
    ),
    "a NaN reference count": (
        _array("streams/0/reference/2", _setitem(0, np.nan)),
        "finite and >= 0",
    ),
    "float32 counts": (
        _array("streams/0/reference/0", lambda a: a.astype(np.float32)),
        "dtype float32",
    ),
    "int64 ring": (_array("streams/1/window/ring", lambda a: a.astype(np.int64)), "dtype int64"),
    "a ring index inside another feature's bins": (
        _array("streams/1/window/ring", _setitem((0, 0), 9)),
        "outside",
    ),
    "a ring index past the stream's bins": (
        _array("streams/1/window/ring", _setitem((0, 1), 1000)),
        "outside",
    ),
    "a ring head out of range": (_array("streams/1/window/head", _setitem(0, 25)), "out of range"),
    "a fill count above the ring": (
        _array("streams/1/window/head", _setitem(1, 26)),
        "out of range",
    ),
    "rows past the fill count": (_array("streams/1/window/head", _setitem(slice(None), 5)), "past"),
    "a filling ring whose head is not its fill": (
        _array("streams/1/window/head", _setitem(slice(None), [3, 5])),
        "must have head 5",
    ),
    "a current pane below -1": (
        _array("streams/0/window/current_pane", _setitem(0, -2)),
        "current_pane",
    ),
    "no current pane but counts": (
        _array("streams/0/window/current_pane", _setitem(0, -1)),
        "never saw a pane",
    ),
    "an unknown window kind": (_set("streams.0.window.kind", "weekly"), "unknown window kind"),
    "a window of zero panes": (_set("streams.0.window.panes", 0), "must be >= 1"),
    "a window of no monitors": (_set("streams.0.window.layouts", []), "at least one monitor"),
    "a time window relabelled a sample window": (_as_sample_window(0), "ring' is missing"),
    "non-contiguous layouts": (_set("streams.0.window.layouts.1.2", 99), "contiguous"),
    "a layout that is not the reference's": (
        _set("streams.1.window.layouts.1.1", ["categorical", ["free", "pro", "gold"]]),
        "do not match the stream's reference",
    ),
    "an unknown layout kind": (_set("streams.1.window.layouts.1.1", ["hex", []]), "expected"),
    "decreasing edges": (
        _set("streams.0.reference.binners.3.edges", [0.0, 0.5, 0.1, 1.0]),
        "strictly increasing",
    ),
    "a uniform binner with uneven edges": (
        _set("streams.1.reference.binners.0.edges", [0.0, 0.2, 0.4, 0.6, 0.8, 1.5]),
        "uniform layout",
    ),
    "an unknown binner kind": (_set("streams.1.reference.binners.0.kind", "log"), "'uniform'"),
    "duplicate categories": (
        _set("streams.1.reference.binners.1.categories", ["free", "free", "team"]),
        "unique",
    ),
    "a reference without its counts": (_delete("streams/1/reference/1"), "missing"),
    "a missing window array": (_delete("streams/1/window/head"), "missing"),
    "an extra array": (_add_array("streams/0/extra", np.zeros(3)), "unexpected arrays"),
    "negative warmup rows": (_set("streams.2.warmup_rows", -1), ">= 0"),
    "a warmup column of the wrong length": (_set("streams.2.warmup_rows", 39), "values for 39"),
    "warmup that is not JSON": (_warmup('[["x", [1, 2'), "not readable JSON"),
    "an unknown warmup tag": (_warmup('[["x", [{"$eval": "1"}]]]'), "tagged"),
    "a $int tag holding a small int": (_warmup('[["x", [{"$int": "ff"}]]]'), "tagged"),
    "a duplicate stream": (_set("streams.2.name", "credit"), "appears twice"),
    "a stream missing a field": (_drop("streams.0", "fingerprint"), "missing"),
    "meta that is not JSON": (_raw_meta(lambda text: text[:-1]), "not readable JSON"),
    "meta with a key twice": (
        _raw_meta(lambda text: text[:-1] + ', "alerts": []}'),
        "key twice",
    ),
    "meta as a list": (_raw_meta(lambda text: "[]"), "expected an object"),
    "an infinite saved_at": (_set("saved_at", math.inf), "finite"),
    "a pending alert without active_at": (_alert(PENDING, active_at=math.nan), "active_at"),
    "an inactive alert with a fire time": (_alert(INACTIVE, fired_at=5.0), "fired_at"),
    "a firing alert without fired_at": (_alert(FIRING, fired_at=math.nan), "fired_at"),
    "an alert state of 3": (_alert(PENDING, state=3), "state"),
    "an alert state as a bool": (_alert(PENDING, state=True), "integer"),
    "an alert time as a string": (_alert(PENDING, active_at="noon"), "number"),
    "an unknown metric": (_rule(PENDING, metric="mse"), "unknown metric"),
    "a rule missing a field": (_drop_rule_field(PENDING, "severity"), "missing"),
    "a rule with an extra field": (_rule(PENDING, colour="red"), "unexpected"),
    "an alert key twice": (_duplicate_alert(PENDING), "appears twice"),
}


@pytest.mark.parametrize("label", list(STRUCTURE_CASES))
def test_a_right_checksum_over_a_wrong_structure_is_refused(
    saved: Saved, tmp_path: Path, label: str
) -> None:
    mutate, reason = STRUCTURE_CASES[label]
    meta, arrays = split(saved.data)
    # The cases rely on these states (see test_the_saved_engine_has_every_kind_of_state).
    for key, expected in ((INACTIVE, 0), (PENDING, 1), (FIRING, 2)):
        assert _alert_entry(meta, key)["state"] == expected
    meta_bytes = mutate(meta, arrays)
    (tmp_path / CHECKPOINT_NAME).write_bytes(rebuild(meta, arrays, meta_bytes=meta_bytes))
    with pytest.raises(CheckpointError, match=reason):
        read_checkpoint(tmp_path)


def test_a_header_must_be_exactly_the_canonical_line(saved: Saved, tmp_path: Path) -> None:
    """Right version, length and checksum, but not the writer's exact bytes: refused."""
    payload = saved.data[len(MAGIC) :].partition(b"\n")[2]
    digest = hashlib.sha256(payload).hexdigest()
    good = {"version": 1, "sha256": digest, "length": len(payload)}
    compact = (",", ":")
    lines = [
        json.dumps(good).encode(),  # spaces after ':' and ','
        json.dumps(dict(reversed(good.items())), separators=compact).encode(),
        json.dumps(good | {"note": "x"}, separators=compact).encode(),
        json.dumps(good | {"sha256": digest.upper()}, separators=compact).encode(),
        json.dumps(good | {"length": float(len(payload))}, separators=compact).encode(),
        json.dumps(good | {"version": True}, separators=compact).encode(),
    ]
    for line in lines:
        (tmp_path / CHECKPOINT_NAME).write_bytes(MAGIC + line + b"\n" + payload)
        with pytest.raises(CheckpointError, match="header|version"):
            read_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_NAME).write_bytes(
        MAGIC + json.dumps(good, separators=compact).encode() + b"\n" + payload
    )
    assert read_checkpoint(tmp_path) is not None


def test_compressed_or_foreign_byte_order_archives(saved: Saved, tmp_path: Path) -> None:
    meta, arrays = split(saved.data)
    raw = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=raw, **arrays)
    (tmp_path / CHECKPOINT_NAME).write_bytes(frame(buffer.getvalue()))
    with pytest.raises(CheckpointError, match="not stored plainly"):
        read_checkpoint(tmp_path)
    # Big-endian and Fortran-ordered arrays are the same numbers: accepted.
    swapped = {
        name: (
            array.astype(array.dtype.newbyteorder(">"))
            if array.ndim == 1
            else np.asfortranarray(array)
        )
        for name, array in arrays.items()
    }
    (tmp_path / CHECKPOINT_NAME).write_bytes(rebuild(meta, swapped))
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None
    assert_same_state(loaded.state, saved.state)


def test_no_checkpoint_is_not_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_checkpoint(tmp_path) is None
    assert read_checkpoint(tmp_path / "missing") is None
    with caplog.at_level(logging.DEBUG, logger="driftmon.checkpoint"):
        assert restore_or_move_aside(tmp_path) == (None, None)
    assert caplog.records == []


def test_a_good_checkpoint_is_restored_in_place(saved: Saved, tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(saved.data)
    loaded, why = restore_or_move_aside(tmp_path)
    assert why is None and loaded is not None and loaded.saved_at == SAVED_AT
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == saved.data


def test_an_unreadable_checkpoint_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_NAME).mkdir()  # unreadable as a checkpoint, not absent
    (tmp_path / CHECKPOINT_NAME / "inside").write_text("x")
    with pytest.raises(CheckpointError, match=r"not a regular file \(a directory\)"):
        read_checkpoint(tmp_path)
    loaded, why = restore_or_move_aside(tmp_path)
    assert loaded is None and why is not None and "not a regular file" in why
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith(f"{CHECKPOINT_NAME}.corrupt-")
    assert (aside / "inside").read_text() == "x"


def _restore_within(state_dir: Path, timeout_s: float) -> tuple[object, str | None]:
    """``restore_or_move_aside`` in a thread; fails when it has not returned in ``timeout_s``."""
    import threading

    result: list[tuple[object, str | None]] = []
    worker = threading.Thread(
        target=lambda: result.append(restore_or_move_aside(state_dir)), daemon=True
    )
    worker.start()
    worker.join(timeout_s)
    assert result, f"restoring from {state_dir} did not return within {timeout_s} s"
    return result[0]


def test_a_fifo_checkpoint_is_refused_from_its_type_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / CHECKPOINT_NAME)  # opening it for reading waits for a writer
    loaded, why = _restore_within(tmp_path, 10.0)
    assert loaded is None and why is not None and "not a regular file (a FIFO)" in why
    (aside,) = tmp_path.iterdir()
    assert aside.name.startswith(f"{CHECKPOINT_NAME}.corrupt-")
    assert stat.S_ISFIFO(os.lstat(aside).st_mode)


def test_a_checkpoint_linked_to_dev_zero_is_refused_before_reading(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_NAME).symlink_to("/dev/zero")  # reading it never ends
    loaded, why = _restore_within(tmp_path, 10.0)
    assert loaded is None and why is not None and "a character device" in why
    (aside,) = tmp_path.iterdir()
    assert os.readlink(aside) == "/dev/zero"  # the link itself moved, not its target


def test_a_checkpoint_over_the_size_bound_is_refused_before_reading(
    saved: Saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import driftmon.checkpoint as checkpoint_module

    (tmp_path / CHECKPOINT_NAME).write_bytes(saved.data)
    monkeypatch.setattr(checkpoint_module, "max_checkpoint_bytes", lambda: len(saved.data) - 1)
    with pytest.raises(CheckpointError, match=f"more than the {len(saved.data) - 1} allowed"):
        read_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint_module, "max_checkpoint_bytes", lambda: len(saved.data))
    assert read_checkpoint(tmp_path) is not None


def test_move_aside_names_by_utc_time_and_never_overwrites(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = calendar.timegm((2026, 11, 25, 1, 15, 0))
    path = tmp_path / CHECKPOINT_NAME
    names = []
    for generation in range(3):
        path.write_bytes(b"bad %d" % generation)
        with caplog.at_level(logging.ERROR, logger="driftmon.checkpoint"):
            names.append(move_aside(path, f"reason {generation}", now=now + 0.5).name)
    base = f"{CHECKPOINT_NAME}.corrupt-20261125T011500Z"
    assert names == [base, f"{base}-1", f"{base}-2"]
    for generation, name in enumerate(names):
        assert (tmp_path / name).read_bytes() == b"bad %d" % generation
    assert not path.exists()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 3
    assert str(path) in messages[2] and names[2] in messages[2] and "reason 2" in messages[2]


def test_restore_survives_a_file_it_cannot_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(b"garbage")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(os, "rename", refuse)
    with caplog.at_level(logging.ERROR, logger="driftmon.checkpoint"):
        loaded, why = restore_or_move_aside(tmp_path)
    assert loaded is None and why is not None and "magic" in why
    assert path.read_bytes() == b"garbage"  # left where it was, and said so
    assert any("cannot be moved aside" in r.getMessage() for r in caplog.records)
