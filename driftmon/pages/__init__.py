"""The daemon's own HTML pages: pure functions from an evaluation snapshot to HTML text.

:func:`overview_page` (every monitor, firing first), :func:`monitor_page`
(one monitor's reference and live histograms, divergences, rules and
history) and :func:`report_page` (``driftmon replay --html``: the same pages in
one self-contained file). Server-rendered HTML with inline SVG and one small
stylesheet: no script, nothing fetched from anywhere, so the pages work in a
cluster without egress. Every user-controlled string (stream, feature and
category names, rule names) is escaped here and nowhere else.
"""

from driftmon.pages.model import MonitorView, monitor_views, per_bin_contributions
from driftmon.pages.render import monitor_page, overview_page, report_page

__all__ = [
    "MonitorView",
    "monitor_page",
    "monitor_views",
    "overview_page",
    "per_bin_contributions",
    "report_page",
]
