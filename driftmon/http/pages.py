"""The HTML pages: ``GET /``, ``/monitors/{stream}/{feature}`` and ``/monitors?...``.

:mod:`driftmon.pages` renders; these handlers only fetch what it needs.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from driftmon.http.interfaces import VIEWS_KEY
from driftmon.http.responses import error

# Pages run no script and load nothing from anywhere: a browser enforces it too.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
    )


async def overview(request: web.Request) -> web.StreamResponse:
    """``GET /``: the monitors, firing first; ``?stream=``, ``?state=`` filter, ``?limit=``
    bounds the rows."""
    from driftmon.pages import overview_page
    from driftmon.pages.render import DEFAULT_LIMIT, FILTER_STATES, select_monitors

    views = request.app[VIEWS_KEY]
    stream = request.query.get("stream") or None
    state = request.query.get("state") or None
    if state is not None and state not in FILTER_STATES:
        return error(400, f"state: expected one of {', '.join(FILTER_STATES)}, got {state!r}")
    limit_text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not limit_text.isdigit() or int(limit_text) < 1:
        return error(400, f"limit: expected a whole number >= 1, got {limit_text!r}")
    evaluation = views.latest()

    config = views.config()

    def render() -> str:
        selection = None
        histories = {}
        if evaluation is not None:
            selection = select_monitors(
                evaluation, stream=stream, state=state, limit=int(limit_text)
            )
            histories = views.history_series(
                {(v.stream, v.feature): v.rule_metric for v in selection.views}
            )
        return overview_page(
            evaluation,
            selection,
            histories,
            streams=[s.name for s in config.streams],
            stream=stream,
            state=state,
            refresh_s=config.engine.evaluate_every_s,
        )

    return _html(await asyncio.to_thread(render))


async def monitor_html(request: web.Request) -> web.StreamResponse:
    """``GET /monitors/{stream}/{feature}``: one monitor's histograms, rules and history."""
    from driftmon.pages import monitor_page

    views = request.app[VIEWS_KEY]
    stream, feature = request.match_info["stream"], request.match_info["feature"]
    evaluation = views.latest()

    config = views.config()

    def render() -> str | None:
        return monitor_page(
            evaluation,
            stream,
            feature,
            views.monitor_history(stream, feature),
            log_base=config.engine.log_base,
            refresh_s=config.engine.evaluate_every_s,
        )

    text = await asyncio.to_thread(render)
    if text is None:
        return error(404, f"no monitor {stream}/{feature}")
    return _html(text)


async def monitor_by_query(request: web.Request) -> web.StreamResponse:
    """``GET /monitors?stream=S&feature=F``: a redirect to the monitor's page.

    For links made by templates that can only escape query strings (Prometheus
    ``urlquery``, Grafana data links): ``+`` there means a space.
    """
    from driftmon.pages.render import monitor_path

    stream, feature = request.query.get("stream"), request.query.get("feature")
    if not stream or not feature:
        return error(400, "stream and feature: both query parameters are required")
    # Relative ("monitors/S/F" from "/monitors"), so that it also works under a path prefix.
    raise web.HTTPFound(monitor_path(stream, feature)[1:])
