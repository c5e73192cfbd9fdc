"""Multiple-testing corrections of p-values, many families in one call.

A family is a set of p-values tested together: in the engine, the monitors
one alert rule matches in one stream at one evaluation. Families are packed:
family ``f`` is ``p_value[members[family_offsets[f]:family_offsets[f + 1]]]``;
a NaN p-value is not part of its family (its monitor was not tested) and
gets NaN. With ``m`` the number of non-NaN p-values of a family and
``p_(1) <= ... <= p_(m)`` their order:

- Bonferroni: ``min(1, m p)``;
- Holm (step-down): ``p~_(k) = max_{j <= k} min(1, (m - j + 1) p_(j))``;
- Benjamini–Hochberg (false discovery rate, step-up):
  ``p~_(k) = min_{j >= k} min(1, m p_(j) / j)``.

Ties get equal adjusted values whatever order the sort leaves them in (the
running max and min make it so), so results do not depend on the sort.
``p~ < alpha`` then controls the family-wise error rate at ``alpha``
(Bonferroni, Holm) or the false discovery rate (BH).

``@njit(nogil=True, cache=True, error_model="numpy")``, no fastmath; imports
only numpy and numba.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NONE, BONFERRONI, HOLM, BH = 0, 1, 2, 3
"""Method codes of :func:`adjust_families`."""

METHODS = ("none", "bonferroni", "holm", "bh")
"""Method names, indexed by their codes."""


@njit(nogil=True, cache=True, error_model="numpy")
def adjust_families(
    p_value: np.ndarray,
    members: np.ndarray,
    family_offsets: np.ndarray,
    methods: np.ndarray,
    out: np.ndarray,
) -> None:
    """Adjusted p-values of every family into ``out`` (same indexing as ``p_value``).

    ``p_value``: float64[N] in ``[0, 1]`` or NaN; ``members``: int64 indices
    into ``p_value``, each at most once, family by family; ``family_offsets``:
    int64[F + 1] from 0 to ``len(members)``; ``methods``: int64[F] codes
    (:data:`NONE` copies the p-values). Entries of ``out`` that no family
    lists are left untouched.
    """
    largest = 1
    for f in range(family_offsets.shape[0] - 1):
        largest = max(largest, family_offsets[f + 1] - family_offsets[f])
    tested = np.empty(largest, dtype=np.int64)
    sorted_p = np.empty(largest)
    for f in range(family_offsets.shape[0] - 1):
        lo = family_offsets[f]
        hi = family_offsets[f + 1]
        method = methods[f]
        m = 0
        for k in range(lo, hi):
            i = members[k]
            if math.isnan(p_value[i]):
                out[i] = math.nan
            else:
                tested[m] = i
                sorted_p[m] = p_value[i]
                m += 1
        if m == 0:
            continue
        if method == NONE:
            for k in range(m):
                out[tested[k]] = sorted_p[k]
            continue
        if method == BONFERRONI:
            for k in range(m):
                out[tested[k]] = min(1.0, m * sorted_p[k])
            continue
        order = np.argsort(sorted_p[:m], kind="mergesort")
        if method == HOLM:
            running = 0.0
            for j in range(m):
                i = order[j]
                running = max(running, min(1.0, (m - j) * sorted_p[i]))
                out[tested[i]] = running
        else:  # BH
            running = 1.0
            for j in range(m - 1, -1, -1):
                i = order[j]
                running = min(running, min(1.0, m * sorted_p[i] / (j + 1)))
                out[tested[i]] = running


def warm_up() -> None:
    """Compile (or load from the cache) the kernel once, on a tiny input."""
    p_value = np.array([0.01, 0.04, math.nan, 0.03, 0.5])
    members = np.array([0, 1, 2, 3, 4, 0, 1], dtype=np.int64)
    offsets = np.array([0, 5, 7], dtype=np.int64)
    out = np.empty(5)
    for method in (NONE, BONFERRONI, HOLM, BH):
        adjust_families(p_value, members, offsets, np.array([method, HOLM], dtype=np.int64), out)
