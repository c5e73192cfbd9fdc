"""``driftmon init`` and ``features: infer``: configs inferred from a reference file.

Done when: init on a Parquet file of 50 mixed columns writes a config that
``driftmon check`` accepts and that feeds a real daemon whose
``/api/v1/monitors`` lists every kept column.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest
import yaml
from harness import DaemonProcess, sample, wait_for

from driftmon.cli import main
from driftmon.config import ConfigError, load_config
from driftmon.config.infer import MAX_LISTED_CATEGORIES, infer_file

N_ROWS = 3000


def mixed_table(rng: np.random.Generator) -> tuple[pa.Table, dict[str, str]]:
    """50 columns of every kind, and the reason expected for each one left out."""
    columns: dict[str, pa.Array] = {}
    for k in range(13):
        values = rng.normal(k, 1 + k, N_ROWS)
        mask = rng.random(N_ROWS) < 0.05
        columns[f"float_{k}"] = pa.array(values, mask=mask)
    columns["float32_col"] = pa.array(rng.random(N_ROWS).astype(np.float32))
    for k in range(5):
        columns[f"code_{k}"] = pa.array(rng.integers(0, 3 + k, N_ROWS))
    for k in range(5):
        columns[f"count_{k}"] = pa.array(rng.integers(0, 1000 * (k + 1), N_ROWS), pa.int32())
    words = [f"w{i}" for i in range(60)]
    for k in range(8):
        columns[f"small_text_{k}"] = pa.array(rng.choice(words[: 3 + k], N_ROWS))
    for k in range(3):
        columns[f"big_text_{k}"] = pa.array(rng.choice(words[: 30 + 10 * k], N_ROWS))
    for k in range(3):
        columns[f"flag_{k}"] = pa.array(rng.random(N_ROWS) < 0.3 + 0.1 * k)
    for k in range(3):
        columns[f"dict_{k}"] = pa.array(rng.choice(words[:5], N_ROWS)).dictionary_encode()
    columns["decimal_col"] = pa.array(
        [round(float(v), 2) for v in rng.normal(size=N_ROWS)], pa.float64()
    ).cast(pa.decimal128(10, 2))
    columns["row_id"] = pa.array(np.arange(N_ROWS) * 7 + 1000)
    columns["uuid"] = pa.array([f"id-{i:08x}" for i in rng.permutation(N_ROWS)])
    start = np.datetime64("2026-01-01T00:00:00", "s")
    columns["event_time"] = pa.array(start + np.arange(N_ROWS).astype("timedelta64[s]"))
    columns["empty"] = pa.nulls(N_ROWS, pa.float64())
    columns["constant"] = pa.array(np.full(N_ROWS, 2.5))
    columns["tags"] = pa.array([[int(i % 3)] for i in range(N_ROWS)], pa.list_(pa.int64()))
    columns["blob"] = pa.array([b"x"] * N_ROWS, pa.binary())
    columns["created_at"] = pa.array(1.7e9 + np.arange(N_ROWS, dtype=np.float64))
    skipped = {
        "row_id": "unique per row",
        "uuid": "unique per row",
        "event_time": "time_field",
        "empty": "all values are null",
        "constant": "constant",
        "tags": "no distribution",
        "blob": "no distribution",
        "created_at": "time_field",
    }
    table = pa.table(columns)
    assert table.num_columns == 50
    return table, skipped


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def parquet_reference(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, pa.Table, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("init")
    table, skipped = mixed_table(np.random.default_rng(16))
    path = folder / "data" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    yield path, table, skipped


def test_init_on_50_mixed_parquet_columns_feeds_a_daemon(
    parquet_reference: tuple[Path, pa.Table, dict[str, str]], tmp_path: Path
) -> None:
    path, table, skipped = parquet_reference
    config_path = tmp_path / "conf" / "driftmon.yaml"
    config_path.parent.mkdir()
    status, _, err = run_cli("init", "--reference", str(path), "-o", str(config_path))
    assert status == 0, err
    assert "50 columns: 42 features, 8 skipped" in err
    for name, reason in skipped.items():
        assert f"skipped {name!r}: " in err and reason in err.split(f"skipped {name!r}: ")[1]
    document = yaml.safe_load(config_path.read_text())
    stream = document["streams"][0]
    assert stream["name"] == "train"
    relative = os.path.relpath(path, config_path.parent)
    assert stream["reference"] == {"file": relative} and relative.startswith("..")
    kept = {f["name"]: f for f in stream["features"]}
    assert set(kept) == set(table.column_names) - set(skipped)
    assert kept["float_3"]["type"] == "numeric"
    assert kept["count_2"]["type"] == "numeric"
    assert kept["code_1"] == {"name": "code_1", "type": "categorical",
                              "categories": kept["code_1"]["categories"]}  # fmt: skip
    assert sorted(kept["code_1"]["categories"]) == ["0", "1", "2", "3"]
    assert sorted(kept["flag_0"]["categories"]) == ["false", "true"]
    assert kept["big_text_2"].get("top_k") is not None  # 50 distinct words
    assert len(kept["small_text_7"]["categories"]) == 10 <= MAX_LISTED_CATEGORIES
    assert "# time_field:" in config_path.read_text()
    assert all(rule.get("max_p_value") for rule in document["alerts"])

    status, out, err = run_cli("check", "-c", str(config_path))
    assert status == 0, err
    assert "42 monitors" in out

    with DaemonProcess(config_path) as daemon:
        monitors = daemon.get("/api/v1/monitors").json()
        listed = {m["feature"] for m in monitors["monitors"]} if isinstance(monitors, dict) else {
            m["feature"] for m in monitors
        }
        assert listed == set(kept)
        sink = pa.BufferOutputStream()
        with pa_ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(0, 500))
        reply = daemon.post_rows("train", sink.getvalue().to_pybytes(),
                                 "application/vnd.apache.arrow.stream")  # fmt: skip
        assert reply.status == 200, reply.body
        wait_for(
            lambda: sample(daemon.metrics(), "driftmon_ingest_rows_total", stream="train") == 500,
            what="rows ingested",
        )
        live = daemon.monitor("train", "small_text_3")
        assert sum(live["live_counts"]) == 500 and live["live_counts"][-2:] == [0, 0]


def test_init_refuses_to_overwrite_and_honours_exclude_and_stream(
    parquet_reference: tuple[Path, pa.Table, dict[str, str]], tmp_path: Path
) -> None:
    path, _, _ = parquet_reference
    out_path = tmp_path / "c.yaml"
    out_path.write_text("keep me")
    status, _, err = run_cli("init", "--reference", str(path), "-o", str(out_path))
    assert status == 1 and "--force" in err and out_path.read_text() == "keep me"
    status, _, err = run_cli(
        "init", "--reference", str(path), "-o", str(out_path), "--force",
        "--stream", "credit", "--exclude", "float_0", "flag_1",
    )  # fmt: skip
    assert status == 0, err
    document = yaml.safe_load(out_path.read_text())
    names = {f["name"] for f in document["streams"][0]["features"]}
    assert document["streams"][0]["name"] == "credit"
    assert "float_0" not in names and "flag_1" not in names and "float_1" in names
    assert "skipped 'float_0': excluded" in err


def test_init_reads_csv_ndjson_json_and_arrow_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "x": rng.normal(size=400),
            "n": rng.integers(0, 4, 400),
            "s": rng.choice(["a", "b", "c"], 400),
            "b": rng.random(400) < 0.5,
            "id": np.arange(400),
        }
    )
    rows = table.to_pylist()
    paths = {
        "csv": tmp_path / "r.csv",
        "ndjson": tmp_path / "r.ndjson",
        "json": tmp_path / "r.json",
        "arrow": tmp_path / "r.arrow",
    }
    pa_csv.write_csv(table, paths["csv"])
    paths["ndjson"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    paths["json"].write_text(json.dumps(rows))
    with pa_ipc.new_file(paths["arrow"], table.schema) as writer:
        writer.write_table(table)
    for kind, path in paths.items():
        inference = infer_file(path)
        got = {f.name: (f.type, f.categories and sorted(f.categories)) for f in inference.features}
        assert got == {
            "x": ("numeric", None),
            "n": ("categorical", ["0", "1", "2", "3"]),
            "s": ("categorical", ["a", "b", "c"]),
            # CSV cells are the text Arrow wrote: the categories are what the daemon reads.
            "b": ("categorical", ["false", "true"]),
        }, kind
        assert dict(inference.skipped) == {"id": "unique per row: an ID"}, kind


def write_infer_config(folder: Path, features: object) -> Path:
    rng = np.random.default_rng(5)
    pq.write_table(
        pa.table({"x": rng.normal(size=200), "s": rng.choice(["a", "b"], 200)}),
        folder / "ref.parquet",
    )
    path = folder / "driftmon.yaml"
    path.write_text(
        yaml.safe_dump(
            {"streams": [{"name": "s", "reference": {"file": "ref.parquet"}, "features": features}],
             "alerts": [{"name": "r", "match": {"stream": "s", "feature": "x"}, "metric": "js",
                         "threshold": 0.1}]}  # fmt: skip
        )
    )
    return path


def test_features_infer_reads_the_reference_and_explicit_entries_override(tmp_path: Path) -> None:
    config = load_config(write_infer_config(tmp_path, "infer"))
    features = {f.name: f for f in config.stream("s").features}
    assert features["x"].type == "numeric" and features["s"].categories in (("a", "b"), ("b", "a"))
    explicit = {"name": "x", "type": "numeric", "bins": {"kind": "uniform", "lo": -3, "hi": 3,
                                                        "count": 6}}  # fmt: skip
    config = load_config(write_infer_config(tmp_path, ["infer", explicit]))
    features = {f.name: f for f in config.stream("s").features}
    assert [f.name for f in config.stream("s").features] == ["x", "s"]
    assert features["x"].bins is not None and features["x"].bins.kind == "uniform"


def test_features_infer_needs_a_file_reference(tmp_path: Path) -> None:
    path = tmp_path / "driftmon.yaml"
    path.write_text(
        yaml.safe_dump(
            {"streams": [{"name": "s", "reference": {"warmup": 10}, "features": "infer"}]}
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "streams[0].features: infer needs a file reference, not warmup" in str(caught.value)


def test_init_reports_progress_for_a_large_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import driftmon.config.infer

    monkeypatch.setattr(driftmon.config.infer, "_LARGE_FILE_BYTES", 1000)
    rng = np.random.default_rng(2)
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"x": rng.normal(size=5000), "s": rng.choice(["a", "b"], 5000)}), path)
    status, _, err = run_cli("init", "--reference", str(path), "-o", str(tmp_path / "c.yaml"))
    assert status == 0, err
    lines = err.splitlines()
    assert lines[0].startswith(f"reading {path} (")
    assert "5000 rows x 2 columns read in" in lines[1]
    assert "learning categories and quantile bins of 2 columns" in lines[2]
