"""The real stack: driftmon → Prometheus (rules from ``driftmon rules``) → Alertmanager.

The daemon (``tests/harness.py``), ``prometheus-alertmanager`` and ``prometheus`` run on
loopback ports with temporary data folders; Prometheus scrapes the daemon and evaluates the
generated rules every second and sends its alerts to Alertmanager. Rows without drift, then a
drift, then rows like the reference again must give: Prometheus storing exactly the value the
daemon exports, the drift alert reaching Alertmanager, and the alert resolving once the
``{samples: N}`` window holds reference-like rows only. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import DaemonProcess, sample, wait_for

STREAM, FEATURE = "live", "x"
WINDOW_ROWS = 200
ALERT = "DriftmonJsHigh"
DEADLINE_S = 30.0

CONFIG = f"""\
server:
  listen: 127.0.0.1:0
engine:
  evaluate_every: 250ms
streams:
  - name: {STREAM}
    reference: {{file: reference.ndjson}}
    window: {{samples: {WINDOW_ROWS}}}
    features:
      - {{name: {FEATURE}, type: numeric, bins: {{kind: uniform, lo: 0, hi: 1, count: 10}}}}
alerts:
  - name: js-high
    match: {{stream: {STREAM}, feature: {FEATURE}}}
    metric: js
    threshold: 0.1
    clear_below: 0.05
    for: 1s
    min_samples: 100
    severity: warning
"""


def binary(name: str) -> str:
    """The path of ``name``; skips when it is absent outside CI (in CI it must be there)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI is set: .ci/run installs it")
        pytest.skip(
            f"{name} is not installed (Debian packages prometheus, prometheus-alertmanager)"
        )
    return path


def free_port() -> int:
    """A loopback port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Service:
    """A server subprocess whose output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str

    def log_tail(self) -> str:
        return f"--- {self.name} log ---\n" + self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = DEADLINE_S) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited\n{self.log_tail()}")
            return answers(self.url + "/-/ready")

        wait_for(ready, timeout_s, f"{self.name} /-/ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start(name: str, argv: Sequence[str], folder: Path, port: int) -> Service:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    return Service(name, process, log, f"http://127.0.0.1:{port}")


@dataclass
class Stack:
    daemon: DaemonProcess
    prometheus: Service
    alertmanager: Service

    def logs(self) -> str:
        return "\n".join(
            [
                "--- driftmon log ---\n" + self.daemon.log_text()[-4000:],
                self.prometheus.log_tail(),
                self.alertmanager.log_tail(),
            ]
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of ``promql`` in Prometheus, now."""
        url = self.prometheus.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        answer = get_json(url)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's active alerts called :data:`ALERT`."""
        query = urllib.parse.urlencode({"filter": f'alertname="{ALERT}"'})
        return get_json(self.alertmanager.url + "/api/v2/alerts?" + query)  # type: ignore[no-any-return]

    def post_rows(self, values: Sequence[float]) -> None:
        body = json.dumps([{FEATURE: value} for value in values]).encode()
        reply = self.daemon.post_json(STREAM, body)
        assert reply.status == 200, reply


def reference_like(n: int) -> list[float]:
    """``n`` values spread evenly over [0, 1), like the reference."""
    return [(i + 0.5) / n for i in range(n)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = binary("prometheus")
    alertmanager_bin = binary("prometheus-alertmanager")
    folder = tmp_path_factory.mktemp("stack")
    (folder / "reference.ndjson").write_text(
        "".join(json.dumps({FEATURE: value}) + "\n" for value in reference_like(1000))
    )
    config = folder / "driftmon.yaml"
    config.write_text(CONFIG)
    rules = subprocess.run(
        [sys.executable, "-m", "driftmon", "rules", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stderr
    (folder / "rules.yml").write_text(rules.stdout)
    (folder / "alertmanager.yml").write_text(
        "route:\n  receiver: 'null'\n  group_wait: 0s\nreceivers:\n  - name: 'null'\n"
    )
    with ExitStack() as cleanup:
        am_port = free_port()
        alertmanager = start(
            "alertmanager",
            [
                alertmanager_bin,
                f"--config.file={folder / 'alertmanager.yml'}",
                f"--storage.path={folder / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            folder,
            am_port,
        )
        cleanup.callback(alertmanager.stop)
        daemon = DaemonProcess(config)
        cleanup.callback(daemon.kill)
        daemon.start()
        target = urllib.parse.urlsplit(daemon.url).netloc
        (folder / "prometheus.yml").write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files: [rules.yml]\n"
            "alerting:\n"
            "  alertmanagers:\n"
            f"    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n"
            "scrape_configs:\n"
            "  - job_name: driftmon\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        prom_port = free_port()
        prometheus = start(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            folder,
            prom_port,
        )
        cleanup.callback(prometheus.stop)
        stack = Stack(daemon, prometheus, alertmanager)
        try:
            alertmanager.wait_ready()
            prometheus.wait_ready()
            wait_for(
                lambda: stack.query('up{job="driftmon"} == 1'), DEADLINE_S, "a successful scrape"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from exc
        yield stack


def daemon_js(stack: Stack) -> float | None:
    """The daemon's exported ``driftmon_js_divergence`` of the monitor, once its window is full."""
    metrics = stack.daemon.metrics()
    labels = {"stream": STREAM, "feature": FEATURE}
    if sample(metrics, "driftmon_window_samples", **labels) != WINDOW_ROWS:
        return None
    return sample(metrics, "driftmon_js_divergence", **labels)


def test_prometheus_stores_the_value_the_daemon_exports(stack: Stack) -> None:
    stack.post_rows(reference_like(WINDOW_ROWS))
    selector = f'driftmon_js_divergence{{stream="{STREAM}", feature="{FEATURE}"}}'

    def settled() -> float | None:
        # A full window of these rows and no more posts: every evaluation from now on gives
        # the same value, so every later scrape must store exactly it.
        first = daemon_js(stack)
        return first if first is not None and daemon_js(stack) == first else None

    exported = wait_for(settled, DEADLINE_S, "the daemon's window to fill")
    assert exported < 0.05, "reference-like rows must not look drifted"
    settled_at = time.time()

    def scraped_since() -> list[dict[str, Any]]:
        stamp = stack.query(f"timestamp({selector})")
        return stamp if stamp and float(stamp[0]["value"][1]) >= settled_at else []

    wait_for(scraped_since, DEADLINE_S, "a scrape after the value settled")
    [stored] = stack.query(selector)
    assert stored["metric"] == {
        "__name__": "driftmon_js_divergence",
        "stream": STREAM,
        "feature": FEATURE,
        "job": "driftmon",
        "instance": urllib.parse.urlsplit(stack.daemon.url).netloc,
    }
    assert float(stored["value"][1]) == exported
    [monitor] = stack.daemon.get("/api/v1/monitors").json()["monitors"]
    assert math.isclose(monitor["divergences"]["js"], float(stored["value"][1]), rel_tol=1e-12)
    assert stack.query(f'ALERTS{{alertname="{ALERT}"}}') == []


def test_drift_alert_reaches_alertmanager_and_resolves(stack: Stack) -> None:
    stack.post_rows(reference_like(WINDOW_ROWS))
    wait_for(lambda: (js := daemon_js(stack)) is not None and js < 0.05, DEADLINE_S, "no drift")
    assert stack.alertmanager_alerts() == []

    stack.post_rows([0.95] * WINDOW_ROWS)
    try:
        [alert] = wait_for(stack.alertmanager_alerts, DEADLINE_S, "the alert in Alertmanager")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from exc
    assert alert["labels"] == {
        "alertname": ALERT,
        "rule": "js-high",
        "severity": "warning",
        "stream": STREAM,
        "feature": FEATURE,
        "job": "driftmon",
        "instance": urllib.parse.urlsplit(stack.daemon.url).netloc,
    }
    assert alert["annotations"]["summary"].startswith(
        f"JS divergence (driftmon_js_divergence) of {STREAM}/{FEATURE} is "
    )
    value = float(alert["annotations"]["summary"].rsplit(" ", 1)[1])
    assert value > 0.1
    # The daemon's own state machine agrees.
    firing = (
        "driftmon_alert_firing",
        (("feature", FEATURE), ("rule", "js-high"), ("severity", "warning"), ("stream", STREAM)),
    )
    wait_for(lambda: stack.daemon.metrics().get(firing) == 1.0, DEADLINE_S, "the daemon firing")

    stack.post_rows(reference_like(WINDOW_ROWS))
    try:
        wait_for(lambda: not stack.alertmanager_alerts(), DEADLINE_S, "the alert to resolve")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from exc
    assert stack.query(f'ALERTS{{alertname="{ALERT}"}}') == []
    js = daemon_js(stack)
    assert js is not None and js <= 0.05
