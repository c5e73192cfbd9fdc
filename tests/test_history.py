"""The history ring: bounded, recorded at its pace, kept across warmups, reloads and restarts."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from driftmon.checkpoint import (
    CHECKPOINT_NAME,
    MAGIC,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from driftmon.config import Config, ConfigError, parse_config
from driftmon.engine import Engine
from driftmon.history import HISTORY_METRICS, HistoryRing, ring_bytes

T0 = 1_800_000_000.0


def make_config(folder: Path, history: dict[str, object] | None = None, count: int = 4) -> Config:
    rng = np.random.default_rng(3)
    lines = ["x,c"] + [f"{rng.normal():.4f},{rng.choice(['a', 'b'])}" for _ in range(300)]
    (folder / "ref.csv").write_text("\n".join(lines) + "\n")
    engine: dict[str, object] = {"evaluate_every": "10s"}
    if history is not None:
        engine["history"] = history
    document = {
        "engine": engine,
        "streams": [
            {
                "name": "s",
                "reference": {"file": "ref.csv"},
                "window": {"samples": 50},
                "features": [
                    {
                        "name": "x",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": -2, "hi": 2, "count": count},
                    },
                    {"name": "c", "type": "categorical", "categories": ["a", "b"]},
                ],
            },
            {
                "name": "w",
                "reference": {"warmup": 20},
                "window": {"samples": 20},
                "features": [
                    {"name": "y", "type": "numeric", "bins": {"kind": "quantile", "count": 3}}
                ],
            },
        ],
        "alerts": [{"name": "js", "match": {"stream": "*", "feature": "*"}, "metric": "js",
                    "threshold": 0.05, "min_samples": 1}],
    }
    return parse_config(document, base_dir=folder)


def feed(engine: Engine, t: float, shift: float, n: int = 50) -> None:
    rng = np.random.default_rng(int(t))
    engine.ingest("s", n, {"x": list(rng.normal(shift, 1, n)), "c": ["a"] * n}, t)


def test_config_history_keys_and_capacity(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert (config.engine.history_length_s, config.engine.history_every_s) == (3600.0, 60.0)
    assert config.engine.history_capacity == 60
    config = make_config(tmp_path, {"length": "30m", "every": "5s"})
    assert config.engine.history_capacity == 180  # every below evaluate_every: 10 s steps
    assert make_config(tmp_path, {"length": "0s"}).engine.history_capacity == 0
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, {"length": "1h", "evry": "1m"})
    assert any(line.startswith("engine.history.evry: unknown key") for line in caught.value.errors)
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, {"every": "0s"})
    assert any(line.startswith("engine.history.every: must be > 0") for line in caught.value.errors)


def test_ring_keeps_the_newest_entries_oldest_first() -> None:
    ring = HistoryRing(3, 2, every_s=10, tolerance_s=5)
    for k in range(5):
        values = {name: np.array([k, 10 + k], dtype=float) for name in HISTORY_METRICS}
        assert ring.record(100.0 + 10 * k, values, np.array([k, k]), np.array([0, k % 2]))
    history = ring.monitor(1)
    assert history.times.tolist() == [120.0, 130.0, 140.0]
    assert history.values["js"].tolist() == [12.0, 13.0, 14.0]
    assert history.firing.tolist() == [0, 1, 0]
    assert ring.nbytes == ring_bytes(3, 2)


def test_ring_records_once_per_every() -> None:
    ring = HistoryRing(10, 1, every_s=60, tolerance_s=7.5)
    values = {name: np.zeros(1) for name in HISTORY_METRICS}
    zero = np.zeros(1)
    recorded = [t for t in np.arange(0, 181, 15.0) if ring.record(t, values, zero, zero)]
    assert recorded == [0.0, 60.0, 120.0, 180.0]
    # A wall clock stepped back does not freeze it.
    assert ring.record(30.0, values, np.zeros(1), np.zeros(1))


def test_engine_records_every_evaluation_and_survives_a_warmup_freeze(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"length": "1h", "every": "10s"})
    engine = Engine(config, now=T0)
    for k in range(3):
        feed(engine, T0 + 10 * k, shift=0.0)
        evaluation = engine.evaluate(T0 + 10 * k)
    x = engine.monitor("s", "x").index
    assert engine.history.monitor(x).values["js"][-1] == pytest.approx(evaluation.values["js"][x])
    before = engine.history.monitor(x)
    engine.ingest("w", 20, {"y": list(range(20))}, T0 + 30)  # freezes: the engine re-packs
    assert len(engine.monitors) == 3
    after = engine.history.monitor(engine.monitor("s", "x").index)
    np.testing.assert_array_equal(after.values["js"], before.values["js"])
    assert len(engine.history.monitor(engine.monitor("w", "y").index)) == 3
    assert np.isnan(engine.history.monitor(engine.monitor("w", "y").index).values["js"]).all()


def test_checkpoint_round_trip_and_layout_change(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"length": "1h", "every": "10s"})
    engine = Engine(config, now=T0)
    for k in range(4):
        feed(engine, T0 + 10 * k, shift=1.5 * (k >= 2))
        engine.evaluate(T0 + 10 * k)
    write_checkpoint(tmp_path, engine.export_state(), saved_at=T0 + 40)
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None and loaded.state.history is not None
    restored = Engine(config, now=T0 + 45)
    restored.adopt(loaded.state, T0 + 45)
    x = engine.monitor("s", "x").index
    old, new = engine.history.monitor(x), restored.history.monitor(x)
    np.testing.assert_array_equal(new.times, old.times)
    for name in HISTORY_METRICS:
        np.testing.assert_array_equal(new.values[name], old.values[name])
    assert new.firing.tolist() == old.firing.tolist() and new.firing[-1] == 1
    # A shorter ring keeps the newest entries; a changed layout starts with no values.
    changed = make_config(tmp_path, {"length": "20s", "every": "10s"}, count=5)
    other = Engine(changed, now=T0 + 45)
    other.adopt(loaded.state, T0 + 45)
    assert other.history.monitor(x).times.tolist() == old.times[-2:].tolist()
    assert np.isnan(other.history.monitor(x).values["js"]).all()
    c = other.monitor("s", "c").index
    assert other.history.monitor(c).values["js"].tolist() == pytest.approx(
        engine.history.monitor(c).values["js"][-2:].tolist()
    )


def test_reload_keeps_history(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"length": "1h", "every": "10s"})
    engine = Engine(config, now=T0)
    feed(engine, T0, 0.0)
    engine.evaluate(T0)
    reloaded = engine.successor(dataclasses.replace(config, alerts=()), T0 + 5)
    reloaded.take_over(engine, T0 + 5)
    assert reloaded.history.monitor(0).times.tolist() == [T0]


def _without_history(data: bytes) -> bytes:
    """The same checkpoint as an older driftmon wrote it: no history section."""
    payload = data[len(MAGIC) :].partition(b"\n")[2]
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        arrays = {n: archive[n] for n in archive.files if not n.startswith("history/")}
    meta = json.loads(arrays.pop("meta").tobytes())
    del meta["history"]
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    body = buffer.getvalue()
    import hashlib

    header = {"version": 1, "sha256": hashlib.sha256(body).hexdigest(), "length": len(body)}
    return MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def test_a_checkpoint_without_history_loads_with_empty_history(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"length": "1h", "every": "10s"})
    engine = Engine(config, now=T0)
    feed(engine, T0, 0.0)
    engine.evaluate(T0)
    path = write_checkpoint(tmp_path, engine.export_state(), saved_at=T0 + 1)
    path.write_bytes(_without_history(path.read_bytes()))
    loaded = read_checkpoint(tmp_path)
    assert loaded is not None and loaded.state.history is None
    restored = Engine(config, now=T0 + 2)
    restored.adopt(loaded.state, T0 + 2)
    assert len(restored.history.monitor(0)) == 0
    assert restored.live.sum() == engine.live.sum()  # the rest of the state is there


def test_a_bad_history_section_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"length": "1h", "every": "10s"})
    engine = Engine(config, now=T0)
    feed(engine, T0, 0.0)
    engine.evaluate(T0)
    state = engine.export_state()
    assert state.history is not None
    bad = dataclasses.replace(state.history, samples=np.full_like(state.history.samples, -1.0))
    write_checkpoint(tmp_path, dataclasses.replace(state, history=bad), saved_at=T0)
    with pytest.raises(CheckpointError, match="history/samples"):
        read_checkpoint(tmp_path)
    short = dataclasses.replace(state.history, times=np.array([T0, math.nan]))
    write_checkpoint(tmp_path, dataclasses.replace(state, history=short), saved_at=T0)
    with pytest.raises(CheckpointError, match="history/values"):
        read_checkpoint(tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).exists()


def test_a_restarted_daemon_keeps_its_history(tmp_path: Path) -> None:
    from harness import DaemonProcess, wait_for

    config_path = tmp_path / "c.yaml"
    make_config(tmp_path)  # writes ref.csv
    config_path.write_text(
        json.dumps(
            {
                "engine": {"evaluate_every": "1s", "history": {"length": "1h", "every": "1s"}},
                "state": {"dir": str(tmp_path / "state")},
                "streams": [
                    {
                        "name": "s",
                        "reference": {"file": "ref.csv"},
                        "window": {"samples": 50},
                        "features": [{"name": "c", "type": "categorical", "categories": ["a"]}],
                    }
                ],
            }
        )
    )
    with DaemonProcess(config_path) as first:
        assert first.post_json("s", json.dumps([{"c": "a"}] * 10).encode()).status == 200

        def entries() -> list[float]:
            reply = first.get("/api/v1/monitors/s/c/history").json()
            return [t for t, n in zip(reply["times"], reply["samples"], strict=True) if n > 0]

        before = wait_for(lambda: entries() if len(entries()) >= 2 else None, 30, "history")
        assert first.stop() == 0
    with DaemonProcess(config_path) as second:
        times = second.get("/api/v1/monitors/s/c/history").json()["times"]
        assert set(before) <= set(times)
