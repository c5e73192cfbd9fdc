"""``driftmon.client.Client`` against the real daemon and against a tiny stub server.

The real daemon (``tests/harness.py``) shows that what the client sends
arrives, exactly once, across a restart and after an outage that overflowed
the buffer. A stub (the standard library's ``http.server``) shows what goes
over the wire: columnar bodies, batch sizes, retries, ``Retry-After``, final
answers. The examples in ``examples/`` are checked at the end: their driftmon
config passes ``driftmon check`` and the model service feeds a real daemon.
"""

from __future__ import annotations

import dataclasses
import email.utils
import importlib.util
import json
import logging
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import DaemonProcess, Samples, sample, wait_for

import driftmon.client
from driftmon.cli import main as driftmon_main
from driftmon.client import MAX_RETRY_AFTER_S, Client, encode_rows, retry_after_s
from driftmon.config import load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# --- a stub ingest server ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Received:
    """One request the stub read; ``at`` is ``time.monotonic()`` when its body was in."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def columns(self) -> dict[str, list[Any]]:
        """The body's ``columns`` object (decoded with NaN/Infinity, as the daemon does)."""
        document = json.loads(self.body)
        assert set(document) == {"columns"}, document
        return document["columns"]  # type: ignore[no-any-return]

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns().values())))


Answer = tuple[int, dict[str, str], dict[str, Any]]


class Stub:
    """An HTTP/1.1 server on a free port that records every request.

    Each request takes the next answer of ``script``; once it is empty the
    answer is ``default`` (200 ``{"rows": N}`` unless set).
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.default: Answer | None = None
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with stub.lock:
                    stub.received.append(
                        Received(time.monotonic(), "POST", self.path, dict(self.headers), body)
                    )
                    answer = stub.script.pop(0) if stub.script else stub.default
                if answer is None:
                    document = json.loads(body)
                    rows = len(next(iter(document["columns"].values())))
                    answer = (200, {}, {"rows": rows})
                status, headers, payload = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """A factory of clients, every one closed (without waiting) at the end of the test."""
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        client = Client(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=0)


def free_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rows_of(requests: list[Received]) -> list[dict[str, Any]]:
    """The rows of columnar bodies, in order, keys whose value is null left out."""
    rows: list[dict[str, Any]] = []
    for request in requests:
        columns = request.columns()
        for i in range(request.n_rows):
            rows.append({k: v[i] for k, v in columns.items() if v[i] is not None})
    return rows


# --- a real daemon -----------------------------------------------------------------------

UNIFORM_X = {"kind": "uniform", "lo": 0, "hi": 10, "count": 10}
CATEGORIES = ["a", "b", "c"]


def write_config(folder: Path, streams: list[dict[str, Any]], **sections: Any) -> Path:
    """A daemon config in ``folder`` with a small reference file every stream can use."""
    reference = folder / "reference.ndjson"
    reference.write_text(
        "".join(
            json.dumps({"x": k % 10 + 0.5, "c": CATEGORIES[k % 3], "i": k}) + "\n"
            for k in range(60)
        )
    )
    config = {
        "engine": {"evaluate_every": "200ms"},
        "defaults": {"window": {"samples": 1_000_000}},
        "streams": [{"reference": {"file": str(reference)}, **s} for s in streams],
        **sections,
    }
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def x_stream(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "features": [
            {"name": "x", "type": "numeric", "bins": UNIFORM_X},
            {"name": "c", "type": "categorical", "categories": CATEGORIES},
        ],
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("client-daemon")
    path = write_config(folder, [x_stream("arrive"), x_stream("refused"), x_stream("bulk")])
    with DaemonProcess(path) as process:
        yield process


def rows_total(samples: Samples, stream: str) -> float:
    return sample(samples, "driftmon_ingest_rows_total", stream=stream) or 0.0


def requests_with(samples: Samples, code: int) -> float:
    return sample(samples, "driftmon_ingest_requests_total", code=str(code)) or 0.0


def live_counts(process: DaemonProcess, stream: str, feature: str) -> list[int]:
    return [int(n) for n in process.monitor(stream, feature)["live_counts"]]


def x_bin(value: float | None) -> int:
    """docs/configuration.md for ``UNIFORM_X``: underflow, 10 bins, overflow, missing, invalid."""
    if value is None or math.isnan(value):
        return 12
    if value < 0:
        return 0
    if value >= 10:
        return 11
    return 1 + int(value)


def c_bin(value: object) -> int:
    """docs/configuration.md#bins for ``CATEGORIES``: a, b, c, other, missing, invalid."""
    if value is None:
        return 4
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return 5
    return CATEGORIES.index(value) if value in CATEGORIES else 3


def varied_row(k: int) -> dict[str, Any]:
    """Row ``k`` of a mix: absent fields, NaN, ±Infinity, other/int/invalid categories."""
    row: dict[str, Any] = {"x": k % 10 + 0.25, "c": CATEGORIES[k % 3]}
    if k % 11 == 0:
        row["x"] = math.nan
    elif k % 13 == 0:
        row["x"] = math.inf
    elif k % 17 == 0:
        row["x"] = -math.inf
    elif k % 19 == 0:
        del row["x"]
    if k % 7 == 0:
        del row["c"]
    elif k % 23 == 0:
        row["c"] = "zzz"
    elif k % 29 == 0:
        row["c"] = [1, 2]
    if k % 5 == 0:
        row["unmonitored"] = k
    return row


def test_everything_logged_from_many_threads_arrives_exactly(
    daemon: DaemonProcess, clients: Callable[..., Client]
) -> None:
    client = clients(daemon.url, "arrive", batch_rows=300, flush_every=0.05)
    before = daemon.metrics()
    n_threads, per_thread = 4, 2500

    def produce(first: int) -> None:
        for k in range(first, first + per_thread):
            client.log(varied_row(k))

    threads = [threading.Thread(target=produce, args=(t * per_thread,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=60)
    total = n_threads * per_thread
    stats = client.stats
    assert (stats.rows_logged, stats.rows_accepted, stats.rows_dropped, stats.rows_rejected) == (
        total,
        total,
        0,
        0,
    )
    assert stats.rows_pending == 0 and stats.retries == 0 and stats.last_error is None
    after = daemon.metrics()
    assert rows_total(after, "arrive") == total
    assert requests_with(after, 200) - requests_with(before, 200) == stats.requests
    assert stats.requests >= math.ceil(total / 300)
    expected_x = [0] * 14
    expected_c = [0] * 6
    for k in range(total):
        row = varied_row(k)
        expected_x[x_bin(row.get("x"))] += 1
        expected_c[c_bin(row.get("c"))] += 1
    assert live_counts(daemon, "arrive", "x") == expected_x
    assert live_counts(daemon, "arrive", "c") == expected_c


def test_batches_are_columnar_and_hold_at_most_batch_rows(
    stub: Stub, clients: Callable[..., Client]
) -> None:
    client = clients(stub.url, "s", batch_rows=100, flush_every=3600)
    rows = [varied_row(k) for k in range(250)]
    client.log_many(rows)
    assert client.flush(timeout=10)
    received = stub.requests()
    assert [r.n_rows for r in received] == [100, 100, 50]
    for first, request in zip((0, 100, 200), received, strict=True):
        assert request.path == "/v1/streams/s/rows"
        assert request.headers["Content-Type"] == "application/json"
        assert "Authorization" not in request.headers
        columns = request.columns()
        # The union of the batch's keys, in order of first appearance.
        batch = rows[first : first + request.n_rows]
        assert list(columns) == list(dict.fromkeys(k for row in batch for k in row))
        assert all(len(column) == request.n_rows for column in columns.values())
    # NaN and ±Infinity travel as literals, absent keys as null: the rows come back whole.
    sent = [r.body for r in received]
    assert b"NaN" in sent[0] and b"-Infinity" in sent[0] and b"null" in sent[0]
    for got, want in zip(rows_of(received), rows, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got[key])
            else:
                assert got[key] == value


def test_a_partial_batch_goes_after_flush_every(stub: Stub, clients: Callable[..., Client]) -> None:
    client = clients(stub.url, "s", batch_rows=1000, flush_every=0.1)
    client.log({"x": 1})
    client.log({"x": 2})
    wait_for(lambda: stub.requests(), 10, "a partial batch")
    assert rows_of(stub.requests()) == [{"x": 1}, {"x": 2}]
    assert client.flush(timeout=5) and client.stats.requests == 1


def test_rows_are_copied_when_logged(stub: Stub, clients: Callable[..., Client]) -> None:
    client = clients(stub.url, "s", flush_every=3600)
    row = {"x": 1}
    client.log(row)
    row["x"] = 2
    row["y"] = 3
    assert client.flush(timeout=5)
    assert rows_of(stub.requests()) == [{"x": 1}]


def test_token_is_sent_as_bearer(stub: Stub, clients: Callable[..., Client]) -> None:
    client = clients(stub.url + "/prefix/", "my model", token=" s3cret\n", flush_every=3600)
    client.log({"x": 1})
    assert client.flush(timeout=5)
    (request,) = stub.requests()
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.path == "/prefix/v1/streams/my%20model/rows"


@pytest.mark.skipif(
    sys.gettrace() is not None or tracemalloc.is_tracing(),
    reason="a tracer (coverage, debugger) or tracemalloc makes every call slower: no timing",
)
def test_log_costs_under_5_microseconds_while_the_daemon_is_down(
    clients: Callable[..., Client],
) -> None:
    client = clients(f"http://127.0.0.1:{free_port()}", "s", flush_every=0.01)
    row = {"age": 42.0, "income": 51234.5, "region": "north", "score": 0.73}
    client.log(row)
    wait_for(lambda: client.stats.last_error, 10, "a failed attempt")
    log, clock = client.log, time.perf_counter_ns
    for _ in range(1999):  # warm-up
        log(row)
    durations = []
    for _ in range(20_000):
        start = clock()
        log(row)
        durations.append(clock() - start)
    median_ns = statistics.median(durations)
    assert median_ns < 5000, f"median log() took {median_ns} ns"
    stats = client.stats
    assert stats.rows_accepted == 0 and stats.rows_logged == 22_000
    assert stats.last_error is not None and "Connection" in stats.last_error


def test_nothing_acknowledged_is_lost_across_a_restart(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    port = free_port()
    path = write_config(
        tmp_path,
        [{"name": "s", "features": [{"name": "x", "type": "numeric", "bins": UNIFORM_X}]}],
        state={"dir": str(tmp_path / "state"), "checkpoint_every": "500ms"},
    )
    listen = ["--listen", f"127.0.0.1:{port}"]
    first = DaemonProcess(path, args=listen).start()
    client = clients(
        f"http://127.0.0.1:{port}",
        "s",
        batch_rows=200,
        flush_every=0.05,
        max_buffer_rows=1_000_000,
        max_backoff=0.5,
    )
    stop = threading.Event()
    logged = [0]

    def produce() -> None:
        k = 0
        while not stop.is_set():
            for _ in range(10):
                client.log({"x": k % 10 + 0.5})
                k += 1
            logged[0] = k
            time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: client.stats.rows_accepted >= 2000, 30, "rows sent to the first daemon")
        assert first.stop(signal.SIGTERM) == 0
        down_at = logged[0]
        wait_for(lambda: client.stats.last_error, 30, "the client to see the daemon gone")
        wait_for(lambda: logged[0] >= down_at + 1000, 30, "rows logged while down")
        second = DaemonProcess(path, args=listen).start()
        try:
            wait_for(lambda: client.stats.rows_accepted > down_at, 60, "rows sent to the second")
        finally:
            stop.set()
            producer.join()
        assert client.flush(timeout=60)
        stats = client.stats
        assert stats.rows_logged == logged[0]
        assert (stats.rows_accepted, stats.rows_dropped, stats.rows_rejected) == (logged[0], 0, 0)
        assert stats.retries > 0
        # Every acknowledged row is in the window once: before the restart (checkpointed at
        # SIGTERM) or after it.
        expected = [0] * 14
        for k in range(logged[0]):
            expected[1 + k % 10] += 1
        assert live_counts(second, "s", "x") == expected
        second.stop(signal.SIGTERM)
    finally:
        stop.set()
        producer.join()
        first.kill()


def test_the_oldest_rows_are_dropped_while_the_daemon_is_down(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    port = free_port()
    client = clients(
        f"http://127.0.0.1:{port}",
        "s",
        batch_rows=100,
        flush_every=0.01,
        max_buffer_rows=500,
        max_backoff=0.2,
    )
    for i in range(1200):
        client.log({"i": i})
    # Rows pushed out while a batch is on the wire count once its attempt fails.
    wait_for(lambda: client.stats.rows_dropped == 700, 10, "700 rows dropped")
    stats = client.stats
    assert (stats.rows_logged, stats.rows_accepted, stats.rows_pending) == (1200, 0, 500)
    path = write_config(
        tmp_path,
        [
            {
                "name": "s",
                "features": [
                    {
                        "name": "i",
                        "type": "numeric",
                        "bins": {"kind": "uniform", "lo": 0, "hi": 1200, "count": 12},
                    }
                ],
            }
        ],
    )
    with DaemonProcess(path, args=["--listen", f"127.0.0.1:{port}"]) as process:
        # Everything is settled, but not everything logged was accepted.
        assert client.flush(timeout=60) is False
        assert (client.stats.rows_accepted, client.stats.rows_pending) == (500, 0)
        # The newest 500 rows arrived: i = 700..1199, bins 7..11 of 12.
        assert live_counts(process, "s", "i") == [0] + [0] * 7 + [100] * 5 + [0, 0, 0]
        assert rows_total(process.metrics(), "s") == 500


@pytest.mark.parametrize("status", [400, 401, 404, 413, 415])
def test_final_answers_are_not_retried(
    status: int, stub: Stub, clients: Callable[..., Client]
) -> None:
    stub.script.append((status, {}, {"error": f"no, because {status}"}))
    client = clients(stub.url, "s", flush_every=3600)
    client.log_many({"x": k} for k in range(10))
    assert client.flush(timeout=10) is False
    stats = client.stats
    assert (stats.rows_sent, stats.rows_accepted, stats.rows_rejected) == (10, 0, 10)
    assert (stats.requests, stats.retries, stats.rows_pending) == (1, 0, 0)
    assert stats.last_error == f"HTTP {status}: no, because {status}"
    # The refused batch is gone: the next request holds only the next row.
    client.log({"x": 99})
    assert client.flush(timeout=10) is False  # the refused rows still count
    assert [r.n_rows for r in stub.requests()] == [10, 1]
    assert client.stats.rows_accepted == 1


def test_the_real_daemon_refusals_are_final(
    daemon: DaemonProcess, clients: Callable[..., Client]
) -> None:
    before = daemon.metrics()
    unknown = clients(daemon.url, "no-such-stream", flush_every=3600)
    unknown.log({"x": 1})
    assert unknown.flush(timeout=30) is False
    assert unknown.stats.rows_rejected == 1
    assert unknown.stats.last_error == "HTTP 404: unknown stream 'no-such-stream'"
    refused = clients(daemon.url, "refused", flush_every=3600)
    deep: list[Any] = []
    for _ in range(80):  # deeper than the daemon's JSON nesting limit: a 400
        deep = [deep]
    refused.log_many([{"x": 1.5}, {"x": deep}])
    assert refused.flush(timeout=30) is False
    stats = refused.stats
    assert (stats.rows_rejected, stats.requests, stats.retries) == (2, 1, 0)
    assert stats.last_error is not None and stats.last_error.startswith("HTTP 400: ")
    refused.log({"x": 2.5})
    assert refused.flush(timeout=30) is False
    assert refused.stats.rows_pending == 0
    after = daemon.metrics()
    assert requests_with(after, 400) - requests_with(before, 400) == 1
    assert requests_with(after, 404) - requests_with(before, 404) == 1
    assert rows_total(after, "refused") - rows_total(before, "refused") == 1


def test_retry_after_is_honoured(stub: Stub, clients: Callable[..., Client]) -> None:
    stub.script.append((503, {"Retry-After": "1"}, {"error": "ingest queue full"}))
    client = clients(stub.url, "s", flush_every=3600)
    client.log_many({"x": k} for k in range(5))
    assert client.flush(timeout=30)
    first, second = stub.requests()
    assert second.at - first.at >= 0.95
    assert first.body == second.body
    stats = client.stats
    assert (stats.rows_accepted, stats.requests, stats.retries) == (5, 2, 1)
    assert stats.last_error == "HTTP 503: ingest queue full"


def test_connection_failures_are_retried_with_growing_capped_waits(
    clients: Callable[..., Client],
) -> None:
    client = clients(f"http://127.0.0.1:{free_port()}", "s", flush_every=0.01, max_backoff=0.4)
    client.log({"x": 1})
    start = time.monotonic()
    wait_for(lambda: client.stats.requests >= 8, 30, "eight attempts")
    elapsed = time.monotonic() - start
    # Waits of up to 0.1, 0.2, then 0.4 s (the cap), each at least half that: 7 waits take
    # 1.15 to 2.3 s. Uncapped, the seventh alone would take at least 3.2 s.
    assert 1.0 <= elapsed < 6.0
    stats = client.stats
    assert stats.rows_pending == 1 and stats.retries == stats.requests - 1


def test_retry_after_header_forms() -> None:
    now = 1_700_000_000.0
    assert retry_after_s("3", now) == 3.0
    assert retry_after_s(" 0.5 ", now) == 0.5
    assert retry_after_s("-4", now) == 0.0
    assert retry_after_s("1e9", now) == MAX_RETRY_AFTER_S
    assert retry_after_s(email.utils.formatdate(now + 7, usegmt=True), now) == 7.0
    assert retry_after_s(email.utils.formatdate(now - 7, usegmt=True), now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s("nan", now) is None
    assert retry_after_s(None, now) is None


def test_flush_and_close_time_out_and_count_leftovers(clients: Callable[..., Client]) -> None:
    client = clients(f"http://127.0.0.1:{free_port()}", "s", flush_every=0.01)
    client.log_many({"x": k} for k in range(10))
    start = time.monotonic()
    assert client.flush(timeout=0.2) is False
    assert client.close(timeout=0.2) is False
    assert time.monotonic() - start < 5
    stats = client.stats
    assert (stats.rows_logged, stats.rows_dropped, stats.rows_pending) == (10, 10, 0)
    client.log({"x": 1})  # after close: counted, never raised
    client.log_many([{"x": 2}])
    assert client.stats.rows_dropped == 12
    assert client.flush(timeout=1) is False
    assert client.close() is False


def test_context_manager_flushes_and_stops_the_thread(stub: Stub) -> None:
    with Client(stub.url, "ctx", flush_every=3600) as client:
        client.log({"x": 1})
        client.log({"x": 2})
        assert any(t.name == "driftmon-client-ctx" for t in threading.enumerate())
    assert rows_of(stub.requests()) == [{"x": 1}, {"x": 2}]
    assert client.stats.rows_accepted == 2
    assert not any(t.name == "driftmon-client-ctx" for t in threading.enumerate())


def test_an_unexpected_error_rejects_the_batch_and_the_thread_goes_on(
    stub: Stub, clients: Callable[..., Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(rows: list[dict[str, Any]]) -> bytes:
        raise RuntimeError("boom")

    client = clients(stub.url, "s", flush_every=3600)
    with monkeypatch.context() as patch:
        patch.setattr(driftmon.client, "encode_rows", broken)
        client.log({"x": 1})
        assert client.flush(timeout=5) is False
    assert client.stats.rows_rejected == 1
    assert client.stats.last_error == "RuntimeError: boom"
    client.log({"x": 2})
    assert client.flush(timeout=5) is False
    assert client.stats.rows_pending == 0
    assert rows_of(stub.requests()) == [{"x": 2}]


def test_a_client_that_logs_nothing_starts_no_thread(stub: Stub) -> None:
    client = Client(stub.url, "idle-client")
    assert not any(t.name == "driftmon-client-idle-client" for t in threading.enumerate())
    assert client.flush(timeout=1) is True
    assert client.close(timeout=1) is True
    assert stub.requests() == [] and client.stats.requests == 0


def test_interpreter_exit_flushes(stub: Stub) -> None:
    script = (
        "import sys\n"
        "from driftmon.client import Client\n"
        "client = Client(sys.argv[1], 'atexit', flush_every=3600)\n"
        "client.log({'x': 1})\n"
        "client.log_many([{'x': 2}, {'x': 3}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, stub.url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert rows_of(stub.requests()) == [{"x": 1}, {"x": 2}, {"x": 3}]


def test_url_can_be_changed(stub: Stub, clients: Callable[..., Client]) -> None:
    client = clients(f"http://127.0.0.1:{free_port()}", "s", flush_every=0.01)
    client.log({"x": 1})
    wait_for(lambda: client.stats.last_error, 10, "a failed attempt")
    with pytest.raises(ValueError, match="url"):
        client.url = "ftp://elsewhere"
    client.url = stub.url
    assert client.url == stub.url
    assert client.flush(timeout=10)
    assert rows_of(stub.requests()) == [{"x": 1}]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_starts_empty_and_sends_its_own_rows(
    stub: Stub, clients: Callable[..., Client]
) -> None:
    client = clients(stub.url, "s", flush_every=3600)
    client.log_many([{"x": 1}, {"x": 2}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            client.log({"x": 3})
            if client.flush(timeout=10) and client.stats.rows_logged == 1:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.flush(timeout=10)
    assert sorted(r.n_rows for r in stub.requests()) == [1, 2]
    assert sorted(row["x"] for row in rows_of(stub.requests())) == [1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "127.0.0.1:9108"}, "url: expected an http"),
        ({"url": "http://:9108"}, "url: no host"),
        ({"url": "http://h:99999"}, "url: bad port"),
        ({"url": "http://h/?q=1"}, "url: give the daemon's base URL"),
        ({"stream": ""}, "stream: "),
        ({"token": " "}, "token: "),
        ({"token": "abc\ndef"}, "token: "),
        ({"batch_rows": 0}, "batch_rows: must be > 0"),
        ({"batch_rows": 1.5}, "batch_rows: expected an integer"),
        ({"flush_every": math.inf}, "flush_every: must be > 0 and finite"),
        ({"max_buffer_rows": True}, "max_buffer_rows: expected an integer"),
        ({"max_backoff": -1}, "max_backoff: must be > 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"url": "http://127.0.0.1:9108", "stream": "s", **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        Client(**arguments)


def test_rows_must_be_mappings(stub: Stub, clients: Callable[..., Client]) -> None:
    client = clients(stub.url, "s", flush_every=3600)
    with pytest.raises(TypeError, match="row: expected a mapping"):
        client.log([("x", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rows\[1\]: expected a mapping"):
        client.log_many([{"x": 1}, 5])  # type: ignore[list-item]
    assert client.stats.rows_logged == 0


def test_encoding_of_unusual_values() -> None:
    np = pytest.importorskip("numpy")
    body = encode_rows(
        [
            {"a": np.float32(1.5), "b": np.int64(3), "c": np.float64("nan")},
            {"a": np.float32("inf"), "d": np.array([1, 2])},
        ]
    )
    assert body == b'{"columns":{"a":[1.5,Infinity],"b":[3,null],"c":[NaN,null],"d":[null,[1,2]]}}'
    assert encode_rows([{}, {}]) == b"[{},{}]"
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode_rows([{"a": circular}])


# --- the examples ------------------------------------------------------------------------

DRIFTMON_EXAMPLES = [
    path
    for path in sorted(EXAMPLES.glob("*.yaml"))
    if "apiVersion" not in yaml.safe_load(path.read_text())
]


def test_examples_folder_has_a_driftmon_config() -> None:
    assert [p.name for p in DRIFTMON_EXAMPLES] == ["driftmon.yaml"]


@pytest.mark.parametrize("path", DRIFTMON_EXAMPLES, ids=lambda p: p.name)
def test_example_driftmon_configs_pass_check(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert driftmon_main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok")


def test_kserve_example_logs_to_the_stream_that_maps_it() -> None:
    service = yaml.safe_load((EXAMPLES / "kserve-inferenceservice.yaml").read_text())
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    logger = service["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    assert logger["url"].endswith(":9108/v1/cloudevents")
    config = load_config(EXAMPLES / "driftmon.yaml")
    mapped = [s for s in config.streams if s.cloudevents is not None]
    assert [(s.cloudevents.service, s.cloudevents.namespace) for s in mapped if s.cloudevents] == [
        (service["metadata"]["name"], service["metadata"]["namespace"])
    ]


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def post_json(url: str, payload: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def wait_window(process: DaemonProcess, stream: str, expected: dict[str, list[int]]) -> None:
    """Wait until each feature's live counts are ``expected`` (monitors appear at evaluation)."""

    def counts() -> dict[str, list[int]]:
        found = {}
        for feature in expected:
            reply = process.get(f"/api/v1/monitors/{stream}/{feature}")
            if reply.status == 200:
                found[feature] = [int(n) for n in reply.json()["live_counts"]]
        return found

    last: list[dict[str, list[int]]] = []
    try:
        wait_for(lambda: last.append(counts()) or last[-1] == expected, 30, f"{expected}")
    except AssertionError:
        raise AssertionError(f"live counts {last[-1]}, expected {expected}") from None


def kserve_event(process: DaemonProcess, side: str, payload: object) -> None:
    """One KServe payload-logger event in binary mode, as examples/kserve-*.yaml sends them."""
    reply = process.post(
        "/v1/cloudevents",
        json.dumps(payload).encode(),
        {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "5a2b6a54-0d36-4b33-9d0c-1f8e1b8f8c11",
            "ce-source": "http://localhost:9081/",
            "ce-type": f"org.kubeflow.serving.inference.{side}",
            "ce-inferenceservicename": "income-model",
            "ce-namespace": "models",
            "ce-component": "predictor",
        },
    )
    assert reply.status == 200, reply


def test_model_service_example_feeds_a_real_daemon(tmp_path: Path) -> None:
    # The example as it is, but evaluated every 200 ms rather than 5 s (the monitors of a
    # warmup stream appear at the first evaluation after its reference is frozen).
    text = (EXAMPLES / "driftmon.yaml").read_text()
    assert "evaluate_every: 5s" in text
    (tmp_path / "driftmon.yaml").write_text(
        text.replace("evaluate_every: 5s", "evaluate_every: 200ms")
    )
    model = load_example("model_service")
    age_bins = [0] * 20  # underflow, 16 bins of 5 years from 18, overflow, missing, invalid
    with DaemonProcess(tmp_path / "driftmon.yaml") as process:
        service = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "model_service.py"),
                "--port",
                "0",
                "--driftmon",
                process.url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output: list[str] = []
        assert service.stdout is not None
        reader = threading.Thread(target=lambda: output.extend(service.stdout or ()), daemon=True)
        reader.start()
        try:
            found = wait_for(
                lambda: re.search(r"listening on (http://\S+)", "".join(output)),
                60,
                "the model service",
            )
            # The reference: the stream's first 1000 rows (warmup), sent by the traffic script.
            traffic = subprocess.run(
                [
                    sys.executable,
                    str(EXAMPLES / "send_requests.py"),
                    "--url",
                    found.group(1),
                    "--requests",
                    "100",
                    "--seed",
                    "7",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert traffic.returncode == 0, traffic.stderr
            assert traffic.stdout.startswith("1000 predictions")
            wait_for(
                lambda: rows_total(process.metrics(), "income-model") == 1000,
                30,
                "the reference rows",
            )
            predict = f"{found.group(1)}/v1/models/income-model:predict"
            instances = [
                [35, 42_000.0, "north"],
                {"age": 61, "income": 88_000.5, "region": "west"},
                [24.5, 31_000, "elsewhere"],
            ]
            status, answer = post_json(predict, {"instances": instances})
            assert status == 200
            expected = [
                model.score(35, 42_000.0, "north"),
                model.score(61, 88_000.5, "west"),
                model.score(24.5, 31_000, "elsewhere"),
            ]
            assert answer["predictions"] == pytest.approx(expected, rel=1e-12)
            assert all(0 < p < 1 for p in expected)
            bad, error = post_json(predict, {"instances": [[35, "many", "north"]]})
            assert bad == 400 and "instances[0].income" in error["error"]
            wait_for(
                lambda: rows_total(process.metrics(), "income-model") == 1003,
                30,
                "the service's rows in the daemon",
            )
            ages = age_bins.copy()
            for age in (35, 61, 24.5):
                ages[1 + int((age - 18) // 5)] += 1
            wait_window(
                process,
                "income-model",
                {"age": ages, "region": [1, 0, 0, 1, 1, 0, 0]},  # north south east west other
            )
            assert all(
                sum(live_counts(process, "income-model", f)) == 3 for f in ("income", "score")
            )
        finally:
            service.send_signal(signal.SIGTERM)
            code = service.wait(60)
            reader.join(10)
            service.stdout.close()
        assert code == 0, "".join(output)
        assert "1003 rows logged, 1003 accepted, 0 dropped, 0 rejected" in "".join(output)
        # The same stream through KServe's logger: requests feed the inputs, responses the score.
        kserve_event(process, "request", {"instances": [[40, 50_000, "east"], [50, 60_000, "x"]]})
        for age in (40, 50):
            ages[1 + int((age - 18) // 5)] += 1
        scores = live_counts(process, "income-model", "score")
        assert sum(scores) == 3  # a request event leaves the outputs alone
        assert live_counts(process, "income-model", "age") == ages
        assert live_counts(process, "income-model", "region") == [1, 0, 1, 1, 2, 0, 0]
        kserve_event(process, "response", {"predictions": [0.25, 0.5]})
        scores[1 + 2] += 1  # 0.25 in [0.2, 0.3)
        scores[1 + 5] += 1  # 0.5 in [0.5, 0.6)
        assert live_counts(process, "income-model", "score") == scores
        assert live_counts(process, "income-model", "age") == ages


# --- nothing is lost silently --------------------------------------------------------------


def dropped_in_warnings(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The row counts of the client's "dropped N rows" warnings, in order."""
    return [
        int(match.group(1))
        for record in caplog.records
        if record.name == "driftmon.client" and record.levelno == logging.WARNING
        for match in [re.search(r"dropped (\d+) rows", record.getMessage())]
        if match
    ]


def test_log_many_of_more_rows_than_the_buffer_loses_nothing(
    daemon: DaemonProcess, clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    # The case: 150 000 rows in one call to a buffer of 100 000, with a healthy
    # daemon, used to send 100 000 and drop 50 000 without a word, and flush() said True.
    before = rows_total(daemon.metrics(), "bulk")
    client = clients(daemon.url, "bulk", max_buffer_rows=100_000, batch_rows=5_000)
    client.log_many([{"x": 1.5, "c": "a"}] * 150_000)
    assert client.flush(timeout=120) is True
    stats = client.stats
    assert (stats.rows_logged, stats.rows_sent, stats.rows_accepted) == (150_000,) * 3
    assert (stats.rows_dropped, stats.rows_rejected, stats.rows_pending) == (0, 0, 0)
    assert rows_total(daemon.metrics(), "bulk") - before == 150_000
    assert dropped_in_warnings(caplog) == []


def test_flush_is_false_and_a_warning_names_rows_the_daemon_refused(
    daemon: DaemonProcess, clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    client = clients(daemon.url, "no-such-stream", flush_every=3600)
    client.log_many({"x": k} for k in range(7))
    assert client.flush(timeout=30) is False
    stats = client.stats
    assert (stats.rows_sent, stats.rows_accepted, stats.rows_rejected) == (7, 0, 7)
    warnings_ = [r.getMessage() for r in caplog.records if r.name == "driftmon.client"]
    assert any(
        "refused 7 rows" in text and "HTTP 404: unknown stream 'no-such-stream'" in text
        for text in warnings_
    ), warnings_


def test_drops_are_warned_at_most_once_per_interval_and_all_reported(
    clients: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(driftmon.client, "LOSS_WARNING_INTERVAL_S", 0.5)
    client = clients(
        f"http://127.0.0.1:{free_port()}", "s", max_buffer_rows=10, flush_every=3600
    )
    for k in range(25):
        client.log({"x": k})
    assert len(dropped_in_warnings(caplog)) == 1  # the first drop, at once; then quiet
    time.sleep(0.6)
    client.log({"x": 25})
    assert len(dropped_in_warnings(caplog)) == 2  # the interval passed: the rest, summed
    assert client.flush(timeout=0.2) is False
    assert client.close(timeout=1) is False
    # Every dropped row is in exactly one warning (close reports what is left).
    assert sum(dropped_in_warnings(caplog)) == client.stats.rows_dropped == 26


def test_log_many_into_a_full_buffer_drops_at_once_while_the_daemon_is_away(
    clients: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    client = clients(f"http://127.0.0.1:{free_port()}", "s", max_buffer_rows=100)
    started = time.monotonic()
    client.log_many(({"x": k} for k in range(300)), timeout=30)
    # The first refused connection ends the wait: nothing will make room.
    assert time.monotonic() - started < 10
    stats = client.stats
    assert (stats.rows_logged, stats.rows_dropped, stats.rows_pending) == (300, 200, 100)
    assert sum(dropped_in_warnings(caplog)) >= 1


def test_a_daemon_that_stops_answering_bounds_log_many_and_close(
    tmp_path: Path, clients: Callable[..., Client]
) -> None:
    path = write_config(tmp_path, [x_stream("s")])
    with DaemonProcess(path) as process:
        client = clients(process.url, "s", max_buffer_rows=100, request_timeout=60)
        client.log({"x": 1.5})
        assert client.flush(timeout=30) is True
        assert process.process is not None
        os.kill(process.process.pid, signal.SIGSTOP)  # it accepts connections, answers nothing
        try:
            started = time.monotonic()
            client.log_many(({"x": 2.5} for _ in range(250)), timeout=0.5)
            waited = time.monotonic() - started
            assert 0.5 <= waited < 5, waited
            # Past the timeout, as log() would: 150 rows pushed out (those of the batch on
            # the wire are settled by its answer, or dropped at close).
            stats = client.stats
            assert (stats.rows_accepted, stats.rows_dropped + stats.rows_pending) == (1, 250)
            started = time.monotonic()
            assert client.close(timeout=1.0) is False
            # Before, close() also waited for the request on the wire: up to 61 s more.
            assert time.monotonic() - started < 5
        finally:
            os.kill(process.process.pid, signal.SIGCONT)
