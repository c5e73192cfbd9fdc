"""Logging: the setup of ``driftmon run`` and ``driftmon demo``, and alert transitions."""

from __future__ import annotations

import json
import logging
import os
import time

from driftmon.alerting import AlertState
from driftmon.evaluation import Evaluation

__all__ = ["WarmupLog", "configure_logging", "log_transitions", "monitor_url"]

log = logging.getLogger("driftmon")


def configure_logging(log_format: str, level: str = "INFO") -> None:
    """One line per record: plain text, or JSON objects with ``--log-format json``."""

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            entry = {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["exception"] = self.formatException(record.exc_info)
            return json.dumps(entry)

    handler = logging.StreamHandler()
    if log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("DRIFTMON_LOG_LEVEL", level))


def monitor_url(base_url: str, stream: str, feature: str) -> str:
    """The address of a monitor's page under ``base_url``."""
    from driftmon.pages.render import monitor_path

    return base_url + monitor_path(stream, feature)


def log_transitions(
    previous: Evaluation | None, current: Evaluation, base_url: str
) -> list[tuple[str, str, str, str]]:
    """Log alerts that started or stopped firing, with the monitor's page; returns the
    (rule, stream, feature, page URL) of those that started."""
    fired = []
    before: dict[tuple[str, str, str], int] = {}
    if previous is not None:
        for pair, state in zip(previous.alert_pairs, previous.alerts.state, strict=True):
            m = previous.monitors[pair.monitor]
            before[(pair.rule.name, m.stream, m.feature)] = int(state)
    for pair, state in zip(current.alert_pairs, current.alerts.state, strict=True):
        m = current.monitors[pair.monitor]
        key = (pair.rule.name, m.stream, m.feature)
        was = before.get(key, 0)
        if state == AlertState.FIRING and was != AlertState.FIRING:
            value = float(current.values[pair.rule.metric][pair.monitor])
            url = monitor_url(base_url, m.stream, m.feature)
            log.warning(
                "alert %s firing for %s/%s: %s = %.6g; see %s",
                *key, pair.rule.metric, value, url,
            )
            fired.append((*key, url))
        elif was == AlertState.FIRING and state != AlertState.FIRING:
            log.info(
                "alert %s resolved for %s/%s; see %s",
                *key, monitor_url(base_url, m.stream, m.feature),
            )
    return fired


class WarmupLog:
    """Logs each warmup's progress once per 10 % step, and its freezing.

    A stream collecting its warmup reference has no divergence yet: without
    this the log says nothing between "ready" and its first alert.
    """

    def __init__(self) -> None:
        self._logged: dict[str, int] = {}  # stream -> last warmup percentage logged

    def update(self, progress: dict[str, tuple[int, int] | None]) -> int:
        """Log what changed in ``progress`` (stream -> rows collected and needed, or None
        once frozen); how many streams still warm up."""
        for name, rows in progress.items():
            logged = self._logged.get(name)
            if rows is None:
                if logged is not None and logged < 100:
                    log.info("stream %s: warmup reference frozen", name)
                    self._logged[name] = 100
                continue
            collected, needed = rows
            step = min(100, collected * 100 // max(needed, 1)) // 10 * 10
            if logged is None or step > logged:
                self._logged[name] = step
                log.info(
                    "stream %s: warmup %d %% (%d of %d rows)", name, step, collected, needed
                )
        return sum(rows is not None for rows in progress.values())
