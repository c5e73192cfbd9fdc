"""Parse processes (``ingest.processes``, driftmon/parsers.py): the same counts as in-process.

A real daemon with two parse processes takes bodies in every format for a pane-window
stream, a ``{samples: N}`` stream and a warmup stream (whose layout changes when the warmup
freezes); its live counts must equal those of an in-process Engine fed the same bodies.
Bad bodies are refused from a child as from a worker, and a child killed mid-run is
replaced while no request fails.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from harness import DaemonProcess, sample, wait_for

from driftmon.config import load_config
from driftmon.engine import Engine
from driftmon.reference import numeric_fields
from driftmon.sources import parse_body

JSON = "application/json"
NDJSON = "application/x-ndjson"
STREAMS = ("panes", "samples", "warm")
FEATURES = ("x", "c")


def write_config(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    lines = ["x,c"] + [
        f"{value:.4f},{category}"
        for value, category in zip(
            rng.normal(size=400), rng.choice(["a", "b", "c"], 400), strict=True
        )
    ]
    (folder / "ref.csv").write_text("\n".join(lines) + "\n")
    fixed = [
        {
            "name": "x",
            "type": "numeric",
            "bins": {"kind": "uniform", "lo": -3, "hi": 3, "count": 6},
        },
        {"name": "c", "type": "categorical", "categories": ["a", "b", "c"]},
    ]
    learned = [
        {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 4}},
        {"name": "c", "type": "categorical", "top_k": 2},
    ]
    document = {
        "server": {"listen": "127.0.0.1:0"},
        "ingest": {"workers": 2, "processes": 2},
        "engine": {"evaluate_every": "1s"},
        "streams": [
            {"name": "panes", "reference": {"file": "ref.csv"}, "features": fixed},
            {
                "name": "samples",
                "reference": {"file": "ref.csv"},
                "window": {"samples": 700},
                "features": fixed,
            },
            {"name": "warm", "reference": {"warmup": 300}, "features": learned},
        ],
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def bodies(seed: int) -> list[tuple[bytes, str]]:
    """Bodies of 50–150 rows in every format, half of them numbers only."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(12):
        n = int(rng.integers(50, 150))
        x = [round(float(v), 3) for v in rng.normal(0.3, 1.2, n)]
        if i % 2:
            c: list[object] = [int(v) for v in rng.integers(0, 4, n)]  # numbers only
        else:
            c = [str(v) for v in rng.choice(["a", "b", "c", "zz"], n)]
            x[0] = None  # type: ignore[call-overload]  # a missing value
        rows = [{"x": a, "c": b} for a, b in zip(x, c, strict=True)]
        kind = i % 3
        if kind == 0:
            made.append((orjson.dumps(rows), JSON))
        elif kind == 1:
            made.append((orjson.dumps({"columns": {"x": x, "c": c}}), JSON))
        else:
            made.append((b"".join(orjson.dumps(row) + b"\n" for row in rows), NDJSON))
    return made


def children(pid: int) -> list[int]:
    """The daemon's parse processes (spawned children; not multiprocessing's tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            listed = (task / "children").read_text().split()
        except OSError:
            continue  # the thread ended after the listing: it has no children
        for child in listed:
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                found.append(int(child))
    return found


def expected_live(config_path: Path, sent: list[tuple[str, bytes, str]]) -> Engine:
    engine = Engine(load_config(config_path), now=0.0)
    for stream, body, content_type in sent:
        stream_config = engine.stream_config(stream)
        fields = [f.name for f in stream_config.features]
        batch = parse_body(body, content_type, fields, numeric_fields=numeric_fields(stream_config))
        engine.ingest(stream, batch.n_rows, batch.columns, 1.0, unknown_fields=batch.unknown_fields)
    return engine


def child_jobs(process: DaemonProcess) -> float:
    """Bodies a parse process parsed and binned (applied as the child binned them)."""
    return sample(process.metrics(), "driftmon_ingest_parse_process_jobs_total")


def live_counts(process: DaemonProcess, stream: str, feature: str) -> list[float] | None:
    """The monitor's live counts; ``None`` until an evaluation has shown the monitor (a
    warmup's monitors appear at the first evaluation after it froze)."""
    reply = process.get(f"/api/v1/monitors/{stream}/{feature}")
    if reply.status == 404:
        return None
    assert reply.status == 200, (reply.status, reply.body)
    return reply.json()["live_counts"]  # type: ignore[no-any-return]


def assert_same_counts(process: DaemonProcess, engine: Engine) -> None:
    for stream in STREAMS:
        for feature in FEATURES:
            monitor = engine.monitor(stream, feature)
            want = engine.live[monitor.bins].tolist()
            wait_for(
                lambda s=stream, f=feature, w=want: live_counts(process, s, f) == w,
                30.0,
                f"{stream}/{feature} live counts {want}",
            )


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    config = write_config(tmp_path)
    with DaemonProcess(config) as process:
        assert process.process is not None
        process.wait_log(r"2 parse processes ready")
        yield config, process


def test_parse_processes_count_exactly_what_in_process_parsing_counts(daemon: Any) -> None:
    config, process = daemon
    assert len(children(process.process.pid)) == 2
    assert sample(process.metrics(), "driftmon_ingest_parse_processes") == 2
    assert child_jobs(process) == 0
    sent = []
    for seed, stream in enumerate(STREAMS * 3):
        for body, content_type in bodies(seed):
            reply = process.post_rows(stream, body, content_type)
            assert reply.status == 200, reply.body
            sent.append((stream, body, content_type))
    # The warmup froze on the way (its layout changed under the children): same counts still.
    assert_same_counts(process, expected_live(config, sent))
    # The children did the work: every body of the two fixed-reference streams (a layout
    # changed under a child only when the warmup froze, and the warm stream's bodies after it).
    fixed = sum(1 for stream, _, _ in sent if stream != "warm")
    assert fixed <= child_jobs(process) <= len(sent)


def test_bad_bodies_are_refused_from_a_child_as_from_a_worker(daemon: Any) -> None:
    config, process = daemon
    good = [(b, t) for b, t in bodies(1)][:2]
    for body, content_type in good:
        assert process.post_rows("panes", body, content_type).status == 200
    assert child_jobs(process) == 2
    reply = process.post_rows("panes", b'[{"x": 1, "c": "a"}, {"x": 2,]', JSON)
    assert reply.status == 400
    assert reply.json()["error"].startswith("line 1, column "), reply.json()
    reply = process.post_rows("panes", b"x,c\n1,a\n", "text/csv")
    assert reply.status == 415
    reply = process.post_rows("panes", b'{"columns": {"x": [1, 2], "c": ["a"]}}', JSON)
    assert reply.status == 400 and "columns.c" in reply.json()["error"]
    assert child_jobs(process) == 2  # refused bodies apply nothing
    engine = expected_live(config, [("panes", b, t) for b, t in good])
    monitor = engine.monitor("panes", "x")
    want = engine.live[monitor.bins].tolist()
    wait_for(lambda: live_counts(process, "panes", "x") == want, 30.0, "only the good bodies")


def test_a_killed_parse_process_is_replaced_and_no_request_fails(daemon: Any) -> None:
    config, process = daemon
    first = children(process.process.pid)
    sent = []
    for i, (body, content_type) in enumerate(bodies(7) * 2):
        if i == 3:
            os.kill(first[0], signal.SIGKILL)
        reply = process.post_rows("samples", body, content_type)
        assert reply.status == 200, reply.body
        sent.append(("samples", body, content_type))
    process.wait_log(r"parse process \d+ failed .*replacing it")
    wait_for(
        lambda: (
            len(children(process.process.pid)) == 2
            and first[0] not in children(process.process.pid)
        ),
        60.0,
        "a replacement parse process",
    )
    wait_for(
        lambda: sample(process.metrics(), "driftmon_ingest_parse_processes") == 2,
        30.0,
        "two parse processes alive again",
    )
    # Every body but the one the killed child held (redone in-process) was a child's.
    assert len(sent) - 1 <= child_jobs(process) <= len(sent)
    reply = process.post_rows("samples", *bodies(8)[0])
    assert reply.status == 200
    sent.append(("samples", *bodies(8)[0]))
    assert child_jobs(process) >= len(sent) - 1  # two children again, and they take jobs
    engine = expected_live(config, sent)
    for feature in FEATURES:
        monitor = engine.monitor("samples", feature)
        want = engine.live[monitor.bins].tolist()
        wait_for(lambda f=feature, w=want: live_counts(process, "samples", f) == w, 30.0, feature)
    assert process.stop(signal.SIGTERM) == 0
    assert not [pid for pid in first[1:] if Path(f"/proc/{pid}").exists()]


def test_after_a_reload_the_children_bin_with_the_new_layout(daemon: Any) -> None:
    config, process = daemon
    for body, content_type in bodies(11)[:4]:
        assert process.post_rows("panes", body, content_type).status == 200
    document = json.loads(config.read_text())
    document["streams"][0]["features"][0]["bins"]["count"] = 3  # panes/x: a new layout
    config.write_text(json.dumps(document))
    reply = process.post("/-/reload")
    assert reply.status == 200, reply.body
    sent = [("panes", body, content_type) for body, content_type in bodies(12)]
    before = child_jobs(process)
    for _, body, content_type in sent:
        assert process.post_rows("panes", body, content_type).status == 200
    assert child_jobs(process) == before + len(sent)  # the children took the new layout
    # panes/x started over with three bins: only the bodies after the reload are in it.
    engine = expected_live(config, sent)
    monitor = engine.monitor("panes", "x")
    want = engine.live[monitor.bins].tolist()
    assert len(want) == 3 + 4  # three regular bins among underflow, overflow, missing, invalid
    wait_for(lambda: live_counts(process, "panes", "x") == want, 30.0, f"panes/x {want}")


def test_reloads_that_remove_and_add_a_stream_never_answer_500(daemon: Any) -> None:
    """Senders post to stream ``panes`` while reloads remove it and add it back: each post
    is accepted (200) or refused as an unknown stream (404), never a 500."""
    import asyncio

    import aiohttp
    from harness import async_request

    config, process = daemon
    with_panes = json.loads(config.read_text())
    without_panes = {**with_panes, "streams": with_panes["streams"][1:]}
    body, content_type = bodies(13)[0]

    async def run() -> list[int]:
        statuses: list[int] = []
        stop = asyncio.Event()
        async with aiohttp.ClientSession() as session:

            async def send() -> None:
                while not stop.is_set():
                    reply = await async_request(
                        session,
                        "POST",
                        process.url + "/v1/streams/panes/rows",
                        body,
                        {"Content-Type": content_type},
                    )
                    statuses.append(reply.status)

            senders = [asyncio.create_task(send()) for _ in range(4)]
            for i in range(20):
                config.write_text(json.dumps(without_panes if i % 2 == 0 else with_panes))
                reply = await async_request(session, "POST", process.url + "/-/reload")
                assert reply.status == 200, reply.body
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*senders)
        return statuses

    statuses = asyncio.run(run())
    assert set(statuses) <= {200, 404}, sorted(set(statuses))
    assert 200 in statuses and 404 in statuses
    assert "Traceback" not in process.log_text(), process.log_text()


def test_a_replacement_that_dies_while_starting_is_replaced_in_turn(daemon: Any) -> None:
    """The pool never drains: a replacement killed before it is ready is started again."""
    config, process = daemon
    pid = process.process.pid
    first = children(pid)
    os.kill(first[0], signal.SIGKILL)
    body, content_type = bodies(14)[0]
    # The dead child is noticed when a job reaches it.
    wait_for(
        lambda: (
            process.post_rows("panes", body, content_type).status == 200
            and f"parse process {first[0]} failed" in process.log_text()
        ),
        60.0,
        "the dead parse process to be noticed",
    )
    replacement = wait_for(
        lambda: [p for p in children(pid) if p not in first], 60.0, "a replacement"
    )[0]
    os.kill(replacement, signal.SIGKILL)  # still importing numpy and numba: not ready yet
    process.wait_log(r"cannot start a parse process", 60.0)
    wait_for(
        lambda: sample(process.metrics(), "driftmon_ingest_parse_processes") == 2,
        90.0,
        "two parse processes alive again",
    )
    assert len(children(pid)) == 2 and replacement not in children(pid)
    assert process.post_rows("panes", body, content_type).status == 200
