"""Issue 7, promise 3 (bad input): garbage never breaks the running daemon, nor its counts.

The fuzzer lives in ``bench/fuzz_ingest.py`` (its docstring lists the bodies it draws and
the checks made after every batch); here it sends at least 10 000 hypothesis-drawn bodies
to one real daemon, and ``python bench/fuzz_ingest.py`` is the long run (100 000 by
default). In-process fuzzing of the parser and of the config loader lives in
``tests/test_parse.py`` and ``tests/test_config.py``.

The other tests pin what the fuzzer found, so that each stays fixed whatever hypothesis
draws next time:

- a body without a ``Content-Length`` (chunked) of exactly ``max_body_bytes + 1`` bytes
  was read and applied: aiohttp stops only past ``client_max_size``, one byte above the
  limit (fixed in ``driftmon/http/responses.py`` ``read_body``);
- a V2 tensor of shape ``[10**12, 0]`` (no values, a huge row count) was a 500, and
  ``[10**6, 0]`` added a million rows of missing values from a 100-byte body; shape
  ``[0, 10**12]`` looped over its width and held an ingest worker for hours, wedging the
  daemon (fixed in ``driftmon/sources/cloudevents.py``).

Last, ``driftmon check`` on malformed YAML files: one line per error naming its place,
exit 1, never a traceback (the loader itself is fuzzed in ``tests/test_config.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from harness import DaemonProcess, Reply, async_request, sample

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import fuzz_ingest  # noqa: E402

CI_BODIES = 10_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The fuzzer's daemon: streams ``fz`` (row bodies) and ``ce`` (CloudEvents)."""
    with DaemonProcess(fuzz_ingest.write_config(tmp_path_factory.mktemp("fuzz"))) as process:
        yield process


def test_ten_thousand_fuzzed_bodies_answer_2xx_or_4xx_and_apply_all_or_nothing(
    daemon: DaemonProcess,
) -> None:
    started = time.monotonic()
    with fuzz_ingest.Fuzzer(daemon.url) as fuzzer:
        fuzz_ingest.fuzz(fuzzer, CI_BODIES)
    stats = fuzzer.stats
    fuzz_ingest.print_figures(stats, time.monotonic() - started)
    assert stats.bodies >= CI_BODIES
    assert stats.server_errors == 0
    assert stats.failures == 0
    # The mix reached every answer it aims at: a fuzzer that only ever met 400s (or only
    # 200s) would prove little about applying all or nothing.
    assert {200, 400, 404, 413, 415} <= set(stats.by_status), stats.by_status
    assert stats.rows_acked > 0
    assert fuzz_ingest.daemon_problems(daemon) == []
    assert sample(daemon.metrics(), "driftmon_ingest_requests_total", code="500") is None


async def _post_chunked(url: str, body: bytes, headers: dict[str, str]) -> Reply:
    """POST ``body`` without a ``Content-Length`` (chunked transfer encoding)."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    async with aiohttp.ClientSession() as session:
        return await async_request(session, "POST", url, pieces(), headers)


def rows_of_size(size: int) -> tuple[bytes, int]:
    """A valid JSON array of rows exactly ``size`` bytes long, and its row count."""
    row = b'{"x": 1.5}'
    n = (size - 2) // (len(row) + 1)
    body = b"[" + b",".join([row] * n) + b"]"
    return body + b" " * (size - len(body)), n


def counts(process: DaemonProcess) -> tuple[list[float], list[list[float]]]:
    """Rows per stream and the live counts of every monitor of the fuzzer's daemon."""
    samples = process.metrics()
    rows = [
        sample(samples, "driftmon_ingest_rows_total", stream=stream) or 0.0
        for stream in (fuzz_ingest.ROWS_STREAM, fuzz_ingest.CE_STREAM)
    ]
    return rows, [process.monitor(s, f)["live_counts"] for s, f in fuzz_ingest.MONITORS]


@pytest.mark.parametrize("path", ["/v1/streams/fz/rows", "/v1/cloudevents"])
@pytest.mark.parametrize("over", [1, 2, 5000])
def test_a_chunked_body_over_the_limit_by_even_one_byte_is_413(
    daemon: DaemonProcess, path: str, over: int
) -> None:
    body, _ = rows_of_size(fuzz_ingest.MAX_BODY_BYTES + over)
    before = counts(daemon)
    headers = {"Content-Type": "application/json"}
    reply = asyncio.run(_post_chunked(daemon.url + path, body, headers))
    assert reply.status == 413, reply.body
    assert str(fuzz_ingest.MAX_BODY_BYTES) in reply.json()["error"]
    assert counts(daemon) == before


def test_a_chunked_body_exactly_at_the_limit_is_taken(daemon: DaemonProcess) -> None:
    body, n = rows_of_size(fuzz_ingest.MAX_BODY_BYTES)
    headers = {"Content-Type": "application/json"}
    reply = asyncio.run(_post_chunked(daemon.url + fuzz_ingest.ROWS_PATH, body, headers))
    assert (reply.status, reply.json()) == (200, {"rows": n})


CE_HEADERS = {
    "Ce-Specversion": "1.0",
    "Ce-Id": "shape",
    "Ce-Source": "/fuzz",
    "Ce-Type": "org.kubeflow.serving.inference.request",
    "Ce-Inferenceservicename": fuzz_ingest.CE_SERVICE,
    "Content-Type": "application/json",
}


@pytest.mark.parametrize(
    ("shape", "status", "rows"),
    [
        ([10**12, 0], 400, None),
        ([2**63, 0], 400, None),
        ([10**6, 0], 400, None),
        ([3, 0], 400, None),
        ([0, 10**12], 200, 0),
        ([0, 2**63], 200, 0),
        ([0, 0], 200, 0),
    ],
)
def test_v2_shapes_with_huge_dimensions_and_no_values_are_answered_at_once(
    daemon: DaemonProcess, shape: list[int], status: int, rows: int | None
) -> None:
    before = counts(daemon)
    body = json.dumps(
        {"inputs": [{"name": "t", "shape": shape, "datatype": "FP32", "data": []}]}
    ).encode()
    started = time.monotonic()
    reply = daemon.post("/v1/cloudevents", body, CE_HEADERS)
    elapsed_s = time.monotonic() - started
    assert reply.status == status, reply.body
    if status == 400:
        assert "shape" in reply.json()["error"]
    else:
        assert reply.json()["rows"] == rows
    assert counts(daemon) == before
    # "At once": a loop over 10**12 columns would never answer; 5 s is ample on a busy box.
    assert elapsed_s < 5.0


MALFORMED_CONFIGS: dict[str, bytes] = {
    "tab.yaml": b"streams:\n\t- name: a\n",
    "unclosed.yaml": b"streams: [ {name: a\n",
    "binary.yaml": b"\xff\xfe\x00garbage\x80",
    "empty.yaml": b"",
    "a-list.yaml": b"- 1\n- 2\n",
    "python-tag.yaml": b"streams: !!python/object/apply:os.mkdir ['{dir}/pwned']\n",
    "deep.yaml": b"streams: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "alias-bomb.yaml": (
        b"a: &a [x, x, x, x, x, x, x, x, x]\n"
        + b"".join(
            f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n".encode()
            for p, n in zip("abcdefg", "bcdefgh", strict=True)
        )
        + b"streams: *h\n"
    ),
    "huge-int.yaml": b"server: {max_body_bytes: " + b"9" * 10000 + b"}\nstreams: []\n",
    "nul.yaml": b'streams:\n  - name: "a\x00"\n',
    "wrong-types.yaml": b"server: 5\ningest: [1]\nstreams: {name: a}\nalerts: nope\n",
}


def test_driftmon_check_names_each_error_and_never_prints_a_traceback(tmp_path: Path) -> None:
    """One ``driftmon check`` process per malformed file, all started at once."""
    runs = {}
    for name, text in MALFORMED_CONFIGS.items():
        path = tmp_path / name
        path.write_bytes(text.replace(b"{dir}", str(tmp_path).encode()))
        runs[name] = (
            path,
            subprocess.Popen(
                [sys.executable, "-m", "driftmon", "check", "-c", str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    errors = {}
    for name, (path, process) in runs.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, (name, err)
        assert out == "", name
        assert "Traceback" not in err, (name, err)
        errors[name] = err.splitlines()
        assert errors[name], name
        for line in errors[name]:
            # "FILE: PLACE: message", the place a config path (streams[0].name) or <file>.
            assert re.match(rf"{re.escape(str(path))}: [^\s:][^:]*: \S", line), (name, line)
    # The tag that would have made a folder is named as an error, and made nothing.
    assert any("python/object/apply:os.mkdir" in line for line in errors["python-tag.yaml"])
    assert not (tmp_path / "pwned").exists()
    # Each wrongly typed section is named on its own line.
    wrong = "\n".join(errors["wrong-types.yaml"])
    for section in ("server", "ingest", "streams", "alerts"):
        assert re.search(rf": {section}: ", wrong), (section, wrong)
