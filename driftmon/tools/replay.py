"""``driftmon replay``: the engine over a file of rows (docs/cli.md).

With the stream's ``time_field`` the replay runs on event time: rows go to
the window pane of their own time, and an evaluation happens at every
multiple of ``engine.evaluate_every`` that the data passes, as the daemon's
clock would; the last one follows the last row. Without ``time_field``
every row arrives at once and there is one evaluation, at the end.

Each evaluation prints one JSON object per monitor of the stream, with the
keys of :data:`RECORD_KEYS`. Absent divergences are ``null``; an infinite
KL is the literal ``Infinity`` (as Python's ``json`` writes it).

``html`` also writes the stream's monitor pages for the run into one
self-contained file (:func:`driftmon.pages.report_page`): the final
distributions and the history of every divergence over event time (the last
``engine.history.length`` of it, one entry per ``engine.history.every``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from driftmon.config import Config, TimeWindow
from driftmon.engine import Engine
from driftmon.evaluation import Evaluation
from driftmon.names import MONITOR_METRICS
from driftmon.reference import numeric_fields
from driftmon.sources.columnar import iter_batches

_VALUE_KEYS = tuple(metric.name for metric in MONITOR_METRICS)
RECORD_KEYS = ("time", "stream", "feature", "samples", "reference_samples", *_VALUE_KEYS, "firing")


def parse_event_time(value: object) -> float | None:
    """Epoch seconds from a number, a numeric string or an RFC 3339 string; else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            return seconds if math.isfinite(seconds) else None
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


def format_time(seconds: float | None) -> str | None:
    """RFC 3339 UTC text of epoch seconds (``None`` stays ``None``)."""
    if seconds is None:
        return None
    stamp = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _number(value: float) -> float | int | None:
    if math.isnan(value):
        return None
    return value


def records(
    evaluation: Evaluation, stream: str, event_time: float | None
) -> Iterator[dict[str, object]]:
    """The docs/cli.md JSON records of one evaluation, for the monitors of ``stream``."""
    for monitor in evaluation.monitors:
        if monitor.stream != stream:
            continue
        i = monitor.index
        yield {
            "time": format_time(event_time),
            "stream": monitor.stream,
            "feature": monitor.feature,
            "samples": int(evaluation.window_samples[i]),
            "reference_samples": int(evaluation.reference_samples[i]),
            **{name: _number(float(evaluation.values[name][i])) for name in _VALUE_KEYS},
            "firing": evaluation.firing_rules(i),
        }


def _event_times(values: Sequence[object] | np.ndarray, last: float | None) -> np.ndarray:
    """Event time of each row; a row without a readable time takes the previous row's."""
    times = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        parsed = parse_event_time(value)
        if parsed is not None:
            last = parsed
        times[i] = math.nan if last is None else last
    return times


def replay(
    config: Config,
    stream_name: str,
    path: Path,
    out: TextIO,
    *,
    data_format: str | None = None,
    chunk_rows: int = 10_000,
    html: Path | None = None,
) -> int:
    """Replay ``path`` through ``stream_name``'s monitors, writing JSON lines to ``out``
    (and the HTML report to ``html`` when given).

    Returns the number of evaluations printed.
    """
    stream = config.stream(stream_name)
    fields = [f.name for f in stream.features]
    time_field = stream.time_field
    if time_field is not None and time_field not in fields:
        fields.append(time_field)
    every_s = config.engine.evaluate_every_s
    engine: Engine | None = None
    evaluations = 0
    next_evaluation: float | None = None
    last_time: float | None = None
    last: Evaluation | None = None

    def emit(now: float, event_time: float | None) -> None:
        nonlocal evaluations, last
        assert engine is not None
        evaluation = last = engine.evaluate(now)
        for record in records(evaluation, stream_name, event_time):
            out.write(json.dumps(record) + "\n")
        evaluations += 1

    for batch in iter_batches(
        path,
        fields,
        format=data_format,
        numeric_fields=numeric_fields(stream),
        other_fields=() if time_field is None else (time_field,),
        chunk_rows=chunk_rows,
    ):
        columns = {f.name: batch.columns[f.name] for f in stream.features}
        if time_field is None:
            if engine is None:
                engine = Engine(config, now=0.0)
            engine.ingest(stream_name, batch.n_rows, columns, 0.0)
            continue
        times = _event_times(batch.columns[time_field], last_time)
        known = ~np.isnan(times)
        if not known.any():
            continue  # no time yet: rows before the first readable time are skipped
        first = int(np.argmax(known))
        if first:
            columns = {name: values[first:] for name, values in columns.items()}
            times = times[first:]
        last_time = float(times[-1])
        if engine is None:
            engine = Engine(config, now=float(times[0]))
            next_evaluation = (math.floor(times[0] / every_s) + 1) * every_s
        assert next_evaluation is not None
        for start, stop in _runs(times, every_s, stream.window):
            while times[start] >= next_evaluation:
                emit(next_evaluation, next_evaluation)
                next_evaluation += every_s
            engine.ingest(
                stream_name,
                stop - start,
                {name: values[start:stop] for name, values in columns.items()},
                float(times[start]),
            )
    if engine is None:
        engine = Engine(config, now=0.0)
    if time_field is None or next_evaluation is None:
        emit(engine.now, None)
    else:
        emit(next_evaluation, next_evaluation)
    if html is not None and last is not None:
        write_report(html, engine, last, stream_name, path)
    return evaluations


def write_report(
    html: Path, engine: Engine, evaluation: Evaluation, stream_name: str, source: Path
) -> None:
    """The stream's pages for the replayed run, as one HTML file (written whole, then renamed)."""
    from driftmon.pages import report_page

    histories = {
        (m.stream, m.feature): engine.history.monitor(m.index)
        for m in evaluation.monitors
        if m.stream == stream_name
    }
    text = report_page(
        evaluation,
        histories,
        log_base=engine.log_base,
        title=f"stream {stream_name}, {source.name}",
        stream=stream_name,
    )
    partial = html.with_name(html.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(html)


def _runs(times: np.ndarray, every_s: float, window: object) -> Iterator[tuple[int, int]]:
    """Consecutive rows that share an evaluation period and a window pane."""
    changed = np.diff(np.floor(times / every_s)) != 0
    if isinstance(window, TimeWindow):
        changed |= np.diff(np.floor(times / window.pane_width_s)) != 0
    change = np.flatnonzero(changed) + 1
    bounds = [0, *change.tolist(), len(times)]
    yield from zip(bounds[:-1], bounds[1:], strict=True)
