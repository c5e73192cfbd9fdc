"""The daemon's ``/metrics`` passes the real ``promtool check metrics`` (docs/metrics.md).

A real daemon (``tests/harness.py``) gets traffic that gives every metric family
series: divergences and alerts of a stream with a file reference, a stream still
collecting its warmup reference, values of every kind, unknown fields, rejected
requests, a CloudEvent that feeds no stream, and a checkpoint. Its text exposition
must then lint clean: exit 0 and no output at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from harness import DaemonProcess, wait_for
from prometheus_client.parser import text_string_to_metric_families

# docs/metrics.md, exactly: these names are public.
PUBLIC_FAMILIES = {
    "driftmon_kl_divergence": "gauge",
    "driftmon_reverse_kl_divergence": "gauge",
    "driftmon_js_divergence": "gauge",
    "driftmon_psi": "gauge",
    "driftmon_hellinger_distance": "gauge",
    "driftmon_wasserstein_distance": "gauge",
    "driftmon_drift_p_value": "gauge",
    "driftmon_entropy": "gauge",
    "driftmon_window_samples": "gauge",
    "driftmon_reference_samples": "gauge",
    "driftmon_alert_firing": "gauge",
    "driftmon_alert_p_value": "gauge",
    "driftmon_stream_drift_p_value": "gauge",
    "driftmon_stream_drifting_features": "gauge",
    "driftmon_ingest_rows": "counter",  # exposed as driftmon_ingest_rows_total
    "driftmon_ingest_values": "counter",
    "driftmon_ingest_requests": "counter",
    "driftmon_evaluation_duration_seconds": "histogram",
    "driftmon_last_evaluation_timestamp_seconds": "gauge",
    "driftmon_checkpoint_last_success_timestamp_seconds": "gauge",
    "driftmon_config_last_reload_successful": "gauge",
    "driftmon_build_info": "gauge",
}


def promtool() -> str:
    """The ``promtool`` binary; skips when it is absent outside CI (in CI it must be there)."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed, and CI is set: .ci/run installs it")
        pytest.skip("promtool is not installed (Debian package prometheus); CI runs this test")
    return path


CONFIG = """\
server:
  listen: 127.0.0.1:0
engine:
  evaluate_every: 200ms
state:
  dir: {state_dir}
  checkpoint_every: 200ms
streams:
  - name: credit
    reference: {{file: {reference}}}
    window: {{samples: 1000}}
    features:
      - {{name: income, type: numeric, bins: {{kind: uniform, lo: 0, hi: 100, count: 10}}}}
      - {{name: region, type: categorical, categories: [north, south]}}
    cloudevents: {{service: credit-model, inputs: [income, region]}}
  - name: warming
    reference: {{warmup: 1000}}
    features:
      - {{name: score, type: numeric, bins: {{kind: uniform, lo: 0, hi: 1, count: 5}}}}
alerts:
  - name: js-high
    metric: js
    threshold: 0.01
    severity: page
  - name: drift-holm
    match: {{stream: credit}}
    metric: psi
    threshold: 0
    max_p_value: 0.01
    p_value_correction: holm
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    promtool()  # skip before starting anything
    folder = tmp_path_factory.mktemp("lint")
    reference = folder / "reference.ndjson"
    reference.write_text(
        "".join(
            json.dumps({"income": (i % 100) + 0.5, "region": "north" if i % 3 else "south"}) + "\n"
            for i in range(500)
        )
    )
    config = folder / "driftmon.yaml"
    config.write_text(CONFIG.format(state_dir=folder / "state", reference=reference))
    process = DaemonProcess(config)
    process.start()
    try:
        yield process
    finally:
        process.kill()


def feed(daemon: DaemonProcess) -> None:
    """Traffic that gives every family series (see the module docstring)."""
    rows = [
        {"income": 90.5, "region": "south", "note": "unknown field"},
        {"income": -5, "region": "east"},  # underflow, other
        {"income": 1e9, "region": None},  # overflow, missing
        {"income": "n/a", "region": ["x"]},  # invalid, invalid
        {"region": "north"},  # missing
    ] * 40
    assert daemon.post_json("credit", json.dumps(rows).encode()).status == 200
    assert daemon.post_json("warming", b'[{"score": 0.5}]').status == 200
    assert daemon.post_json("credit", b"[{").status == 400
    assert daemon.post_json("nowhere", b"[]").status == 404
    event = daemon.post(
        "/v1/cloudevents",
        b'{"instances": [[1.0, "north"]]}',
        {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "lint",
            "ce-type": "org.kubeflow.serving.inference.request",
            "ce-inferenceservicename": "no-such-model",
        },
    )
    assert event.status == 200, event


def test_metrics_pass_promtool_check_metrics(daemon: DaemonProcess) -> None:
    feed(daemon)

    def every_family_has_series() -> str | None:
        text = daemon.get("/metrics").body.decode()
        families = list(text_string_to_metric_families(text))
        empty = [family.name for family in families if not family.samples]
        # The checkpoint gauge appears only after the first checkpoint (every 200 ms).
        missing = set(PUBLIC_FAMILIES) - {family.name for family in families}
        return None if empty or missing else text

    text = wait_for(every_family_has_series, 30, "series in every family")
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    for name, kind in PUBLIC_FAMILIES.items():
        assert families.get(name) == kind, f"{name}: {families.get(name)}"
    firing = [line for line in text.splitlines() if line.startswith("driftmon_alert_firing{")]
    assert any('rule="js-high"' in line and line.endswith(" 1.0") for line in firing), firing

    done = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr
