"""driftmon: a streaming data-drift monitor that speaks Prometheus.

The public Python API is small (DESIGN.md §9):

- :func:`driftmon.divergences` — every §3 divergence for count arrays;
- :func:`driftmon.wasserstein` — §3's normalised W1 for binned numeric data.
"""

from __future__ import annotations

from driftmon.divergence import divergences, wasserstein

__version__ = "0.1.0"

__all__ = ["__version__", "divergences", "wasserstein"]
