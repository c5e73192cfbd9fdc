"""The daemon's life over real processes (docs/http-api.md): signals, restarts, reloads, damage.

Each test starts its own daemon (a subprocess on port 0) because each changes what a daemon
is: its state directory, its config file or its log format. Waits poll a condition. One test
runs a Daemon in process, to hold a checkpoint write at a gate.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from harness import DaemonProcess, Samples, async_request, sample, series, wait_for

from driftmon.checkpoint import CHECKPOINT_NAME

JSON_TYPE = "application/json"


def x_feature() -> dict[str, object]:
    return {
        "name": "x",
        "type": "numeric",
        "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 5},
    }


def c_feature() -> dict[str, object]:
    return {"name": "c", "type": "categorical", "categories": ["red", "green", "blue"]}


def reference_rows() -> list[dict[str, object]]:
    """Even x over [0, 10), colours 50/30/20 %."""
    rng = np.random.default_rng(11)
    colours = rng.choice(["red", "green", "blue"], 200, p=[0.5, 0.3, 0.2])
    return [
        {"x": round(float(x), 2), "c": str(c)}
        for x, c in zip(rng.uniform(0, 10, 200), colours, strict=True)
    ]


def rows(seed: int, n: int, *, drifted: bool) -> bytes:
    """``n`` rows as a JSON array; drifted rows pile x up at the top and turn blue."""
    rng = np.random.default_rng(seed)
    if drifted:
        xs = rng.uniform(7, 10, n)
        colours = rng.choice(["red", "green", "blue"], n, p=[0.1, 0.1, 0.8])
    else:
        xs = rng.uniform(0, 10, n)
        colours = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    body = [{"x": round(float(x), 2), "c": str(c)} for x, c in zip(xs, colours, strict=True)]
    return json.dumps(body).encode()


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2))
    return path


def post(process: DaemonProcess, stream: str, body: bytes) -> None:
    reply = process.post_rows(stream, body)
    assert reply.status == 200, (reply.status, reply.body)


def monitor_state(process: DaemonProcess, stream: str, feature: str) -> dict[str, Any]:
    """What a restart must keep of one monitor: counts and alert states with their times."""
    detail = process.monitor(stream, feature)
    return {
        "bins": detail["bins"],
        "reference_counts": detail["reference_counts"],
        "live_counts": detail["live_counts"],
        "reference_samples": detail["reference_samples"],
        "samples": detail["samples"],
        "alerts": sorted(
            (a["rule"], a["state"], a["active_at"], a["fired_at"]) for a in detail["alerts"]
        ),
    }


def alert_state(process: DaemonProcess, stream: str, feature: str, rule: str) -> str | None:
    reply = process.get(f"/api/v1/monitors/{stream}/{feature}")
    if reply.status != 200:
        return None
    for alert in reply.json()["alerts"]:
        if alert["rule"] == rule:
            return str(alert["state"])
    return None


# --- SIGTERM, SIGINT and restarts ---------------------------------------------------------------


@pytest.fixture
def durable(tmp_path: Path) -> Path:
    """A config with a file reference, a warmup reference and alerts, checkpointing to state/.

    The periodic checkpoint is an hour apart, so what a restart finds was written on the way
    out by the signal handler path.
    """
    (tmp_path / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in reference_rows())
    )
    return write_config(
        tmp_path / "driftmon.yaml",
        {
            "server": {"listen": "127.0.0.1:0"},
            "engine": {"evaluate_every": "100ms"},
            "state": {"dir": "state", "checkpoint_every": "1h"},
            "defaults": {"window": {"length": "1h", "panes": 4}},
            "streams": [
                {
                    "name": "filed",
                    "reference": {"file": "reference.ndjson"},
                    "features": [x_feature(), c_feature()],
                },
                {
                    "name": "warm",
                    "reference": {"warmup": 40},
                    "window": {"samples": 100},
                    "features": [x_feature(), c_feature()],
                },
            ],
            "alerts": [
                {
                    "name": "js-now",
                    "match": {"stream": "*", "feature": "*"},
                    "metric": "js",
                    "threshold": 0.05,
                    "min_samples": 10,
                    "severity": "page",
                },
                {
                    "name": "js-slow",
                    "match": {"stream": "*", "feature": "x"},
                    "metric": "js",
                    "threshold": 0.05,
                    "for": "1h",
                    "min_samples": 10,
                    "severity": "ticket",
                },
            ],
        },
    )


MONITORS = [("filed", "x"), ("filed", "c"), ("warm", "x"), ("warm", "c")]


def snapshot(process: DaemonProcess) -> dict[tuple[str, str], dict[str, Any]]:
    return {key: monitor_state(process, *key) for key in MONITORS}


def test_sigterm_and_sigint_checkpoint_and_a_restart_restores_everything(durable: Path) -> None:
    state_dir = durable.parent / "state"
    first = DaemonProcess(durable)
    with first:
        post(first, "warm", rows(1, 40, drifted=False))  # the warmup: the reference is frozen
        post(first, "warm", rows(2, 60, drifted=True))
        post(first, "filed", rows(3, 50, drifted=True))
        wait_for(
            lambda: all(
                alert_state(first, stream, "x", "js-now") == "firing"
                and alert_state(first, stream, "x", "js-slow") == "pending"
                for stream in ("filed", "warm")
            ),
            30.0,
            "js-now firing and js-slow pending",
        )
        before = snapshot(first)
        assert first.stop(signal.SIGTERM) == 0
    assert (state_dir / CHECKPOINT_NAME).is_file()
    assert "stopped" in first.log_text()
    warm_x = before[("warm", "x")]
    assert warm_x["reference_samples"] == 40 and warm_x["samples"] == 60
    assert sum(warm_x["reference_counts"]) == 40
    assert ("js-now", "firing") in [a[:2] for a in warm_x["alerts"]]

    second = DaemonProcess(durable)
    with second:
        assert snapshot(second) == before
        samples = second.metrics()
        assert sample(samples, "driftmon_window_samples", stream="warm", feature="x") == 60
        labels = {"stream": "warm", "feature": "x", "rule": "js-now", "severity": "page"}
        assert sample(samples, "driftmon_alert_firing", **labels) == 1
        post(second, "filed", rows(4, 20, drifted=False))
        wait_for(lambda: second.monitor("filed", "x")["samples"] == 70, 30.0, "70 rows evaluated")
        after_more = snapshot(second)
        assert second.stop(signal.SIGINT) == 0
    assert "stopped" in second.log_text()

    third = DaemonProcess(durable)
    with third:
        assert snapshot(third) == after_more
        assert third.stop(signal.SIGTERM) == 0


# --- reloads ----------------------------------------------------------------------------------


def reloadable(with_b: bool, broken: bool = False, with_c: bool = True) -> dict[str, Any]:
    """Stream ``a`` (x and, optionally, c) and, optionally, stream ``b`` (x); ``broken`` adds
    two errors."""
    x = x_feature()
    if broken:
        x = {**x, "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 0}}
    features = [x, c_feature()] if with_c else [x]
    streams = [{"name": "a", "reference": {"file": "reference.ndjson"}, "features": features}]
    if with_b:
        streams.append(
            {"name": "b", "reference": {"file": "reference.ndjson"}, "features": [x_feature()]}
        )
    document: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"},
        "engine": {"evaluate_every": "100ms"},
        "defaults": {"window": {"length": "1h", "panes": 4}},
        "streams": streams,
        "alerts": [
            {
                "name": "js-high",
                "match": {"stream": "*", "feature": "*"},
                "metric": "js",
                "threshold": 0.05,
                "min_samples": 10,
            }
        ],
    }
    if broken:
        document["engine"] = {"evaluate_every": "100ms", "evaluate_evrey": "1s"}
    return document


def reload_ok(process: DaemonProcess) -> float | None:
    return sample(process.metrics(), "driftmon_config_last_reload_successful")


def stream_series(samples: Samples, stream: str) -> list[tuple[str, Any]]:
    return [(name, labels) for name, labels in samples if ("stream", stream) in labels]


def test_reload_keeps_the_old_config_on_errors_and_applies_a_good_one(tmp_path: Path) -> None:
    (tmp_path / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in reference_rows())
    )
    path = write_config(tmp_path / "driftmon.yaml", reloadable(with_b=True))
    with DaemonProcess(path) as process:
        post(process, "a", rows(5, 30, drifted=True))
        post(process, "b", rows(6, 30, drifted=True))
        wait_for(
            lambda: sample(process.metrics(), "driftmon_js_divergence", stream="b", feature="x"),
            30.0,
            "b's divergences",
        )
        kept_x = monitor_state(process, "a", "x")
        assert kept_x["samples"] == 30

        # A broken file: SIGHUP keeps serving the old config and says so.
        write_config(path, reloadable(with_b=False, broken=True))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: reload_ok(process) == 0, 30.0, "reload_successful 0 after SIGHUP")
        process.wait_log(r"reload failed.*streams\[0\]\.features\[0\]\.bins\.count")
        post(process, "b", rows(7, 10, drifted=True))
        assert sum(process.monitor("b", "x")["live_counts"]) == 40
        assert process.monitor("a", "x")["live_counts"] == kept_x["live_counts"]

        # The same through the API: 400 with every error, each with its path.
        reply = process.post("/-/reload")
        assert reply.status == 400
        errors = reply.json()["errors"]
        assert any(e.startswith("streams[0].features[0].bins.count") for e in errors), errors
        assert any("engine.evaluate_evrey" in e for e in errors), errors
        assert reload_ok(process) == 0
        assert stream_series(process.metrics(), "b")

        # Fixed, without stream b: 200, b's series are gone at once, a/x keeps its counts.
        write_config(path, reloadable(with_b=False))
        reply = process.post("/-/reload")
        assert reply.status == 200, reply.body
        assert reply.json() == {"status": "reloaded", "notices": []}
        samples = process.metrics()
        assert sample(samples, "driftmon_config_last_reload_successful") == 1
        assert stream_series(samples, "b") == []
        assert sample(samples, "driftmon_window_samples", stream="a", feature="x") == 30
        assert process.get("/api/v1/monitors/b/x").status == 404
        assert process.post_rows("b", rows(8, 5, drifted=False)).status == 404
        assert monitor_state(process, "a", "x") == kept_x

        # SIGHUP applies a good file too: without a's feature c, only a/x is left.
        write_config(path, reloadable(with_b=False, with_c=False))
        process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                not series(process.metrics(), "driftmon_window_samples", stream="a", feature="c")
            ),
            30.0,
            "a/c gone after SIGHUP",
        )
        samples = process.metrics()
        assert sample(samples, "driftmon_config_last_reload_successful") == 1
        assert [name for name, labels in samples if ("feature", "c") in labels] == []
        assert process.get("/api/v1/monitors/a/c").status == 404
        assert monitor_state(process, "a", "x") == kept_x
        # Counters do not restart with a reload.
        assert sample(samples, "driftmon_ingest_rows_total", stream="a") == 30
        assert process.stop() == 0


def test_a_reload_says_which_changes_wait_for_a_restart(one_stream: Path, tmp_path: Path) -> None:
    document = json.loads(one_stream.read_text())
    with DaemonProcess(one_stream) as process:
        post(process, "a", rows(19, 10, drifted=False))
        document["state"]["dir"] = "elsewhere"
        document["ingest"] = {"processes": 1, "workers": 3}
        write_config(one_stream, document)
        reply = process.post("/-/reload")
        assert reply.status == 200, reply.body
        notices = reply.json()["notices"]
        assert any(
            n.startswith("state.dir changes only at restart: checkpoints still go to")
            and str(tmp_path / "state") in n
            for n in notices
        ), notices
        assert any(n.startswith("ingest.processes changes only at restart") for n in notices)
        assert any(n.startswith("ingest.workers changes only at restart") for n in notices)
        process.wait_log(r"WARNING .*reload: state\.dir changes only at restart")
        process.wait_log(r"WARNING .*reload: ingest\.processes changes only at restart")
        assert process.stop() == 0
    assert (tmp_path / "state" / CHECKPOINT_NAME).is_file()
    assert not (tmp_path / "elsewhere").exists()


def test_concurrent_reload_requests_are_serialised_and_coalesced(one_stream: Path) -> None:
    """Thirty POST /-/reload at once: each is answered, no two reloads overlap, and they
    share reloads (each caller gets one that read the file after it asked) instead of
    running thirty."""

    async def thirty(url: str) -> list[int]:
        async with aiohttp.ClientSession() as session:
            replies = await asyncio.gather(
                *(async_request(session, "POST", url + "/-/reload") for _ in range(30))
            )
        return [reply.status for reply in replies]

    # 400 streams: a reload takes long enough that the thirty requests arrive during one.
    document = json.loads(one_stream.read_text())
    document["streams"] = [{**document["streams"][0], "name": f"s{i}"} for i in range(400)]
    write_config(one_stream, document)
    with DaemonProcess(one_stream) as process:
        assert asyncio.run(thirty(process.url)) == [200] * 30
        reloads = process.log_text().count("config reloaded from")
        assert 1 <= reloads <= 4, reloads
        assert process.stop() == 0


def test_reloads_while_clients_post_lose_no_rows(tmp_path: Path) -> None:
    """A reload builds a new engine while batches are being binned against the old one:
    every row answered 200 is in the window afterwards, exactly once."""
    (tmp_path / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in reference_rows())
    )
    path = write_config(tmp_path / "driftmon.yaml", reloadable(with_b=True))
    body = rows(16, 25, drifted=False)
    statuses: list[int] = []

    async def client(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(60):
                reply = await async_request(session, "POST", url, body, {"Content-Type": JSON_TYPE})
                statuses.append(reply.status)

    async def clients_and_reloads(base: str) -> list[int]:
        posting = asyncio.gather(*(client(base + "/v1/streams/a/rows") for _ in range(4)))
        reloads = []
        async with aiohttp.ClientSession() as session:
            while not posting.done():
                reloads.append((await async_request(session, "POST", base + "/-/reload")).status)
        await posting
        return reloads

    with DaemonProcess(path) as process:
        reloads = asyncio.run(clients_and_reloads(process.url))
        assert len(reloads) >= 2 and set(reloads) == {200}, reloads
        assert statuses == [200] * 240
        assert sum(process.monitor("a", "x")["live_counts"]) == 240 * 25
        assert sum(process.monitor("a", "c")["live_counts"]) == 240 * 25
        samples = process.metrics()
        assert sample(samples, "driftmon_ingest_rows_total", stream="a") == 240 * 25
        assert sample(samples, "driftmon_config_last_reload_successful") == 1
        assert process.stop() == 0


# --- damage and logs --------------------------------------------------------------------------


@pytest.fixture
def one_stream(tmp_path: Path) -> Path:
    """A config of one stream (file reference) checkpointing to an empty state/ folder."""
    (tmp_path / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in reference_rows())
    )
    (tmp_path / "state").mkdir()
    return write_config(
        tmp_path / "driftmon.yaml",
        {
            "server": {"listen": "127.0.0.1:0"},
            "engine": {"evaluate_every": "100ms"},
            "state": {"dir": "state", "checkpoint_every": "1h"},
            "streams": [
                {
                    "name": "a",
                    "reference": {"file": "reference.ndjson"},
                    "features": [x_feature(), c_feature()],
                }
            ],
        },
    )


CORRUPT = b"DRIFTMON-CHECKPOINT\nthis is not a checkpoint\x00"


@pytest.fixture
def corrupt_state(one_stream: Path) -> Path:
    """``one_stream`` whose state folder holds a corrupt checkpoint and a stale temporary."""
    state_dir = one_stream.parent / "state"
    (state_dir / CHECKPOINT_NAME).write_bytes(CORRUPT)
    (state_dir / f".{CHECKPOINT_NAME}.tmp-1-deadbeef").write_bytes(b"half a write")
    return one_stream


def test_corrupt_checkpoint_is_moved_aside_and_json_logs_say_so(corrupt_state: Path) -> None:
    state_dir = corrupt_state.parent / "state"
    with DaemonProcess(corrupt_state, args=["--log-format", "json"]) as process:
        aside = sorted(state_dir.glob(f"{CHECKPOINT_NAME}.corrupt-*"))
        assert len(aside) == 1, list(state_dir.iterdir())
        assert aside[0].read_bytes() == CORRUPT
        assert not (state_dir / f".{CHECKPOINT_NAME}.tmp-1-deadbeef").exists()
        post(process, "a", rows(9, 25, drifted=False))
        wait_for(lambda: process.monitor("a", "x")["samples"] == 25, 30.0, "25 rows evaluated")
        assert sample(process.metrics(), "driftmon_ingest_rows_total", stream="a") == 25
        assert process.stop() == 0
    assert (state_dir / CHECKPOINT_NAME).is_file()  # a good one, written on the way out
    assert sorted(state_dir.glob(f"{CHECKPOINT_NAME}.corrupt-*")) == aside
    assert process.stdout == []  # logs go to standard error
    records = [json.loads(line) for line in process.stderr]
    assert records and all(isinstance(r, dict) for r in records)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    errors = [r["message"] for r in records if r["level"] == "error"]
    assert any("checkpoint" in message for message in errors), errors
    messages = [r["message"] for r in records]
    assert any(m.startswith("listening on http://127.0.0.1:") for m in messages), messages
    assert any(m == "stopped" for m in messages), messages


def test_restart_after_the_corrupt_one_restores_the_new_checkpoint(corrupt_state: Path) -> None:
    """The checkpoint written after a corrupt start is a good one: the next start reads it."""
    with DaemonProcess(corrupt_state) as first:
        post(first, "a", rows(10, 15, drifted=True))
        kept = monitor_state(first, "a", "c")
        assert first.stop(signal.SIGINT) == 0
    with DaemonProcess(corrupt_state) as second:
        assert monitor_state(second, "a", "c")["live_counts"] == kept["live_counts"]
        assert "checkpoint unusable" not in second.log_text()
        assert second.stop() == 0


# --- not ready yet, and draining on the way out ---------------------------------------------------


class InProcessDaemon:
    """A :class:`~driftmon.daemon.Daemon` serving from a thread of this process.

    For tests that hold the daemon at a gate inside its start; ``stop`` asks its main loop
    to stop (thread-safely) and returns the exit status.
    """

    def __init__(self, config_path: Path) -> None:
        from driftmon.config import load_config
        from driftmon.daemon import Daemon

        self.daemon = Daemon(config_path, load_config(config_path))
        self.url = ""
        self.status: int | None = None
        self._listening = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        def on_listening(url: str) -> None:
            self.url = url
            self._loop = asyncio.get_running_loop()
            self._listening.set()

        from driftmon.cli import serve_daemon

        self.status = asyncio.run(serve_daemon(self.daemon, on_listening))

    def start(self) -> InProcessDaemon:
        self._thread.start()
        assert self._listening.wait(120.0), "the daemon did not listen"
        return self

    def get(self, path: str) -> Any:
        from harness import request

        return request("GET", self.url + path)

    def post(self, path: str, body: bytes = b"", content_type: str = JSON_TYPE) -> Any:
        from harness import request

        return request("POST", self.url + path, body, {"Content-Type": content_type})

    def stop(self) -> int | None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.daemon.request, "stop")
        self._thread.join(60.0)
        assert not self._thread.is_alive()
        return self.status


def test_not_ready_until_state_is_restored(
    one_stream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restoring is held at a gate, so the daemon is listening and not ready for exactly as
    long as the test wants. (In process: a checkpoint that is a FIFO, the way a subprocess
    test could hold it, is now refused without waiting.)"""
    from harness import parse_metrics

    import driftmon.daemon as daemon_module

    held, gate = threading.Event(), threading.Event()
    restore = daemon_module.restore_or_move_aside

    def gated_restore(state_dir: Path) -> Any:
        held.set()
        assert gate.wait(60.0)
        return restore(state_dir)

    monkeypatch.setattr(daemon_module, "restore_or_move_aside", gated_restore)
    served = InProcessDaemon(one_stream).start()
    try:
        assert held.wait(60.0)
        assert served.get("/-/healthy").status == 200
        assert served.get("/-/ready").status == 503
        reply = served.post("/v1/streams/a/rows", rows(12, 5, drifted=False))
        assert reply.status == 503
        assert int(reply.headers["Retry-After"]) >= 1
        assert "not ready" in reply.json()["error"]
        assert served.post("/-/reload").status == 503
        assert served.get("/api/v1/monitors").json()["monitors"] == []
        samples = parse_metrics(served.get("/metrics").body.decode())
        assert sample(samples, "driftmon_ingest_requests_total", code="503") == 1
        assert series(samples, "driftmon_window_samples") == {}
    finally:
        gate.set()
    wait_for(lambda: served.get("/-/ready").status == 200, 60.0, "/-/ready after restoring")
    assert served.post("/v1/streams/a/rows", rows(13, 5, drifted=False)).status == 200
    assert served.stop() == 0


def test_sigterm_drains_requests_in_flight(durable: Path) -> None:
    """Clients post while the daemon is told to stop: every row answered 200 is in the
    checkpoint it writes on the way out, and no other row is."""
    body = rows(14, 10, drifted=False)
    statuses: list[int] = []
    failures: list[str] = []
    go = threading.Event()

    async def client(url: str) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                try:
                    reply = await async_request(
                        session, "POST", url, body, {"Content-Type": JSON_TYPE}
                    )
                except aiohttp.ClientError as exc:  # the listener closed: stop posting
                    failures.append(type(exc).__name__)
                    return
                statuses.append(reply.status)
                if len(statuses) >= 40:
                    go.set()

    async def clients(url: str) -> None:
        await asyncio.gather(*(client(url) for _ in range(4)))

    with DaemonProcess(durable) as first:
        flood = threading.Thread(
            target=asyncio.run, args=(clients(first.url + "/v1/streams/filed/rows"),)
        )
        flood.start()
        try:
            assert go.wait(30.0), "no requests answered"
            assert first.stop(signal.SIGTERM) == 0
        finally:
            flood.join(60.0)
    assert not flood.is_alive()
    assert set(statuses) <= {200, 503}, set(statuses)
    accepted = 10 * statuses.count(200)
    assert accepted >= 400
    with DaemonProcess(durable) as second:
        assert sum(second.monitor("filed", "x")["live_counts"]) == accepted
        assert second.stop() == 0


def test_sigterm_with_a_stalled_upload_exits_within_the_grace_and_keeps_every_row(
    one_stream: Path,
) -> None:
    """An upload that stalls mid-body holds a stop for server.shutdown_grace (5 s by
    default) at most, not aiohttp's 60 s: the process exits 0 well before a supervisor's
    kill, and the checkpoint it writes on the way out holds every acknowledged row."""
    with DaemonProcess(one_stream) as first:
        for seed in range(10):
            post(first, "a", rows(100 + seed, 100, drifted=False))
        host, port = first.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as stalled:
            head = (
                "POST /v1/streams/a/rows HTTP/1.1\r\n"
                f"Host: {host}\r\nContent-Type: {JSON_TYPE}\r\n"
                "Content-Length: 1000000\r\n\r\n"
            )
            stalled.sendall(head.encode() + b'[{"x": 1, "c": "red"}, ')
            # A round trip on another connection: the daemon has read the stalled head.
            assert first.get("/-/healthy").status == 200
            assert first.process is not None
            started = time.monotonic()
            first.send_signal(signal.SIGTERM)
            try:
                code = first.process.wait(timeout=5.0 + 8.0)
            except subprocess.TimeoutExpired:
                pytest.fail("SIGTERM waited for the stalled upload (aiohttp's 60 s timeout)")
            elapsed_s = time.monotonic() - started
        assert code == 0, first.log_text()
    assert elapsed_s < 13.0
    assert "stopped" in first.log_text()
    with DaemonProcess(one_stream) as second:
        assert sum(second.monitor("a", "x")["live_counts"]) == 1000
        assert second.stop() == 0


# --- starts that cannot serve -------------------------------------------------------------------


def run_to_exit(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``driftmon run -c config ARGS`` to its end (it must end by itself)."""
    return subprocess.run(
        [sys.executable, "-m", "driftmon", "run", "-c", str(config), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_taken_port_is_a_clear_error_and_exit_1(one_stream: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = run_to_exit(one_stream, "--listen", f"127.0.0.1:{port}")
    assert finished.returncode == 1, finished.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(one_stream: Path) -> None:
    """Two daemons on one state.dir would restore and overwrite each other's checkpoints."""
    state_dir = one_stream.parent / "state"
    with DaemonProcess(one_stream) as first:
        post(first, "a", rows(16, 20, drifted=False))
        assert first.process is not None
        second = run_to_exit(one_stream)
        assert second.returncode == 1, second.stderr
        assert re.search(
            rf"state.dir {re.escape(str(state_dir))} is in use by another driftmon "
            rf"\(pid {first.process.pid}\)",
            second.stderr,
        ), second.stderr
        assert "listening on" not in second.stderr  # refused before taking the port
        assert "Traceback" not in second.stderr, second.stderr
        assert list(state_dir.glob(f".{CHECKPOINT_NAME}.tmp-*")) == []
        assert first.stop() == 0
    # Released with the process: the next start takes it and restores every row.
    with DaemonProcess(one_stream) as third:
        assert sum(third.monitor("a", "x")["live_counts"]) == 20
        assert third.stop() == 0


def test_a_reference_that_cannot_load_is_exit_1(tmp_path: Path) -> None:
    (tmp_path / "reference.csv").write_text("x,c\n")  # a header, no rows
    config = write_config(
        tmp_path / "driftmon.yaml",
        {
            "server": {"listen": "127.0.0.1:0"},
            "streams": [
                {
                    "name": "a",
                    "reference": {"file": "reference.csv"},
                    "features": [x_feature(), c_feature()],
                }
            ],
        },
    )
    finished = run_to_exit(config)
    assert finished.returncode == 1, finished.stderr
    assert re.search(r"cannot start: .*reference\.csv", finished.stderr), finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr


def test_sigterm_exits_1_and_says_so_when_the_final_checkpoint_fails(one_stream: Path) -> None:
    state_dir = one_stream.parent / "state"
    with DaemonProcess(one_stream) as process:
        post(process, "a", rows(17, 10, drifted=False))
        # A non-empty folder where the checkpoint goes: the rename over it fails.
        (state_dir / CHECKPOINT_NAME).mkdir()
        (state_dir / CHECKPOINT_NAME / "in-the-way").write_text("x")
        assert process.stop() == 1
    log = process.log_text()
    assert re.search(r"ERROR .*checkpoint failed", log), log
    assert re.search(r"ERROR .*final checkpoint failed.*exiting with status 1", log), log


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    found = re.search(r"^SigCgt:\s+([0-9a-f]+)", status, re.MULTILINE)
    return found is not None and bool(int(found.group(1), 16) >> (signum - 1) & 1)


def send_during_start(process: DaemonProcess, signum: int, times: int, every_s: float) -> None:
    """In a thread: once ``process`` runs Python code, send ``signum`` ``times`` times.

    No program can catch a signal before its interpreter has started; Python's own SIGINT
    handler, installed just before the main module runs, marks that moment, and the first
    signal goes 0.3 s later (numpy, numba and aiohttp still import for longer than that).
    """

    def send() -> None:
        wait_for(lambda: process.process is not None, 30.0, "the process to spawn")
        assert process.process is not None
        pid = process.process.pid
        wait_for(lambda: catches(pid, signal.SIGINT), 30.0, "the interpreter to start")
        time.sleep(0.3)
        for _ in range(times):
            time.sleep(every_s)
            if process.process.poll() is not None:
                return
            process.process.send_signal(signum)

    threading.Thread(target=send, daemon=True).start()


def test_sighup_while_the_process_starts_does_not_kill_it(one_stream: Path) -> None:
    """HUPs from the first instant on (imports, config, kernels, restore) are reloads."""
    process = DaemonProcess(one_stream)
    send_during_start(process, signal.SIGHUP, times=15, every_s=0.05)
    with process:  # listens and becomes ready
        post(process, "a", rows(18, 5, drifted=False))
        wait_for(lambda: "config reloaded" in process.log_text(), 30.0, "the deferred reload")
        assert process.stop() == 0


def test_ctrl_c_during_imports_exits_without_a_traceback(one_stream: Path) -> None:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "driftmon", "run", "-c", str(one_stream)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.15)  # numpy, numba and aiohttp take longer than this to import
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert process.returncode in (0, 128 + signal.SIGINT), (process.returncode, stderr)
    assert time.monotonic() - started < 30.0
    assert not (one_stream.parent / "state" / CHECKPOINT_NAME).exists()


def test_ctrl_c_while_kernels_compile_stops_at_once(one_stream: Path, tmp_path: Path) -> None:
    """An empty numba cache: the kernels compile for tens of seconds, and the log says so.
    Ctrl-C then stops the daemon within seconds, writing no checkpoint."""
    process = DaemonProcess(one_stream, env={"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")})
    try:
        process.start(wait_ready=False)
        process.wait_log(r"INFO .*preparing kernels \(compiling them .* first start only\)")
        assert process.get("/-/ready").status == 503
        stopping = time.monotonic()
        assert process.stop(signal.SIGINT, timeout_s=30.0) == 0
        assert time.monotonic() - stopping < 5.0
    finally:
        process.kill()
    log = process.log_text()
    assert "Traceback" not in log, log
    assert "stopped while starting: nothing restored, no checkpoint written" in log, log
    assert "kernels ready" not in log, log
    assert not (one_stream.parent / "state" / CHECKPOINT_NAME).exists()


# --- in process: the checkpoint written at shutdown is never overtaken ---------------------------


def test_a_late_periodic_checkpoint_never_overwrites_a_newer_one(
    one_stream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown cancels the periodic checkpoint task, but its thread may still be writing
    an older state when the final checkpoint runs. Checkpoints are serialised, so the
    newest state is what stays on disk. (In process: the write is held at a gate.)"""
    import driftmon.daemon as daemon_module
    from driftmon.config import load_config
    from driftmon.daemon import Daemon
    from driftmon.sources import parse_body

    config = load_config(one_stream)
    daemon = Daemon(one_stream, config)
    daemon.load_state()
    held, gate = threading.Event(), threading.Event()
    write = daemon_module.write_checkpoint

    def gated_write(state_dir: Path, state: Any, *, saved_at: float) -> Path:
        if not held.is_set():  # the first (periodic) write waits at the gate
            held.set()
            assert gate.wait(30.0)
        return write(state_dir, state, saved_at=saved_at)

    monkeypatch.setattr(daemon_module, "write_checkpoint", gated_write)
    periodic = threading.Thread(target=daemon.checkpoint)
    periodic.start()
    assert held.wait(30.0)
    daemon.ingest_batch("a", parse_body(rows(15, 7, drifted=True), JSON_TYPE, ["x", "c"]))
    final = threading.Thread(target=daemon.checkpoint)
    final.start()
    final.join(0.5)  # unserialised, the final write would be done by now
    gate.set()
    periodic.join(30.0)
    final.join(30.0)
    assert not periodic.is_alive() and not final.is_alive()
    restarted = Daemon(one_stream, config)
    restarted.load_state()
    detail = restarted.monitor_detail("a", "x")
    assert detail is not None and sum(detail["live_counts"]) == 7


# --- wall-clock steps while running --------------------------------------------------------------


def test_wall_clock_steps_neither_empty_nor_freeze_windows_and_timers(tmp_path: Path) -> None:
    """A +3 h step keeps the window's rows and a pending ``for: 5m`` pending; a step back
    does not stop rotation; published times follow the wall clock. (In process, the
    daemon's steady clock reading a fake wall clock and a fake monotonic clock.)"""
    from driftmon.clock import SteadyClock
    from driftmon.config import load_config
    from driftmon.daemon import Daemon
    from driftmon.sources.bodies import parse_body

    (tmp_path / "reference.ndjson").write_text(
        "".join(json.dumps(row) + "\n" for row in reference_rows())
    )
    config_path = write_config(
        tmp_path / "driftmon.yaml",
        {
            "streams": [
                {
                    "name": "a",
                    "reference": {"file": "reference.ndjson"},
                    "window": {"length": "15m", "panes": 15},
                    "features": [x_feature(), c_feature()],
                }
            ],
            "alerts": [
                {
                    "name": "drift",
                    "match": {"stream": "a", "feature": "c"},
                    "metric": "js",
                    "threshold": 0.01,
                    "for": "5m",
                    "min_samples": 1,
                }
            ],
        },
    )
    wall, monotonic = [1_800_000_000.0], [1000.0]
    clock = SteadyClock(wall=lambda: wall[0], monotonic=lambda: monotonic[0])
    daemon = Daemon(config_path, load_config(config_path), clock=clock)
    daemon.load_state()

    def send(seed: int, n: int) -> None:
        daemon.ingest_batch("a", parse_body(rows(seed, n, drifted=True), JSON_TYPE, ["x", "c"]))

    def samples_and_state() -> tuple[int, int, float]:
        evaluation = daemon.evaluate()
        (pair,) = [i for i, p in enumerate(evaluation.alert_pairs) if p.rule.name == "drift"]
        monitor = evaluation.alert_pairs[pair].monitor
        return (
            int(evaluation.window_samples[monitor]),
            int(evaluation.alerts.state[pair]),
            evaluation.time,
        )

    send(20, 40)
    assert samples_and_state() == (40, 1, wall[0])  # pending
    wall[0] += 3 * 3600  # the wall clock steps 3 h forward within one second
    monotonic[0] += 1.0
    send(21, 10)
    count, state, shown = samples_and_state()
    assert (count, state) == (50, 1)  # nothing expired, still pending: 1 s, not 3 h, passed
    assert shown == wall[0]  # published in wall-clock time
    monotonic[0] += 301.0
    wall[0] += 301.0
    assert samples_and_state()[:2] == (50, 2)  # firing once 5 minutes really passed
    wall[0] -= 5 * 3600  # a step back: rotation goes on with real time
    monotonic[0] += 16 * 60
    count, _, shown = samples_and_state()
    assert count == 0 and shown == wall[0]
