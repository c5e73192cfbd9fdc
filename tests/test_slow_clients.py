"""Issue 13, slow and idle clients, and errors that must not be 5xx.

Hostile clients are raw sockets against a real daemon: half headers, stalled bodies, idle
keep-alive connections, more connections than ``server.max_connections``, clients that
leave mid-body, malformed requests and unsupported ``Content-Encoding``. Timeouts are
configured at about a second here; the bounds the tests wait for are generous.
``bench/slow_clients.py`` measures a normal sender beside N stalled ones.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DaemonProcess, parse_metrics, request, sample, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import flood  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROWS_PATH = f"/v1/streams/{flood.STREAM}/rows"
SMALL_BODY = json.dumps([{"x": 1.5, "c": "red"}]).encode()
MAX_BODY_BYTES = 16 * 2**20


def write_config(folder: Path, **server: object) -> Path:
    """flood's config (one stream, four features) with a token and ``server`` keys."""
    path = flood.write_config(folder, queue_rows=1_000_000, workers=2, max_body_bytes=2**20)
    config = json.loads(path.read_text())
    (folder / "token").write_text(TOKEN + "\n")
    config["server"].update({"auth_token_file": "token", **server})
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """Every timeout at about a second, at most 16 connections."""
    folder = tmp_path_factory.mktemp("quick")
    config = write_config(
        folder,
        header_timeout="1s",
        body_timeout="1s",
        keepalive_timeout="1s",
        max_connections=16,
    )
    with DaemonProcess(config) as process:
        yield process


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """16 MiB bodies (so 64 MiB of bodies read at once) and a body timeout of a minute."""
    folder = tmp_path_factory.mktemp("patient")
    config = write_config(folder, max_body_bytes="16MiB", body_timeout="60s")
    with DaemonProcess(config) as process:
        yield process


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def read_until_closed(connection: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """What arrives on ``connection`` within ``timeout_s``, and whether the peer closed it."""
    connection.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def read_head(connection: socket.socket, timeout_s: float = 15.0) -> bytes:
    """Bytes up to the end of one response head (or what came before the timeout)."""
    connection.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + timeout_s
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


def status_of(data: bytes) -> int | None:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else None


def json_body(data: bytes) -> object:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), data[:500]
    return json.loads(body)


def post_head(path: str, length: int, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: driftmon", "Content-Type: application/json"]
    lines += [f"Content-Length: {length}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_small(process: DaemonProcess, path: str = ROWS_PATH) -> int:
    if path == ROWS_PATH:
        return process.post(path, SMALL_BODY, {"Content-Type": "application/json", **AUTH}).status
    return process.post(path, CLOUD_EVENT, {**CLOUD_EVENT_HEADERS, **AUTH}).status


CLOUD_EVENT = json.dumps({"instances": [[1.0, 2.0]]}).encode()
CLOUD_EVENT_HEADERS = {
    "Content-Type": "application/json",
    "Ce-Specversion": "1.0",
    "Ce-Type": "org.kubeflow.serving.inference.request",
    "Ce-Source": "http://localhost/",
    "Ce-Id": "1",
    "Ce-Inferenceservicename": "nobody",
}


def metric(process: DaemonProcess, name: str, **labels: str) -> float:
    value = sample(parse_metrics(process.get("/metrics").body.decode()), name, **labels)
    return 0.0 if value is None else value


# --- timeouts -------------------------------------------------------------------------------


def test_half_headers_get_408_after_the_header_timeout(quick: DaemonProcess) -> None:
    connection = connect(quick.url)
    try:
        connection.sendall(b"POST " + ROWS_PATH.encode() + b" HTTP/1.1\r\nHost: driftmon\r\n")
        data, closed = read_until_closed(connection, 15.0)
    finally:
        connection.close()
    assert closed, data
    assert status_of(data) == 408, data
    assert "server.header_timeout" in json_body(data)["error"]  # type: ignore[index]
    reason = {"reason": "header_timeout"}
    assert metric(quick, "driftmon_http_connections_closed_total", **reason) >= 1


def test_a_connection_sending_nothing_is_closed(quick: DaemonProcess) -> None:
    connection = connect(quick.url)
    try:
        _, closed = read_until_closed(connection, 15.0)
    finally:
        connection.close()
    assert closed


def test_an_idle_keep_alive_connection_is_closed(quick: DaemonProcess) -> None:
    connection = connect(quick.url)
    try:
        connection.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: driftmon\r\n\r\n")
        head = read_head(connection)
        assert status_of(head) == 200, head
        assert b"connection: close" not in head.lower()  # kept alive
        data, closed = read_until_closed(connection, 15.0)
    finally:
        connection.close()
    assert closed
    assert b"HTTP/1.1" not in data  # closed quietly: no answer to a request never sent


def test_a_stalled_body_gets_408_after_the_body_timeout(quick: DaemonProcess) -> None:
    before = metric(quick, "driftmon_ingest_requests_total", code="408")
    connection = connect(quick.url)
    try:
        connection.sendall(post_head(ROWS_PATH, 1000, **AUTH) + b'[{"x": 1')
        data, closed = read_until_closed(connection, 15.0)
    finally:
        connection.close()
    assert closed, data
    assert status_of(data) == 408, data
    assert "server.body_timeout" in json_body(data)["error"]  # type: ignore[index]
    assert metric(quick, "driftmon_ingest_requests_total", code="408") == before + 1


# --- at most max_connections ----------------------------------------------------------------


def open_sockets(pid: int) -> int:
    """How many sockets process ``pid`` holds (its listener, clients, pipes to children)."""
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(entry).startswith("socket:")
        except OSError:
            continue
    return count


def test_idle_connections_beyond_the_bound_are_closed_and_health_answers(
    quick: DaemonProcess,
) -> None:
    assert quick.process is not None
    baseline = open_sockets(quick.process.pid)
    idle = []
    try:
        for _ in range(60):
            connection = connect(quick.url)
            connection.sendall(b"GET /-/healthy HTTP/1.1\r\n")  # half a request
            idle.append(connection)
        assert quick.get("/-/healthy").status == 200
        # 16 at most (the idle are closed to make room), not 60.
        assert open_sockets(quick.process.pid) <= baseline + 16
        assert metric(quick, "driftmon_http_connections") <= 16
        closed = sum(
            metric(quick, "driftmon_http_connections_closed_total", reason=reason)
            for reason in ("evicted", "header_timeout")  # the first may time out on a slow day
        )
        assert closed >= 44
    finally:
        for connection in idle:
            connection.close()
    assert quick.get("/-/healthy").status == 200


# --- the read bound is not held hostage -----------------------------------------------------


def hold_the_read_bound(
    process: DaemonProcess, path: str, short_by: int, **headers: str
) -> list[socket.socket]:
    """Four connections, each declaring a 16 MiB body and sending all of it but
    ``short_by`` bytes: together they hold the 64 MiB read bound but for 4 × short_by."""
    chunk = b" " * 2**20
    connections = [connect(process.url) for _ in range(4)]
    for connection in connections:
        connection.sendall(post_head(path, MAX_BODY_BYTES, **AUTH, **headers))
        for _ in range(15):
            connection.sendall(chunk)
        connection.sendall(chunk[:-short_by])
    return connections


@pytest.mark.parametrize("path", [ROWS_PATH, "/v1/cloudevents"])
def test_stalled_senders_do_not_lock_others_out(patient: DaemonProcess, path: str) -> None:
    """Four bodies declaring 16 MiB, all but the last byte sent, then nothing: 64 MiB held,
    the whole read bound. A body that progresses takes the room of the stalled ones (which
    get 408) long before the 60 s body timeout."""
    headers = {"Ce-Specversion": "1.0"} if path != ROWS_PATH else {}
    stalled = hold_the_read_bound(patient, path, 1, **headers)
    try:
        time.sleep(1.5)  # they stall for longer than a second
        started = time.monotonic()
        wait_for(lambda: post_small(patient, path) == 200, 20.0, "a normal post taken")
        assert time.monotonic() - started < 20.0
        statuses = [status_of(read_until_closed(c, 5.0)[0]) for c in stalled]
        assert 408 in statuses, statuses
    finally:
        for connection in stalled:
            connection.close()


def test_trickling_senders_do_not_lock_others_out(patient: DaemonProcess) -> None:
    """Four bodies that fill the read bound but for 4 000 bytes, then send a byte every
    0.3 s: never stalled for a second, far slower than 16 KiB/s. A normal body of 8 KB
    takes the room of the slowest."""
    rows = json.dumps([{"x": 1.5, "c": "red"}] * 400).encode()
    assert len(rows) > 8000
    trickling = hold_the_read_bound(patient, ROWS_PATH, 1000)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.3):
            for connection in trickling:
                with contextlib.suppress(OSError):
                    connection.sendall(b" ")

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        time.sleep(1.5)  # a full rate window of trickling
        headers = {"Content-Type": "application/json", **AUTH}
        wait_for(lambda: patient.post(ROWS_PATH, rows, headers).status == 200, 20.0, "a post")
        stop.set()
        sender.join()
        statuses = [status_of(read_until_closed(c, 5.0)[0]) for c in trickling]
        assert 408 in statuses, statuses
    finally:
        stop.set()
        for connection in trickling:
            connection.close()

# --- Expect: 100-continue -------------------------------------------------------------------


def expect_continue(process: DaemonProcess, path: str, length: int, **headers: str) -> bytes:
    """The first answer to a POST head with ``Expect: 100-continue`` (no body sent)."""
    connection = connect(process.url)
    try:
        connection.sendall(post_head(path, length, Expect="100-continue", **headers))
        return read_head(connection)
    finally:
        connection.close()


def test_100_continue_comes_only_after_the_checks(quick: DaemonProcess) -> None:
    wrong = {"Authorization": "Bearer wrong"}
    assert status_of(expect_continue(quick, ROWS_PATH, 10, **wrong)) == 401
    assert status_of(expect_continue(quick, "/v1/streams/nope/rows", 10, **AUTH)) == 404
    assert status_of(expect_continue(quick, ROWS_PATH, 2**20 + 1, **AUTH)) == 413
    connection = connect(quick.url)
    try:
        connection.sendall(post_head(ROWS_PATH, len(SMALL_BODY), Expect="100-continue", **AUTH))
        head = read_head(connection)
        assert head.startswith(b"HTTP/1.1 100 Continue"), head
        connection.sendall(SMALL_BODY)
        head = head.partition(b"\r\n\r\n")[2] or read_head(connection)
        assert status_of(head) == 200, head
    finally:
        connection.close()


# --- errors that must not be 5xx ------------------------------------------------------------


def test_a_client_leaving_mid_body_is_client_closed_not_500(quick: DaemonProcess) -> None:
    before = metric(quick, "driftmon_ingest_requests_total", code="client_closed")
    errors = metric(quick, "driftmon_ingest_requests_total", code="500")
    connection = connect(quick.url)
    connection.sendall(post_head(ROWS_PATH, 1000, **AUTH) + b'[{"x": 1')
    time.sleep(0.2)
    connection.close()
    wait_for(
        lambda: metric(quick, "driftmon_ingest_requests_total", code="client_closed") == before + 1,
        15.0,
        'code="client_closed" counted',
    )
    assert metric(quick, "driftmon_ingest_requests_total", code="500") == errors
    quick.wait_log(
        r"closed the connection before its body ended "
        r"\(POST .*: 8 bytes read, Content-Length 1000\)"
    )
    assert "Traceback" not in quick.log_text()


MALFORMED = [
    b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\x00<script>\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=["method", "header", "line", "big", "length"])
def test_malformed_requests_answer_json_and_log_no_traceback(
    quick: DaemonProcess, raw: bytes
) -> None:
    connection = connect(quick.url)
    try:
        connection.sendall(raw)
        data, _ = read_until_closed(connection, 10.0)
    finally:
        connection.close()
    assert status_of(data) == 400, data
    message = json_body(data)["error"]  # type: ignore[index]
    assert message.startswith("malformed HTTP request"), message
    assert "<script>" not in message and "aaaa" not in message and "bbbb" not in message
    assert "Traceback" not in quick.log_text()
    assert "Error handling request" not in quick.log_text()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", lambda b: b)],
)
def test_gzip_and_deflate_bodies_are_taken(quick: DaemonProcess, coding: str, encode) -> None:  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json", "Content-Encoding": coding, **AUTH}
    reply = quick.post(ROWS_PATH, encode(SMALL_BODY), headers)
    assert (reply.status, reply.json()) == (200, {"rows": 1})


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "x-whatever"])
def test_other_content_codings_are_415(quick: DaemonProcess, coding: str) -> None:
    for path in (ROWS_PATH, "/v1/cloudevents"):
        headers = {"Content-Type": "application/json", "Content-Encoding": coding, **AUTH}
        reply = quick.post(path, SMALL_BODY, headers)
        assert reply.status == 415, (path, coding, reply)
        assert "Content-Encoding" in reply.json()["error"]


def test_a_body_that_is_not_gzip_is_400(quick: DaemonProcess) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **AUTH}
    reply = request("POST", quick.url + ROWS_PATH, b"not gzip at all", headers)
    assert reply.status == 400, reply
    assert "error" in reply.json()


# --- checked, already right on main (kept as regressions) -----------------------------------


def test_check_refuses_an_empty_token_file_like_run(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "token").write_text(" \n")
    checked = subprocess.run(
        [sys.executable, "-m", "driftmon", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode != 0, checked.stdout
    assert "server.auth_token_file" in checked.stdout + checked.stderr
    assert "empty" in checked.stdout + checked.stderr


def test_a_cloudevent_with_a_5000_digit_integer_is_not_a_500(quick: DaemonProcess) -> None:
    huge = "9" * 5000
    event = (
        '{"specversion": "1.0", "type": "org.kubeflow.serving.inference.request", '
        '"source": "http://localhost/", "id": "1", "inferenceservicename": "nobody", '
        '"datacontenttype": "application/json", "data": {"instances": [[' + huge + ", 1]]}}"
    )
    for body, headers in (
        (event.encode(), {"Content-Type": "application/cloudevents+json"}),
        (('{"instances": [[' + huge + ", 1]]}").encode(), CLOUD_EVENT_HEADERS),
    ):
        reply = quick.post("/v1/cloudevents", body, {**headers, **AUTH})
        assert reply.status in (200, 400), reply
        assert isinstance(reply.json(), dict)
    assert "Traceback" not in quick.log_text()


def test_the_new_server_keys_are_read_checked_and_restart_only(tmp_path: Path) -> None:
    import dataclasses

    from driftmon.config import ConfigError, load_config
    from driftmon.daemon import restart_only_changes

    config = load_config(
        write_config(
            tmp_path,
            header_timeout="2s",
            body_timeout="3s",
            keepalive_timeout="4s",
            max_connections=5,
        )
    )
    server = config.server
    assert (server.header_timeout_s, server.body_timeout_s, server.keepalive_timeout_s) == (
        2.0,
        3.0,
        4.0,
    )
    assert server.max_connections == 5
    changed = dataclasses.replace(config, server=dataclasses.replace(server, body_timeout_s=9.0))
    assert any("body_timeout" in n for n in restart_only_changes(config, changed))
    bad = write_config(tmp_path, header_timeout="0s", body_timeout="soon", max_connections=0)
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    errors = "\n".join(caught.value.errors)
    assert "server.header_timeout" in errors
    assert "server.body_timeout" in errors
    assert "server.max_connections" in errors


def test_max_connections_stays_under_the_open_file_limit() -> None:
    """Under a hard limit of 300 descriptors, 1000 connections become 200 (100 kept for
    files, pipes and the store); with room, the soft limit is raised to fit."""
    program = (
        "import resource\n"
        "from driftmon.http.connections import fd_bounded\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 300))\n"
        "print(fd_bounded(1000), fd_bounded(150), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert ran.stdout.split() == ["200", "150", "300"], ran.stdout + ran.stderr
