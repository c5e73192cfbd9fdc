"""``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload`` and ``/api/v1/monitors``.

The endpoints and their answers: docs/http-api.md.
"""

from __future__ import annotations

from aiohttp import web

from driftmon.evaluation import ALL_METRICS, Evaluation
from driftmon.history import json_number
from driftmon.http.interfaces import VIEWS_KEY
from driftmon.http.responses import error, json_response, unavailable

SCRAPE_SLICE_BYTES = 1 << 20
"""A scrape body is written in slices of this size (the loop serves others in between)."""


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip (``gzip`` or ``*``, q not 0)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                if float(quality[2:]) <= 0.0:
                    continue
            except ValueError:
                continue
        return True
    return False


async def metrics(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: text 0.0.4, or OpenMetrics when the Accept header asks for it.

    Rendered off the event loop (``Views.scrape``), gzipped when the scraper
    accepts it (Prometheus does), and written in slices.
    """
    gzip = accepts_gzip(request.headers.get("Accept-Encoding"))
    scrape = await request.app[VIEWS_KEY].scrape(request.headers.get("Accept"), gzip)
    response = web.StreamResponse()
    response.headers["Content-Type"] = scrape.content_type
    response.headers["Vary"] = "Accept-Encoding"
    if scrape.content_encoding is not None:
        response.headers["Content-Encoding"] = scrape.content_encoding
    response.content_length = sum(len(chunk) for chunk in scrape.chunks)
    await response.prepare(request)
    if request.method == "HEAD":  # the headers only: a body here would corrupt the connection
        await response.write_eof()
        return response
    for chunk in scrape.chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), SCRAPE_SLICE_BYTES):
            await response.write(view[start : start + SCRAPE_SLICE_BYTES])
    await response.write_eof()
    return response


async def healthy(request: web.Request) -> web.StreamResponse:
    """``GET /-/healthy``: 200 while the process runs."""
    return web.Response(text="driftmon is healthy.\n")


async def ready(request: web.Request) -> web.StreamResponse:
    """``GET /-/ready``: 200 once references are loaded and state restored, else 503."""
    if request.app[VIEWS_KEY].ready():
        return web.Response(text="driftmon is ready.\n")
    return web.Response(status=503, text="driftmon is not ready.\n")


async def reload(request: web.Request) -> web.StreamResponse:
    """``POST /-/reload``: 200, or 400 with the errors and the old config kept."""
    views = request.app[VIEWS_KEY]
    if not views.ready():
        return unavailable("not ready")
    outcome = await views.reload()
    if outcome.errors:
        return json_response(
            {"error": "config not reloaded; the old one stays", "errors": outcome.errors}, 400
        )
    # Settings that changed but apply at the next start are said, not silently dropped.
    return json_response({"status": "reloaded", "notices": outcome.notices})


def monitors_payload(
    evaluation: Evaluation | None, only: tuple[str, str] | None = None
) -> list[dict[str, object]]:
    """Every monitor's (or ``only``'s) samples, divergences and alert states."""
    if evaluation is None:
        return []
    alerts: dict[int, list[dict[str, object]]] = {}
    states = ("inactive", "pending", "firing")
    p_values = evaluation.values["p_value"]
    for i, pair in enumerate(evaluation.alert_pairs):
        table = evaluation.alerts
        alerts.setdefault(pair.monitor, []).append(
            {
                "rule": pair.rule.name,
                "metric": pair.rule.metric,
                "severity": pair.rule.severity,
                "state": states[int(table.state[i])],
                "active_at": json_number(float(table.active_at[i])),
                "fired_at": json_number(float(table.fired_at[i])),
                # The raw G-test p-value, and the one max_p_value judged (corrected
                # over the rule's family when it has p_value_correction; null when
                # the pair got no verdict at this evaluation).
                "p_value": json_number(float(p_values[pair.monitor])),
                "p_value_correction": pair.rule.p_value_correction,
                "p_value_corrected": json_number(float(evaluation.alert_p_values[i])),
            }
        )
    result = []
    for monitor in evaluation.monitors:
        if only is not None and (monitor.stream, monitor.feature) != only:
            continue
        i = monitor.index
        result.append(
            {
                "stream": monitor.stream,
                "feature": monitor.feature,
                "type": monitor.type,
                "samples": int(evaluation.window_samples[i]),
                "reference_samples": int(evaluation.reference_samples[i]),
                "evaluated_at": evaluation.time,
                "divergences": {
                    name: json_number(float(evaluation.values[name][i])) for name in ALL_METRICS
                },
                "alerts": alerts.get(i, []),
            }
        )
    return result


def streams_payload(evaluation: Evaluation | None) -> dict[str, dict[str, object]]:
    """Per stream: its combined p-value and, per rule, the monitors the rule fires for."""
    if evaluation is None:
        return {}
    streams: dict[str, dict[str, object]] = {
        monitor.stream: {"drift_p_value": None, "drifting_features": {}}
        for monitor in evaluation.monitors
    }
    for stream, value in evaluation.stream_p_values.items():
        streams[stream]["drift_p_value"] = json_number(value)
    for (stream, rule), count in evaluation.drifting_features().items():
        drifting = streams[stream]["drifting_features"]
        assert isinstance(drifting, dict)
        drifting[rule] = count
    return streams


async def monitors(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/monitors``: every monitor's samples, divergences and alert states."""
    views = request.app[VIEWS_KEY]
    evaluation = views.latest()  # one evaluation for both parts of the answer
    return json_response(
        {
            "log_base": views.config().engine.log_base,
            "monitors": monitors_payload(evaluation),
            "streams": streams_payload(evaluation),
        }
    )


async def monitor(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/monitors/{stream}/{feature}``: the above plus bins and counts."""
    views = request.app[VIEWS_KEY]
    key = (request.match_info["stream"], request.match_info["feature"])
    found = monitors_payload(views.latest(), key)
    detail = views.monitor_detail(*key)
    if not found or detail is None:
        return error(404, f"no monitor {key[0]}/{key[1]}")
    return json_response({**found[0], **detail})


async def monitor_history(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/monitors/{stream}/{feature}/history``: the monitor's recent evaluations."""
    views = request.app[VIEWS_KEY]
    stream, feature = request.match_info["stream"], request.match_info["feature"]
    history = views.monitor_history(stream, feature)
    if history is None:
        return error(404, f"no monitor {stream}/{feature}")
    engine = views.config().engine
    return json_response(
        {
            "stream": stream,
            "feature": feature,
            "log_base": engine.log_base,
            "history_length_s": engine.history_length_s,
            "history_every_s": max(engine.history_every_s, engine.evaluate_every_s),
            **history.to_json(),
        }
    )
