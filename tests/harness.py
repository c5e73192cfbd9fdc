"""A real driftmon daemon in a subprocess, on a free port, for integration tests.

Tests talk HTTP to it with aiohttp and read ``/metrics`` with
``prometheus_client.parser``. Nothing sleeps a fixed time: every wait polls
a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

import driftmon

STARTUP_TIMEOUT_S = 120.0  # the first start of a fresh checkout compiles the kernels

# The URL stops at whitespace or a quote, so it is found in text and JSON log lines alike.
_LISTENING = re.compile(r"listening on (http://[^\s\"']+)")


@dataclass(frozen=True)
class Reply:
    """One HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def async_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One HTTP request on an open session (for tests that post concurrently)."""
    async with session.request(method, url, data=body, headers=headers) as response:
        return Reply(response.status, dict(response.headers), await response.read())


async def _request(
    method: str, url: str, body: bytes | None, headers: Mapping[str, str] | None
) -> Reply:
    async with aiohttp.ClientSession() as session:
        return await async_request(session, method, url, body, headers)


def request(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    """One HTTP request with aiohttp, from synchronous test code."""
    return asyncio.run(_request(method, url, body, headers))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """``{(sample name, sorted labels): value}`` of a text exposition."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def series(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` whose labels include ``labels``, by its sorted labels."""
    wanted = set(labels.items())
    return {
        key: value
        for (sample_name, key), value in samples.items()
        if sample_name == name and wanted <= set(key)
    }


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


# The folder holding the driftmon package this process imported (a checkout or site-packages).
PACKAGE_PARENT = Path(driftmon.__file__).resolve().parent.parent


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` plus ``env``, with PYTHONPATH led by :data:`PACKAGE_PARENT`.

    ``python -m driftmon`` puts its working directory first on ``sys.path``. When
    that directory holds some other folder named ``driftmon`` (a clone's own
    folder, seen from the folder above it) and driftmon is installed in editable
    mode, that folder is imported as an empty namespace package and the command
    fails. A regular package found anywhere on ``sys.path`` wins over a namespace
    folder, so naming ours on PYTHONPATH makes every child run the same code as
    the test, wherever it is started.
    """
    merged = {**os.environ, **(env or {})}
    paths = [str(PACKAGE_PARENT)]
    paths += [entry for entry in merged.get("PYTHONPATH", "").split(os.pathsep) if entry]
    merged["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return merged


class DaemonProcess:
    """``driftmon run -c CONFIG --listen 127.0.0.1:0`` (or another command) as a subprocess.

    Standard output and standard error are read by two threads: ``stdout``
    and ``stderr`` hold each one's lines, ``log`` both in arrival order.
    """

    def __init__(
        self,
        config_path: Path | None,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = ("run",),
    ) -> None:
        self.config_path = config_path
        self.args = list(args)
        self.env = child_environment(env)
        self.command = list(command)
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: list[str] = []
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._listening = threading.Event()
        self._drains: list[threading.Thread] = []

    def start(self, *, wait_ready: bool = True) -> DaemonProcess:
        """Start the process and wait until it listens (and, by default, is ready)."""
        argv = [sys.executable, "-m", "driftmon", *self.command]
        if self.config_path is not None:
            argv += ["-c", str(self.config_path)]
        argv += ["--listen", "127.0.0.1:0", *self.args]
        self.log, self.stdout, self.stderr = [], [], []
        self.url = ""
        self._listening.clear()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._drains = [
            threading.Thread(target=self._drain, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for thread in self._drains:
            thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._listening.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError("daemon did not listen:\n" + self.log_text())
        if wait_ready:
            wait_for(self.is_ready, STARTUP_TIMEOUT_S, "/-/ready")
        return self

    def _drain(self, stream: IO[str], lines: list[str]) -> None:
        with stream:
            for line in stream:
                lines.append(line)
                self.log.append(line)
                found = _LISTENING.search(line)
                if found and not self._listening.is_set():
                    self.url = found.group(1)
                    self._listening.set()

    def log_text(self) -> str:
        """Everything the process wrote so far, both streams."""
        return "".join(self.log)

    def wait_log(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the output, once it appears."""
        compiled = re.compile(pattern)
        return wait_for(  # type: ignore[no-any-return]
            lambda: compiled.search(self.log_text()), timeout_s, f"log line {pattern!r}"
        )

    def is_ready(self) -> bool:
        """Whether ``/-/ready`` answers 200; fails if the process has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError("daemon exited:\n" + self.log_text())
        return request("GET", self.url + "/-/ready").status == 200

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return request("GET", self.url + path, headers=headers)

    def post(self, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        return request("POST", self.url + path, body, headers)

    def post_rows(
        self,
        stream: str,
        body: bytes,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> Reply:
        """``POST /v1/streams/{stream}/rows`` with ``body`` as ``content_type``."""
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.post(f"/v1/streams/{stream}/rows", body, headers)

    def post_json(self, stream: str, body: bytes, token: str | None = None) -> Reply:
        return self.post_rows(stream, body, "application/json", token)

    def metrics(self) -> Samples:
        reply = self.get("/metrics")
        assert reply.status == 200, reply
        return parse_metrics(reply.body.decode())

    def monitor(self, stream: str, feature: str) -> dict[str, Any]:
        """``GET /api/v1/monitors/{stream}/{feature}`` (which must answer 200)."""
        reply = self.get(f"/api/v1/monitors/{stream}/{feature}")
        assert reply.status == 200, (reply.status, reply.body)
        return reply.json()  # type: ignore[no-any-return]

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process without waiting."""
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``signum`` and wait for the exit status (and the end of the output)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout_s)
        for thread in self._drains:
            thread.join(timeout_s)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(30)
            for thread in self._drains:
                thread.join(30)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def process_family(pid: int) -> list[int]:
    """``pid`` and its descendants alive now (a daemon and its parse processes)."""
    found = [pid]
    for member in found:
        try:
            tasks = list(Path(f"/proc/{member}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` and its descendants, in bytes: VmRSS of each
    ``/proc/PID/status``, summed (pages they share count once per process)."""
    total = 0
    for member in process_family(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue  # gone since it was listed
        found = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
        if found is None:
            if member == pid:
                raise RuntimeError(f"no VmRSS for process {pid}")
            continue
        total += int(found.group(1)) * 1024
    return total


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of one sample, or ``None`` when the series is absent."""
    return samples.get((name, tuple(sorted(labels.items()))))
