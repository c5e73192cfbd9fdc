"""Issue 7, promise 6 (security): who may write, where the daemon listens, what input can reach.

- Token auth: every endpoint that changes state (row ingest, CloudEvents at ``/v1/cloudevents``
  and at ``/``, reload) answers 401 without the configured bearer token or with a wrong one,
  changes nothing, and works with the right one; reads (``/metrics``, health, readiness, the
  monitors API) need no token. ``tests/test_daemon.py`` and ``tests/test_cloudevents.py``
  check the token on rows, reload and ``/v1/cloudevents`` each; here the same matrix runs
  over all four, ``/`` included, and over more wrong headers.
- The listener is on loopback unless the config says otherwise: the defaults, the bundled
  configs, and a real ``driftmon run`` without ``--listen`` (its socket, read from
  ``/proc/net/tcp``).
- Loading executes nothing: the package source has no ``yaml.load``, no unsafe loader, no
  pickle (or its relatives) and ``allow_pickle=True`` nowhere.
- Input limits: a body declared over ``server.max_body_bytes`` is a 413 before a byte of it
  is read (and a 401 comes first, so no one unauthenticated makes the daemon read anything);
  nesting deeper than the parser's bound is a 400, not a crash, on every ingest path.
  ``tests/test_daemon.py`` (``test_body_over_the_limit_is_413``) and
  ``tests/test_fuzz_ingest.py`` cover bodies over the limit that are actually sent.
- No path from a request reaches the filesystem: stream and feature names such as
  ``../../etc/passwd`` or ``%2e%2e%2f`` are 404s, and the daemon's folder is byte for byte
  what it was.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import DaemonProcess, Samples, request, sample

from driftmon.config import ServerConfig, load_config

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "driftmon"
TOKEN = "correct-horse-battery-staple"
MAX_BODY_BYTES = 256 * 1024
SERVICE = "secure-model"
ROWS_BODY = json.dumps([{"x": 1.5, "c": "red"}]).encode()
CE_HEADERS = {
    "Ce-Specversion": "1.0",
    "Ce-Id": "id-1",
    "Ce-Source": "/security",
    "Ce-Type": "org.kubeflow.serving.inference.request",
    "Ce-Inferenceservicename": SERVICE,
    "Content-Type": "application/json",
}
CE_BODY = json.dumps({"instances": [[2.5, "green"]]}).encode()


def write_config(folder: Path) -> Path:
    """A daemon with a token, ``POST /`` on, and checkpoints that never fire during a test."""
    (folder / "token").write_text(f"{TOKEN}\n")
    reference = [{"x": i % 10 + 0.5, "c": ("red", "green", "blue")[i % 3]} for i in range(30)]
    (folder / "reference.ndjson").write_text("".join(json.dumps(r) + "\n" for r in reference))
    config = {
        "server": {
            "listen": "127.0.0.1:0",
            "max_body_bytes": MAX_BODY_BYTES,
            "auth_token_file": "token",
        },
        "ingest": {"workers": 2, "cloudevents": {"root": True}},
        "engine": {"evaluate_every": "1s"},
        "state": {"dir": "state", "checkpoint_every": "1h"},
        "streams": [
            {
                "name": "s",
                "reference": {"file": "reference.ndjson"},
                "window": {"length": "1h", "panes": 4},
                "features": [
                    {"name": "x", "type": "numeric",
                     "bins": {"kind": "uniform", "lo": 0, "hi": 10, "count": 10}},
                    {"name": "c", "type": "categorical", "categories": ["red", "green"]},
                ],
                "cloudevents": {"service": SERVICE, "inputs": ["x", "c"]},
            }
        ],
    }  # fmt: skip
    path = folder / "driftmon.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secure")


@pytest.fixture(scope="module")
def guarded(folder: Path) -> Iterator[DaemonProcess]:
    """The daemon, started in its own folder (its working directory), so that any file a
    request managed to create with a relative path would land where the tests look."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        process = DaemonProcess(write_config(folder)).start()
    try:
        yield process
    finally:
        process.kill()


def rows_total(samples: Samples) -> float:
    return sample(samples, "driftmon_ingest_rows_total", stream="s") or 0.0


def reloads(process: DaemonProcess) -> int:
    return process.log_text().count("config reloaded from")


# --- tokens ------------------------------------------------------------------------------------

WRITE_ENDPOINTS = {
    "rows": ("/v1/streams/s/rows", ROWS_BODY, {"Content-Type": "application/json"}),
    "cloudevents": ("/v1/cloudevents", CE_BODY, CE_HEADERS),
    "cloudevents-root": ("/", CE_BODY, CE_HEADERS),
    "reload": ("/-/reload", b"", {}),
}
WRONG_AUTHORIZATIONS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}",
    TOKEN,
    f"Bearer {TOKEN.upper()}",
    f"Token {TOKEN}",
]


@pytest.mark.parametrize("endpoint", WRITE_ENDPOINTS)
def test_each_write_endpoint_needs_the_token_and_changes_nothing_without(
    guarded: DaemonProcess, endpoint: str
) -> None:
    path, body, headers = WRITE_ENDPOINTS[endpoint]
    rows_before, reloads_before = rows_total(guarded.metrics()), reloads(guarded)
    for authorization in WRONG_AUTHORIZATIONS:
        sent = dict(headers)
        if authorization is not None:
            sent["Authorization"] = authorization
        reply = guarded.post(path, body, sent)
        assert reply.status == 401, (endpoint, authorization, reply.status, reply.body)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer"), endpoint
        assert TOKEN.encode() not in reply.body
    assert rows_total(guarded.metrics()) == rows_before, endpoint
    assert reloads(guarded) == reloads_before, endpoint
    reply = guarded.post(path, body, {**headers, "Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 200, (endpoint, reply.body)
    if endpoint == "reload":
        guarded.wait_log(rf"(config reloaded from[\s\S]*){{{reloads_before + 1}}}", 10.0)
    else:
        assert reply.json()["rows"] == 1
        assert rows_total(guarded.metrics()) == rows_before + 1


@pytest.mark.parametrize(
    "path", ["/metrics", "/-/healthy", "/-/ready", "/api/v1/monitors", "/api/v1/monitors/s/x"]
)
def test_reads_need_no_token(guarded: DaemonProcess, path: str) -> None:
    assert guarded.get(path).status == 200


def raw_exchange(url: str, head: bytes, body: bytes = b"", timeout_s: float = 10.0) -> int:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` byte
    for byte, and return the status of the answer (the body may be cut short)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(head + b"\r\n" + body)
        answer = connection.recv(4096)
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("path", ["/v1/streams/s/rows", "/v1/cloudevents", "/"])
def test_a_body_is_never_read_before_the_token_and_the_size_are_checked(
    guarded: DaemonProcess, path: str
) -> None:
    """Ten gigabytes declared, not a byte sent: the answer comes at once (nothing waited for
    the body), 401 without the token, 413 with it."""
    ce = "".join(f"{k}: {v}\r\n" for k, v in CE_HEADERS.items() if k != "Content-Type")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: driftmon\r\nConnection: close\r\n{ce}"
        "Content-Type: application/json\r\nContent-Length: 10000000000\r\n"
    ).encode()
    started = time.monotonic()
    assert raw_exchange(guarded.url, head) == 401
    authorized = head + f"Authorization: Bearer {TOKEN}\r\n".encode()
    assert raw_exchange(guarded.url, authorized) == 413
    assert time.monotonic() - started < 5.0


# --- where it listens -------------------------------------------------------------------------


def test_the_default_listener_is_loopback(tmp_path: Path) -> None:
    assert (ServerConfig().host, ServerConfig().port) == ("127.0.0.1", 9108)
    (tmp_path / "ref.csv").write_text("x\n1\n2\n")
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text(
        "streams:\n  - name: s\n    reference: {file: ref.csv}\n    features:\n"
        "      - {name: x, type: numeric, bins: {kind: uniform, lo: 0, hi: 1, count: 2}}\n"
    )
    config = load_config(minimal)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9108)
    bundled = [*sorted((REPO / "config").glob("*.yaml")), PACKAGE / "data" / "demo.yaml"]
    assert len(bundled) >= 3
    for path in bundled:
        assert load_config(path).server.host == "127.0.0.1", path


def _listening_addresses(pid: int) -> list[str]:
    """``host:port`` of every listening TCP socket of process ``pid`` (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        found = re.fullmatch(r"socket:\[(\d+)\]", target)
        if found:
            inodes.add(found.group(1))
    addresses = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_host, hex_port = local.split(":")
            raw = bytes.fromhex(hex_host)
            # /proc/net/tcp holds each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            host = (
                socket.inet_ntop(socket.AF_INET, words)
                if len(words) == 4
                else socket.inet_ntop(socket.AF_INET6, words)
            )
            addresses.append(f"{host}:{int(hex_port, 16)}")
    return addresses


def test_driftmon_run_without_listen_binds_loopback_only(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "driftmon", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = process.stderr
    assert stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(r"listening on (http://\S+)", "".join(lines))
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url is not None, "".join(lines)
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}"
        assert _listening_addresses(process.pid) == [f"127.0.0.1:{port}"]
        assert request("GET", url + "/-/healthy").status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
        reader.join(10)
        stderr.close()
    assert status == 0, "".join(lines)


# --- nothing executes on load ------------------------------------------------------------------

PICKLE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "shelve",
    "marshal",
    "joblib",
}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
UNSAFE_LOADERS = {"Loader", "UnsafeLoader", "FullLoader"}


def unsafe_loading(source: str) -> list[str]:
    """Every way ``source`` could execute code while loading data, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"line {node.lineno}: imports {name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "yaml" and node.attr in UNSAFE_YAML | UNSAFE_LOADERS:
                found.append(f"line {node.lineno}: yaml.{node.attr}")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                found.append(f"line {node.lineno}: {node.func.id}()")
            for keyword in node.keywords:
                if keyword.arg == "allow_pickle" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    found.append(f"line {node.lineno}: allow_pickle is not the constant False")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    """The scanner below is not a test that cannot fail."""
    source = (
        "import pickle\nfrom joblib import load\nimport yaml\nyaml.load(text)\n"
        "yaml.unsafe_load(text)\nyaml.safe_load(text, Loader=yaml.FullLoader)\n"
        "np.load(path, allow_pickle=True)\nnp.load(path, allow_pickle=flag)\neval('1')\n"
    )
    assert len(unsafe_loading(source)) == 8
    assert (
        unsafe_loading("import yaml\nyaml.safe_load(text)\nnp.load(p, allow_pickle=False)\n") == []
    )


def test_the_package_never_loads_data_in_a_way_that_runs_code() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    found = {
        str(path.relative_to(REPO)): problems
        for path in sources
        if (problems := unsafe_loading(path.read_text(encoding="utf-8")))
    }
    assert found == {}
    # The same as text, over every file of the package (data and configs included).
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            text = path.read_bytes()
            for needle in (
                b"allow_pickle=True",
                b"yaml.load(",
                b"yaml.unsafe_load",
                b"import pickle",
            ):
                assert needle not in text, (path, needle)
    # Every YAML the package reads goes through yaml.safe_load (the loader's one reader).
    config_source = (PACKAGE / "config" / "load.py").read_text(encoding="utf-8")
    assert "yaml.safe_load(" in config_source


# --- deep nesting --------------------------------------------------------------------------------


def _authorized(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Authorization": f"Bearer {TOKEN}"}


DEEP = 100_000


JSON_TYPE = {"Content-Type": "application/json"}


def nest(text: bytes, depth: int = DEEP) -> bytes:
    """``text`` inside ``depth`` arrays."""
    return b"[" * depth + text + b"]" * depth


DEEP_BODIES = {
    "rows": ("/v1/streams/s/rows", nest(b""), JSON_TYPE),
    "unclosed": ("/v1/streams/s/rows", b"[" * DEEP, JSON_TYPE),
    "row value": ("/v1/streams/s/rows", b'[{"x": ' + nest(b"", 63) + b"}]", JSON_TYPE),
    "ndjson": (
        "/v1/streams/s/rows",
        b'{"x": ' + nest(b"") + b"}\n",
        {"Content-Type": "application/x-ndjson"},
    ),
    # NaN makes orjson give up, and the standard library's decoder (recursive) take over.
    "nan fallback": ("/v1/streams/s/rows", b'[{"x": NaN, "c": ' + nest(b"") + b"}]", JSON_TYPE),
    "cloudevents data": ("/v1/cloudevents", b'{"instances": ' + nest(b"") + b"}", CE_HEADERS),
    "structured": (
        "/v1/cloudevents",
        b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "x.request", "data": '
        + b'{"a": ' * (DEEP // 5)
        + b"1"
        + b"}" * (DEEP // 5)
        + b"}",
        {"Content-Type": "application/cloudevents+json"},
    ),
    "batch": ("/", nest(b""), {"Content-Type": "application/cloudevents-batch+json"}),
}


@pytest.mark.parametrize("name", DEEP_BODIES)
def test_deep_nesting_is_a_400_not_a_crash(guarded: DaemonProcess, name: str) -> None:
    path, body, headers = DEEP_BODIES[name]
    assert len(body) <= MAX_BODY_BYTES, name
    before = rows_total(guarded.metrics())
    reply = guarded.post(path, body, _authorized(headers))
    assert reply.status == 400, (name, reply.status, reply.body[:300])
    assert "error" in reply.json()
    assert guarded.get("/-/healthy").status == 200
    assert rows_total(guarded.metrics()) == before


def test_nesting_within_the_bound_of_cloudevents_is_taken_as_invalid_values(
    guarded: DaemonProcess,
) -> None:
    """CloudEvents payloads are bounded by orjson's 1024 levels only: a value 1000 levels
    deep is one invalid value, not an error, and costs nothing special."""
    deep_value = b"[" * 1000 + b"]" * 1000
    body = b'{"instances": [[1.5, ' + deep_value + b"]]}"
    reply = guarded.post("/v1/cloudevents", body, _authorized(CE_HEADERS))
    assert (reply.status, reply.json()["rows"]) == (200, 1), reply.body[:300]
    assert guarded.get("/-/healthy").status == 200


# --- no path from a request reaches the filesystem ----------------------------------------------

HOSTILE_NAMES = [
    "..",
    ".",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..%5c..%5cwindows",
    "%252e%252e%252f",
    "%00",
    "s%00",
    "s%2f..%2f..",
    "driftmon.yaml",
    "token",
    "state",
    "reference.ndjson",
    "~root",
    "a" * 4000,
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: size and modification time in nanoseconds."""
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


def test_hostile_names_in_paths_are_404_and_touch_no_file(
    guarded: DaemonProcess, folder: Path
) -> None:
    before = tree(folder)
    rows_before = rows_total(guarded.metrics())
    token = f"Authorization: Bearer {TOKEN}\r\n".encode()
    for name in HOSTILE_NAMES:
        targets = [
            (b"POST", f"/v1/streams/{name}/rows", ROWS_BODY),
            (b"GET", f"/api/v1/monitors/{name}/x", b""),
            (b"GET", f"/api/v1/monitors/s/{name}", b""),
            (b"GET", f"/api/v1/monitors/{name}/{name}", b""),
        ]
        for method, path, body in targets:
            head = (
                method + b" " + path.encode() + b" HTTP/1.1\r\nHost: driftmon\r\n"
                b"Connection: close\r\nContent-Type: application/json\r\n" + token
                + b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            )  # fmt: skip
            status = raw_exchange(guarded.url, head, body)
            assert status == 404, (method, path, status)
    # Unencoded dot segments: resolved by the router to paths that do not exist.
    for path in ("/v1/streams/../../../etc/passwd/rows", "/api/v1/monitors/../../../etc/passwd"):
        head = (f"POST {path} HTTP/1.1\r\nHost: driftmon\r\nConnection: close\r\n").encode()
        head += token + b"Content-Type: application/json\r\nContent-Length: 2\r\n"
        assert raw_exchange(guarded.url, head, b"[]") in (404, 405), path
    assert rows_total(guarded.metrics()) == rows_before
    assert tree(folder) == before
    assert guarded.get("/-/healthy").status == 200
