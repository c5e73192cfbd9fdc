"""Arrow IPC ingest bodies and ``Client.log_frame`` against a real daemon.

Two streams with the same features: one is fed Arrow bodies, the other the
same rows as JSON; their live histograms must be equal bin for bin, which
is §2's type rules mapped from Arrow types. Bad bodies apply nothing. Every
test runs against a daemon that parses in its worker threads and one that
parses in a child process (``ingest.processes``).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pytest
from harness import DaemonProcess, sample, wait_for

from driftmon.client import Client

ARROW = "application/vnd.apache.arrow.stream"
FEATURES = [
    {"name": "x", "type": "numeric", "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 10}},
    {"name": "i", "type": "numeric", "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5}},
    {"name": "c", "type": "categorical", "categories": ["a", "b", "3", "true"]},
    {"name": "k", "type": "categorical", "categories": ["1", "2", "false"]},
    {"name": "f", "type": "categorical", "categories": ["1.5"]},
    {"name": "s", "type": "numeric", "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 2}},
]
STREAMS = ("arrow", "json", "frame", "small")


@pytest.fixture(scope="module", params=[0, 1], ids=["in-workers", "in-a-parse-process"])
def daemon(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("arrow-daemon")
    reference = folder / "reference.ndjson"
    reference.write_text(
        "".join(json.dumps({"x": k % 10 + 0.5, "i": k % 7, "c": "a"}) + "\n" for k in range(40))
    )
    config = {
        "server": {"max_body_bytes": "64KiB"},
        "ingest": {"processes": request.param},
        "engine": {"evaluate_every": "200ms"},
        "defaults": {"window": {"samples": 1_000_000}},
        "streams": [
            {"name": name, "reference": {"file": str(reference)}, "features": FEATURES}
            for name in STREAMS
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config))
    with DaemonProcess(path) as process:
        yield process


def arrow_body(table: pa.Table, max_chunksize: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max_chunksize)
    return sink.getvalue().to_pybytes()


def live(process: DaemonProcess, stream: str) -> dict[str, list[int]]:
    return {
        f["name"]: [int(n) for n in process.monitor(stream, f["name"])["live_counts"]]
        for f in FEATURES
    }


def rows_total(process: DaemonProcess, stream: str) -> float:
    return sample(process.metrics(), "driftmon_ingest_rows_total", stream=stream) or 0.0


ROWS: list[dict[str, Any]] = [
    {"x": 1.5, "i": 3, "c": "a", "k": 1, "f": 1.5, "s": "0.5"},
    {"x": None, "i": None, "c": None, "k": None, "f": None, "s": None},
    {"x": math.nan, "i": 9, "c": "3", "k": 2, "f": math.nan, "s": "x"},
    {"x": math.inf, "i": -4, "c": "b", "k": 7, "f": 2.0, "s": "0.1"},
    {"x": -math.inf, "i": 12, "c": "zz", "k": 1, "f": 0.0, "s": None},
    {"x": 9.99, "i": 0, "c": "true", "k": 2, "f": -1.0, "s": "y"},
]


def rows_table() -> pa.Table:
    """ROWS typed as Arrow would carry them: ints for k, dictionary strings for c, a
    float column for the categorical f (invalid), strings for the numeric s (invalid)."""
    return pa.table(
        {
            "x": pa.array([r["x"] for r in ROWS], pa.float64()),
            "i": pa.array([r["i"] for r in ROWS], pa.int32()),
            "c": pa.array([r["c"] for r in ROWS], pa.string()).dictionary_encode(),
            "k": pa.array([r["k"] for r in ROWS], pa.int64()),
            "f": pa.array([r["f"] for r in ROWS], pa.float64()),
            "s": pa.array([r["s"] for r in ROWS], pa.string()),
            "unknown": pa.array(range(len(ROWS))),
        }
    )


def test_an_arrow_body_bins_as_the_same_rows_in_json(daemon: DaemonProcess) -> None:
    table = rows_table()
    reply = daemon.post_rows("arrow", arrow_body(table, max_chunksize=4), ARROW)
    assert reply.status == 200, reply.body
    assert reply.json() == {"rows": len(ROWS)}
    json_rows = [{**row, "unknown": n} for n, row in enumerate(ROWS)]
    body = json.dumps(json_rows).encode()  # NaN / Infinity literals
    assert daemon.post_json("json", body).status == 200
    wait_for(lambda: rows_total(daemon, "arrow") == len(ROWS), what="arrow rows counted")
    wait_for(
        lambda: live(daemon, "arrow") == live(daemon, "json") and sum(live(daemon, "json")["x"]),
        what="equal live histograms",
    )
    counts = live(daemon, "arrow")
    # f: a float column is not categorical: NaN and null missing, the rest invalid.
    assert counts["f"] == [0, 0, 2, 4]
    # s: strings are not numbers: null missing, the rest invalid.
    assert counts["s"] == [0, 0, 0, 0, 2, 4]


def test_bad_arrow_bodies_apply_nothing(daemon: DaemonProcess) -> None:
    before = rows_total(daemon, "small")
    reply = daemon.post_rows("small", b"\xff\xff\xff\xff garbage", ARROW)
    assert reply.status == 400
    assert b"invalid Arrow IPC stream" in reply.body
    truncated = arrow_body(rows_table())[:-40]
    assert daemon.post_rows("small", truncated, ARROW).status == 400
    duplicated = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["x", "x"])
    reply = daemon.post_rows("small", arrow_body(duplicated), ARROW)
    assert reply.status == 400 and b"'x' appears more than once" in reply.body
    big = pa.table({"x": pa.array(range(20_000), pa.float64())})
    assert daemon.post_rows("small", arrow_body(big), ARROW).status == 413
    reply = daemon.post_rows("small", arrow_body(rows_table()), "application/vnd.apache.arrow.file")
    assert reply.status == 415
    assert rows_total(daemon, "small") == before


def test_log_frame_sends_arrow_and_counts_rows_like_log(daemon: DaemonProcess) -> None:
    table = rows_table()
    client = Client(daemon.url, "frame", batch_rows=4, flush_every=0.05)
    try:
        client.log_frame(table)
        client.log_frame(table.to_batches()[0])
        client.log(ROWS[0])  # a batch mixing dict rows and frame rows goes as JSON
        assert client.flush(timeout=30)
        stats = client.stats
        assert stats.rows_logged == stats.rows_sent == 2 * len(ROWS) + 1
        assert stats.rows_rejected == stats.rows_dropped == 0
    finally:
        client.close()
    expected = {name: [2 * n for n in counts] for name, counts in live(daemon, "arrow").items()}
    expected["x"][2] += 1
    expected["i"][2] += 1
    expected["c"][0] += 1
    expected["k"][0] += 1
    expected["f"][3] += 1  # the float 1.5, sent as JSON: invalid for a categorical
    expected["s"][5] += 1  # the string "0.5": invalid for a numeric
    wait_for(lambda: live(daemon, "frame") == expected, what="frame rows binned")


def test_log_frame_refuses_what_is_not_a_frame(daemon: DaemonProcess) -> None:
    client = Client(daemon.url, "frame")
    try:
        with pytest.raises(TypeError, match="frame"):
            client.log_frame([{"x": 1}])
    finally:
        client.close()


def test_log_frame_without_pyarrow_sends_pandas_rows_as_json(tmp_path: Path) -> None:
    from driftmon import frames

    class DataFrame:  # the two things frame_rows asks of a pandas frame
        __module__ = "pandas.core.frame"

        def to_dict(self, orient: str) -> list[dict[str, Any]]:
            assert orient == "records"
            return [{"x": 1.0}, {"x": None}]

    original = frames._pyarrow
    frames._pyarrow = lambda: None  # type: ignore[assignment]
    try:
        assert frames.frame_rows(DataFrame()) == [{"x": 1.0}, {"x": None}]
        with pytest.raises(TypeError):
            frames.frame_rows(rows_table())
    finally:
        frames._pyarrow = original  # type: ignore[assignment]


def test_log_frame_rows_are_evicted_and_counted_like_logged_rows() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", "s", max_buffer_rows=30, max_backoff=0.05)
    try:
        client.log_frame(pa.table({"x": pa.array(range(100), pa.float64())}))
        client.log({"x": 1.0})
        stats = client.stats
        assert stats.rows_logged == 101
        assert stats.rows_dropped + stats.rows_pending + stats.rows_sent == 101
        assert stats.rows_pending <= 30 and stats.rows_sent == 0
    finally:
        assert not client.close(timeout=0.5)
    stats = client.stats
    assert stats.rows_dropped == 101 and stats.rows_pending == 0
