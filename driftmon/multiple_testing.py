"""Multiple-testing corrections for p-value gated alerts (alert rule ``p_value_correction``).

A stream of 20 features checked at ``max_p_value: 0.01`` with no drift at
all has some feature below 0.01 in 12–20 % of its windows: each check is
right 99 % of the time, but 20 checks together are not. An alert rule's
``p_value_correction`` adjusts the p-values of the monitors the rule matches
in one stream at one evaluation (a *family*) before ``max_p_value`` judges
them:

- ``none``: the raw p-values (the default, and what configs without the key get);
- ``bonferroni``: ``min(1, m p)``; family-wise error rate ≤ ``max_p_value``;
- ``holm``: Holm's step-down; the same guarantee as Bonferroni and never
  less power (the recommended start for new configs);
- ``bh``: Benjamini–Hochberg; bounds the expected share of false alarms
  among the monitors that alert (false discovery rate), more power when many
  features drift at once, no family-wise guarantee.

The formulas are in :mod:`driftmon.kernels.multiple_testing`. A monitor
without a p-value (no reference, empty window, or held by ``min_samples``)
is not part of its family at that evaluation.

The stream-level p-value (:func:`combined_p_values`, the
``driftmon_stream_drift_p_value`` series) is the smallest Holm-adjusted
p-value of a stream's monitors, which is ``min(1, m · min p)`` (Bonferroni's
combination): below ``alpha`` exactly when a Holm-corrected rule at
``max_p_value: alpha`` would flag at least one of the stream's features, so
"is this model's input drifting?" has family-wise error ≤ ``alpha`` whatever
the dependence between features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from driftmon.kernels import multiple_testing as _kernels

CORRECTIONS: tuple[str, ...] = _kernels.METHODS
"""Values of ``p_value_correction``: ``none``, ``bonferroni``, ``holm``, ``bh``."""


def _method_code(method: object) -> int:
    if not isinstance(method, str) or method not in CORRECTIONS:
        raise ValueError(
            f"method: must be one of {', '.join(CORRECTIONS)}, got {method!r}"
        )
    return CORRECTIONS.index(method)


def _p_values(values: object, name: str) -> np.ndarray:
    """``values`` as C-contiguous float64 in [0, 1] or NaN; ``ValueError`` naming ``name``."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name}: must be real numbers, got dtype {array.dtype}")
    p = np.ascontiguousarray(array, dtype=np.float64)
    bad = (p < 0.0) | (p > 1.0)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: p-values must be in [0, 1] or NaN, got {float(p[where])!r} at {where}"
        )
    return p


def adjust_p_values(p_values: object, method: str) -> np.ndarray:
    """Adjusted p-values: one family for 1-D input, one family per row for 2-D.

    ``p_values``: p-values in ``[0, 1]``; NaN marks an untested entry (left
    out of its family, NaN in the result). ``method``: one of
    :data:`CORRECTIONS`. Returns float64 of the input's shape. Raises
    ``ValueError`` naming the argument for an unknown method, a non-numeric
    dtype, a p-value outside ``[0, 1]`` or more than 2 dimensions.
    """
    code = _method_code(method)
    p = _p_values(p_values, "p_values")
    if p.ndim not in (1, 2):
        raise ValueError(f"p_values: must be 1-D or 2-D, got shape {p.shape}")
    rows = p.reshape(-1, p.shape[-1]) if p.size else p.reshape(0, 0)
    n_families, size = rows.shape
    flat = rows.reshape(-1)
    members = np.arange(flat.shape[0], dtype=np.int64)
    offsets = np.arange(n_families + 1, dtype=np.int64) * size
    out = np.empty_like(flat)
    _kernels.adjust_families(
        flat, members, offsets, np.full(n_families, code, dtype=np.int64), out
    )
    return out.reshape(p.shape)


def combined_p_values(p_values: object, offsets: object) -> np.ndarray:
    """Per segment, ``min(1, m · min p)`` over its ``m`` non-NaN p-values (NaN when ``m = 0``).

    ``p_values``: float64[N]; ``offsets``: int[S + 1], non-decreasing from 0
    to N (segment ``s`` is ``p_values[offsets[s]:offsets[s+1]]``). The
    smallest Holm- (equally Bonferroni-) adjusted p-value of each segment.
    """
    p = _p_values(p_values, "p_values")
    bounds = np.asarray(offsets, dtype=np.int64)
    if p.ndim != 1 or bounds.ndim != 1 or bounds.size < 1 or bounds[0] != 0 or bounds[-1] != p.size:
        raise ValueError(
            f"offsets: need 0 ... {p.size} (len(p_values)), non-decreasing, got {bounds.tolist()}"
        )
    if np.any(np.diff(bounds) < 0):
        raise ValueError("offsets: must be non-decreasing")
    n_segments = bounds.size - 1
    result = np.full(n_segments, np.nan)
    nonempty = np.flatnonzero(np.diff(bounds) > 0)
    if nonempty.size == 0:
        return result
    starts = bounds[nonempty]
    tested = np.add.reduceat((~np.isnan(p)).astype(np.int64), starts)
    # fmin skips NaN; a segment of NaN only stays NaN.
    smallest = np.fmin.reduceat(p, starts)
    with np.errstate(invalid="ignore"):
        combined = np.minimum(1.0, tested * smallest)
    result[nonempty] = np.where(tested > 0, combined, np.nan)
    return result


class PValueFamilies:
    """Packed families of (rule, monitor) pairs, corrected in one kernel call per evaluation.

    ``families``: for each family, the pair indices it holds (each pair in at
    most one family); ``methods``: one :data:`CORRECTIONS` name per family;
    ``n_pairs``: the length of the p-value arrays :meth:`adjust` takes.
    Built once per config; pairs in no family keep their raw p-value.
    """

    def __init__(
        self, families: Sequence[Sequence[int]], methods: Sequence[str], n_pairs: int
    ) -> None:
        if len(families) != len(methods):
            raise ValueError(
                f"methods: need one per family, got {len(methods)} for {len(families)}"
            )
        self.n_pairs = int(n_pairs)
        sizes = [len(members) for members in families]
        self.members = (
            np.concatenate([np.asarray(f, dtype=np.int64) for f in families])
            if families
            else np.zeros(0, dtype=np.int64)
        )
        if self.members.size and (
            self.members.min() < 0
            or self.members.max() >= self.n_pairs
            or np.unique(self.members).size != self.members.size
        ):
            raise ValueError(f"families: pair indices must be distinct and in [0, {n_pairs})")
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.methods = np.array([_method_code(m) for m in methods], dtype=np.int64)

    def __len__(self) -> int:
        """The number of families."""
        return int(self.methods.shape[0])

    def adjust(self, p_value: np.ndarray) -> np.ndarray:
        """float64[n_pairs]: each family's members adjusted, every other pair as given.

        ``p_value``: float64[n_pairs], NaN for a pair that is not tested at
        this evaluation (it is left out of its family and stays NaN).
        """
        p = _p_values(p_value, "p_value")
        if p.shape != (self.n_pairs,):
            raise ValueError(f"p_value: need shape ({self.n_pairs},), got {p.shape}")
        out = p.copy()
        if len(self):
            _kernels.adjust_families(p, self.members, self.offsets, self.methods, out)
        return out
