"""Prometheus exposition: the only package that imports ``prometheus_client`` (docs/metrics.md).

:mod:`~driftmon.exporter.families` turns the daemon's :class:`Status` into
metric families; :mod:`~driftmon.exporter.scrape` writes them as the
``/metrics`` body.
"""

from driftmon.exporter.families import (
    DIVERGENCE_FAMILIES,
    EVALUATION_BUCKETS_S,
    VALUE_KINDS,
    DriftCollector,
    DurationHistogram,
    MonitorLayout,
    SeriesColumns,
    Status,
    exposition,
    families,
    new_registry,
)
from driftmon.exporter.scrape import Scrape, SharedScrapes, render_scrape, render_text

__all__ = [
    "DIVERGENCE_FAMILIES",
    "EVALUATION_BUCKETS_S",
    "VALUE_KINDS",
    "DriftCollector",
    "DurationHistogram",
    "MonitorLayout",
    "Scrape",
    "SeriesColumns",
    "SharedScrapes",
    "Status",
    "exposition",
    "families",
    "new_registry",
    "render_scrape",
    "render_text",
]
