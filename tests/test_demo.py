"""``driftmon demo`` end to end (docs/cli.md): a real process, its producer, its alerts.

The demo is started as a user would (``python -m driftmon demo``) on a free port, with the
drift injected after 3 s. The test polls ``/metrics`` until an alert fires for a feature the
producer drifts, checking at every scrape that the features it leaves alone stay quiet.
"""

from __future__ import annotations

import re
import signal
import time

from harness import DaemonProcess, Samples, series, wait_for

DRIFT_AFTER_S = 3
FIRING_WITHIN_S = 120.0
DRIFTED = (("shop", "basket_value"), ("fraud-model", "score"))
UNDRIFTED = (("shop", "items"), ("shop", "country"))


def firing_series(samples: Samples, stream: str, feature: str) -> dict[str, float]:
    """``driftmon_alert_firing`` of one monitor, by rule."""
    return {
        dict(labels)["rule"]: value
        for labels, value in series(
            samples, "driftmon_alert_firing", stream=stream, feature=feature
        ).items()
    }


def test_demo_fires_for_drifted_features_only_and_stops_on_sigint() -> None:
    demo = DaemonProcess(None, command=["demo"], args=["--drift-after", str(DRIFT_AFTER_S)])
    started = time.monotonic()
    with demo:
        printed = "".join(demo.stdout)
        assert f"serving on {demo.url}" in printed, printed
        assert f"{demo.url}/metrics" in printed, printed
        assert f"{demo.url}/api/v1/monitors" in printed, printed
        quiet_checks = 0

        def drifted_alert() -> tuple[str, str, str] | None:
            nonlocal quiet_checks
            samples = demo.metrics()
            for stream, feature in UNDRIFTED:
                rules = firing_series(samples, stream, feature)
                if rules:  # the monitors exist from the start (a reference file)
                    assert set(rules.values()) == {0.0}, (stream, feature, rules)
                    quiet_checks += 1
            for stream, feature in DRIFTED:
                for rule, value in firing_series(samples, stream, feature).items():
                    if value == 1.0:
                        return stream, feature, rule
            return None

        stream, feature, rule = wait_for(drifted_alert, FIRING_WITHIN_S, "a drifted alert")
        assert time.monotonic() - started < FIRING_WITHIN_S
        assert quiet_checks > 0
        # The firing alert is what the monitors API says too, for the same monitor.
        detail = demo.monitor(stream, feature)
        assert any(a["rule"] == rule and a["state"] == "firing" for a in detail["alerts"]), detail
        assert demo.stop(signal.SIGINT) == 0
    printed = "".join(demo.stdout)
    assert re.search(r"drift injected", printed), printed
