"""What a scrape shows about shared mode (read by the exporter; no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterStatus:
    """One replica's cluster picture at one instant.

    ``flush_buckets`` are cumulative ``(le, count)`` pairs ending with ``+Inf``.
    """

    leader: bool
    epoch: int
    store_reachable: bool
    flush_buckets: tuple[tuple[str, float], ...]
    flush_duration_sum_s: float
    flush_failures: int
    deduplicated_requests: int
    late_rows: int
    clock_offset_s: float
