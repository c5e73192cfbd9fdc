"""Kernels of the exact quantile search (``driftmon.quantiles``).

The search puts every value of a column in one of a few thousand buckets with
the binning kernels, then needs two more passes over the bucket indices:
their histogram (and the number of infinities), and the values of the few
buckets that hold a wanted order statistic. numpy does each with a temporary
as large as the column (``bincount`` widens int32 indices to intp first; a
gather by ``take[index]`` builds a boolean mask); these loops read the
column once each and write only what they return. Nothing here validates
its arguments: only ``driftmon.quantiles`` calls it.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def count_buckets(values, index, counts):
    """``counts[i] +=`` the number of values in bucket ``i``; the numbers of -inf and +inf.

    values: float64[m]; index: int32[m], each value's bucket (-inf is in
    bucket 0, +inf in bucket ``counts.size - 3``, the overflow); counts: int64.
    """
    overflow = counts.size - 3
    negative = 0
    positive = 0
    for j in range(index.size):
        bucket = index[j]
        counts[bucket] += 1
        if bucket == 0 and values[j] == -np.inf:
            negative += 1
        elif bucket == overflow and values[j] == np.inf:
            positive += 1
    return negative, positive


@njit(nogil=True, cache=True)
def gather_taken(values, index, take, out_values, out_index, start):
    """Copy the values whose bucket is taken to ``out_*`` from ``start``; the next free slot.

    values: float64[m]; index: int32[m], each value's bucket; take:
    bool[buckets]; out_values (float64) and out_index (int32) have room for
    every taken value after ``start``. Order is kept.
    """
    at = start
    for j in range(values.size):
        bucket = index[j]
        if take[bucket]:
            out_values[at] = values[j]
            out_index[at] = bucket
            at += 1
    return at


def warm_up() -> None:
    """Compile (or load from numba's cache) both kernels with the types the search passes."""
    index = np.array([0, 1], np.int32)
    take = np.array([False, True])
    for writeable in (False, True):  # Arrow's buffers are read-only, numpy's own are not
        values = np.array([0.5, 1.5])
        values.flags.writeable = writeable
        count_buckets(values, index, np.zeros(4, np.int64))
        gather_taken(values, index, take, np.empty(1), np.empty(1, np.int32), 0)
