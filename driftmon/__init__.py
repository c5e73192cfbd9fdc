"""driftmon: a streaming data-drift monitor that speaks Prometheus.

The public Python API is small (docs/divergences.md):

- :func:`driftmon.divergences` — every docs/divergences.md divergence for count arrays;
- :func:`driftmon.wasserstein` — the normalised W1 of docs/divergences.md for binned numeric data.

Both are imported on first use, so ``import driftmon.client`` in a model
service loads neither numpy's kernels nor numba.
"""

from __future__ import annotations

# Not ``typing.TYPE_CHECKING``: importing typing costs ~13 ms at every start, while
# ``python -m driftmon`` has not yet installed its signal handlers (driftmon.lifecycle).
TYPE_CHECKING = False

__version__ = "0.1.0"

__all__ = ["__version__", "divergences", "wasserstein"]

if TYPE_CHECKING:
    from typing import Any

    from driftmon.divergence import divergences, wasserstein


def __getattr__(name: str) -> Any:
    if name in ("divergences", "wasserstein"):
        from driftmon import divergence

        return getattr(divergence, name)
    raise AttributeError(f"module 'driftmon' has no attribute {name!r}")
