"""Exact quantiles of a large float column without partitioning all of it.

``np.quantile`` partitions a copy of the whole column around every order
statistic it needs: about 30 ms per million values for the 11 edges of 10
quantile bins, most of the time a reference of 20 such columns took to
load. :class:`QuantileSearch` returns the same numbers, bit for bit (numpy's
own index, weight and interpolation helpers are applied to the same order
statistics; only the sign of a zero may differ, as numpy's own partition
leaves it to where 0.0 and -0.0 sat), from one bucket pass: a strided
sample chooses the buckets, every value is put in one, and only the few
buckets that hold a wanted order statistic are gathered and partitioned.
The buckets are 4096 of equal width over the sample's range when the sample
spreads over them (the cheapest kernel, no search), else 256 of roughly
equal mass at the sample's ranks (heavy tails, ties). The same pass then
gives the counts of the final quantile bins (:meth:`QuantileSearch.counts`)
without binning the column again.

A column may come as several arrays (the row groups of a Parquet file),
searched in place. Small columns, and numpy versions without those
helpers, take ``np.quantile`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from driftmon.binning import NumericBinner, edges_from_quantiles, quantile_levels
from driftmon.coded import FloatChunks
from driftmon.kernels import quantiles as kernels

MIN_VALUES: Final = 1 << 16
"""Columns shorter than this take ``np.quantile`` directly."""

_SAMPLE_VALUES: Final = 1 << 14
_BUCKETS: Final = 256
_UNIFORM_BUCKETS: Final = 4096
_UNIFORM_MAX_SHARE: Final = 1 / 128
"""Equal-width buckets serve when none holds more than this share of the sample."""


def _uniform_buckets(sample: np.ndarray) -> NumericBinner | None:
    """Equal-width buckets from the sample's least to its largest value, if the sample
    spreads over them well (the cheapest bucket kernel: no search)."""
    try:
        binner = NumericBinner.uniform(float(sample[0]), float(sample[-1]), _UNIFORM_BUCKETS)
    except ValueError:
        return None
    spread = np.bincount(binner.index(sample), minlength=binner.n_bins)
    return binner if spread.max() <= sample.size * _UNIFORM_MAX_SHARE else None


def _sample_buckets(sample: np.ndarray) -> NumericBinner | None:
    """Buckets of roughly equal mass at evenly spaced ranks of the sorted sample."""
    bounds = np.unique(sample[np.linspace(0, sample.size - 1, _BUCKETS + 1).astype(np.intp)])
    return NumericBinner.from_edges(bounds) if bounds.size >= 2 else None


def _numpy_helpers() -> tuple[Any, Any, Any, Any] | None:
    impl = getattr(np.lib, "_function_base_impl", None)
    try:
        method = impl._QuantileMethods["linear"]  # type: ignore[union-attr]
        return method, impl._get_indexes, impl._get_gamma, impl._lerp  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError):
        return None


def _numpy_quantiles(chunks: Sequence[np.ndarray], q: np.ndarray) -> np.ndarray:
    finite = np.concatenate([chunk[np.isfinite(chunk)] for chunk in chunks])
    if finite.size == 0:
        raise ValueError("no finite value to take quantiles of")
    return np.asarray(np.quantile(finite, q), dtype=np.float64)


class QuantileSearch:
    """One bucket pass over a float64 column (one array or several), for exact quantiles.

    NaN is left out; ±inf counts for :meth:`counts` but not for quantiles,
    which are those of the finite values.
    """

    def __init__(
        self, values: np.ndarray | Sequence[np.ndarray], *, min_values: int = MIN_VALUES
    ) -> None:
        self.chunks = [values] if isinstance(values, np.ndarray) else list(values)
        self.size = sum(chunk.size for chunk in self.chunks)
        self._helpers = _numpy_helpers()
        self._bucketed = False
        self._gathered: np.ndarray | None = None
        self._gathered_bucket: np.ndarray | None = None
        if self.size < min_values or self._helpers is None:
            return
        step = max(1, self.size // _SAMPLE_VALUES)
        sample = np.concatenate([chunk[::step] for chunk in self.chunks])
        sample = np.sort(sample[np.isfinite(sample)])
        if sample.size < 2:
            return
        binner = _uniform_buckets(sample) or _sample_buckets(sample)
        if binner is None:
            return
        self._binner = binner
        # Layout: 0 underflow (below the first bound, -inf included), 1..m the buckets,
        # m + 1 overflow (+inf included), m + 2 missing (NaN); ordered in value.
        self._buckets = [binner.index(chunk) for chunk in self.chunks]
        counts = np.zeros(binner.n_bins, dtype=np.int64)
        self._negative_infinite = self._positive_infinite = 0
        for chunk, bucket in zip(self.chunks, self._buckets, strict=True):
            negative, positive = kernels.count_buckets(chunk, bucket, counts)
            self._negative_infinite += negative
            self._positive_infinite += positive
        self._missing = int(counts[binner.missing])
        self._counts = counts[: binner.missing]
        self._ends = np.cumsum(self._counts)
        self._bucketed = True

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """``np.quantile`` of the finite values at ``q`` (linear); ValueError if none is finite."""
        if not self._bucketed:
            return _numpy_quantiles(self.chunks, q)
        assert self._helpers is not None
        n_finite = int(self._ends[-1]) - self._negative_infinite - self._positive_infinite
        if n_finite == 0:
            raise ValueError("no finite value to take quantiles of")
        method, get_indexes, get_gamma, lerp = self._helpers
        virtual = np.asanyarray(method["get_virtual_index"](n_finite, np.asarray(q, np.float64)))
        previous, following = get_indexes(self.chunks[0][:0], virtual, n_finite)
        gamma = get_gamma(virtual, previous, method)
        # Ranks among the sorted finite values; -1 is numpy's "the last one".
        wanted = np.unique(np.concatenate([previous, following]) % n_finite)
        positions = wanted + self._negative_infinite  # among the non-NaN values
        holding = np.searchsorted(self._ends, positions, side="right")
        gathered, gathered_bucket = self._gather(holding)
        # Sorted, the gathered values are the taken buckets one after the other.
        taken = np.zeros(self._counts.size, dtype=bool)
        taken[holding] = True
        taken_before = np.cumsum(np.where(taken, self._counts, 0)) - self._counts
        starts = self._ends - self._counts
        local = taken_before[holding] + (positions - starts[holding])
        ordered = gathered.copy()
        ordered.partition(local)
        statistics = dict(zip(wanted.tolist(), ordered[local].tolist(), strict=True))
        at = np.vectorize(lambda rank: statistics[int(rank) % n_finite], otypes=[np.float64])
        return np.asarray(lerp(at(previous), at(following), gamma), dtype=np.float64)

    def _gather(self, buckets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The values of ``buckets`` (and their bucket), in no particular order."""
        take = np.zeros(self._counts.size + 1, dtype=bool)  # never the missing bucket
        take[buckets] = True
        size = int(self._counts[take[:-1]].sum())
        gathered = np.empty(size, dtype=np.float64)
        gathered_bucket = np.empty(size, dtype=np.int32)
        at = 0
        for chunk, bucket in zip(self.chunks, self._buckets, strict=True):
            at = kernels.gather_taken(chunk, bucket, take, gathered, gathered_bucket, at)
        assert at == size
        self._gathered, self._gathered_bucket, self._taken = gathered, gathered_bucket, take
        return gathered, gathered_bucket

    def counts(self, binner: NumericBinner) -> np.ndarray | None:
        """``binner``'s counts of the column, from the bucket pass; ``None`` when it cannot tell.

        It can tell when every edge of ``binner`` lies in a bucket that
        :meth:`quantiles` gathered or in an empty one, as the edges it
        returned do: bin ``i`` holds the values ``v`` with ``e_i <= v <
        e_(i+1)``, so it is the number of values below ``e_(i+1)`` less the
        number below ``e_i``, each the mass of the whole buckets below the
        edge plus the gathered values of the edge's bucket below it.
        """
        if not self._bucketed or self._gathered is None or self._gathered_bucket is None:
            return None
        edges = np.asarray(binner.edges, dtype=np.float64)
        bucket_of_edge = self._binner.index(edges)
        below = np.empty(edges.size, dtype=np.int64)
        pairs = zip(edges.tolist(), bucket_of_edge.tolist(), strict=True)
        for i, (edge, bucket) in enumerate(pairs):
            whole = int(self._ends[bucket - 1]) if bucket else 0
            if self._taken[bucket]:
                in_bucket = self._gathered[self._gathered_bucket == bucket]
                below[i] = whole + int(np.count_nonzero(in_bucket < edge))
            elif self._counts[bucket] == 0:
                below[i] = whole
            else:
                return None
        counts = np.zeros(binner.n_bins, dtype=np.float64)
        counts[0] = below[0]
        counts[1 : binner.overflow] = np.diff(below)
        counts[binner.overflow] = int(self._ends[-1]) - below[-1]
        counts[binner.missing] = self._missing
        return counts


def finite_quantiles(
    values: np.ndarray, q: np.ndarray, *, min_values: int = MIN_VALUES
) -> np.ndarray:
    """``np.quantile(values[np.isfinite(values)], q)`` (linear), for a 1-D float64 ``values``.

    Raises ValueError, as numpy does, when no value is finite.
    """
    return QuantileSearch(values, min_values=min_values).quantiles(q)


def quantile_edges(values: np.ndarray, count: int) -> np.ndarray:
    """Edges at the quantiles ``0, 1/count, ..., 1`` of the finite values.

    values: 1-D array of real numbers (NaN and ±inf are ignored). count: the
    number of bins asked for (>= 1). Quantiles use ``np.quantile``'s default
    linear interpolation; repeated edges are removed, so heavily tied data gets
    fewer bins. The last edge is then moved from the largest value to the next
    float above it (:func:`cover_maximum`), so that every value the edges were
    learned from falls in a regular bin: none in underflow or overflow. Returns
    strictly increasing float64 edges. Raises ValueError when fewer than 2
    distinct quantiles remain (e.g. constant data) or the largest value is the
    largest float64.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind not in "iuf":
        raise ValueError(f"values must be a 1-D numeric numpy array, got {_describe(values)}")
    numbers = np.ascontiguousarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        # interpolating between values near ±1.8e308 can overflow: reported below
        try:
            quantiles = finite_quantiles(numbers, quantile_levels(int(count)))
        except ValueError:
            raise ValueError("values has no finite number to take quantiles of") from None
    return edges_from_quantiles(quantiles)


def _describe(obj: object) -> str:
    if isinstance(obj, np.ndarray):
        return f"an array of dtype {obj.dtype} and shape {obj.shape}"
    return f"a {type(obj).__name__}"


def finite_numbers(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """The real numbers of a column (ints and floats, not bools; a float64 array as is)."""
    if isinstance(values, FloatChunks):
        return values.array()
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values  # quantile_edges leaves NaN and ±inf out itself
    numbers: list[float] = []
    for value in values:
        if type(value) is float or type(value) is int:
            try:
                number = float(value)
            except OverflowError:
                continue  # an int beyond float range is infinite: not a finite number
            if math.isfinite(number):
                numbers.append(number)
    return np.asarray(numbers, dtype=np.float64)
