"""Exact quantiles of a large float column without partitioning all of it.

``np.quantile`` partitions a copy of the whole column around every order
statistic it needs: about 30 ms per million values for the 11 edges of 10
quantile bins, most of the time a reference of 20 such columns takes to
load. :func:`finite_quantiles` returns the same numbers, bit for bit (numpy's
own index, weight and interpolation helpers are applied to the same order
statistics), from one binning pass: a strided sample gives 256 buckets of
roughly equal mass, the binning kernel counts every value into them, and only
the few buckets that hold a wanted order statistic are gathered and
partitioned. Small columns, and numpy versions without those helpers, take
``np.quantile`` itself.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from driftmon.binning import NumericBinner

MIN_VALUES: Final = 1 << 16
"""Columns shorter than this take ``np.quantile`` directly."""

_SAMPLE_VALUES: Final = 1 << 14
_BUCKETS: Final = 256


def _numpy_helpers() -> tuple[Any, Any, Any, Any] | None:
    impl = getattr(np.lib, "_function_base_impl", None)
    try:
        method = impl._QuantileMethods["linear"]  # type: ignore[union-attr]
        return method, impl._get_indexes, impl._get_gamma, impl._lerp  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError):
        return None


def _numpy_quantiles(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError("no finite value to take quantiles of")
    return np.asarray(np.quantile(finite, q), dtype=np.float64)


def finite_quantiles(
    values: np.ndarray, q: np.ndarray, *, min_values: int = MIN_VALUES
) -> np.ndarray:
    """``np.quantile(values[np.isfinite(values)], q)`` (linear), for a 1-D float64 ``values``.

    Raises ValueError, as numpy does, when no value is finite.
    """
    helpers = _numpy_helpers()
    if values.size < min_values or helpers is None:
        return _numpy_quantiles(values, q)
    step = max(1, values.size // _SAMPLE_VALUES)
    sample = values[::step]
    sample = np.sort(sample[np.isfinite(sample)])
    if sample.size < 2:
        return _numpy_quantiles(values, q)
    bounds = np.unique(sample[np.linspace(0, sample.size - 1, _BUCKETS + 1).astype(np.intp)])
    if bounds.size < 2:
        return _numpy_quantiles(values, q)
    binner = NumericBinner.from_edges(bounds)
    # Layout: 0 underflow (below the first bound, -inf included), 1..m the buckets,
    # m + 1 overflow (+inf included), m + 2 missing (NaN). Buckets are ordered in value.
    bucket = binner.index(values)
    counts = np.bincount(bucket, minlength=binner.n_bins)[: binner.missing]
    negative_infinite = int(np.count_nonzero(values == -np.inf))
    positive_infinite = int(np.count_nonzero(values == np.inf))
    n_finite = int(counts.sum()) - negative_infinite - positive_infinite
    if n_finite == 0:
        raise ValueError("no finite value to take quantiles of")
    method, get_indexes, get_gamma, lerp = helpers
    virtual = np.asanyarray(method["get_virtual_index"](n_finite, np.asarray(q, np.float64)))
    previous, following = get_indexes(values[:0], virtual, n_finite)
    gamma = get_gamma(virtual, previous, method)
    # Ranks among the finite values, sorted; -1 is numpy's "the last one".
    wanted = np.unique(np.concatenate([previous, following]) % n_finite)
    positions = wanted + negative_infinite  # among every non-NaN value, infinities included
    ends = np.cumsum(counts)
    holding = np.searchsorted(ends, positions, side="right")
    take = np.zeros(counts.size + 1, dtype=bool)  # the missing bucket is never taken
    take[holding] = True
    taken = take[bucket]
    gathered = values[taken]
    # Sorted, the gathered values are the taken buckets one after the other.
    taken_before = np.cumsum(np.where(take[: counts.size], counts, 0)) - counts
    starts = ends - counts
    local = taken_before[holding] + (positions - starts[holding])
    gathered.partition(local)
    statistics = dict(zip(wanted.tolist(), gathered[local].tolist(), strict=True))
    at = np.vectorize(lambda rank: statistics[int(rank) % n_finite], otypes=[np.float64])
    return np.asarray(lerp(at(previous), at(following), gamma), dtype=np.float64)
