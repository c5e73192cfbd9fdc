"""The divergence stage: checked wrappers around :mod:`driftmon.kernels.divergence`.

- :func:`divergences` and :func:`wasserstein` are the public Python API of
  docs/divergences.md: any array-like counts, shape ``(K,)`` or ``(M, K)``.
- :class:`PackedDivergence` and :class:`PackedWasserstein` are what the engine
  uses: every monitor at once over its packed bin arrays, the reference side
  computed once and cached.

Everything is validated here, before any JIT code runs; bad input raises
``ValueError`` naming the argument and saying what to change. The numerics
(smoothing, zero terms, +Inf, NaN for empty sides, the G-test) are documented
in docs/divergences.md and in the kernel module's docstring.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np

from driftmon.kernels import divergence as _kernels

METRICS: tuple[str, ...] = _kernels.ROWS
"""Names of the rows of :meth:`PackedDivergence.evaluate` and keys of :func:`divergences`."""

PARALLEL_MIN_BINS = 4096
"""From this many bins in a pass on, :class:`PackedDivergence` spreads monitors over threads."""

_NUMERIC_KINDS = "iuf"


def log_scale_of(base: object, name: str = "base") -> float:
    """Multiplier from nats to the unit of ``base``: 1.0 for ``"e"``, 1/ln 2 for ``"2"``/``2``.

    Raises ``ValueError`` naming ``name`` for anything else (``2.0``, ``True``,
    ``"10"``, ...).
    """
    if isinstance(base, str):
        if base == "e":
            return 1.0
        if base == "2":
            return 1.0 / math.log(2.0)
    elif not isinstance(base, bool | np.bool_):
        try:
            integer = operator.index(base)  # type: ignore[arg-type]
        except TypeError:
            integer = None
        if integer == 2:
            return 1.0 / math.log(2.0)
    raise ValueError(f'{name}: must be "e" (nats) or "2" (bits), got {base!r}')


def _check_smoothing_value(smoothing: object) -> float:
    """``smoothing`` as a float, or ``ValueError`` if it is not a finite real >= 0."""
    if isinstance(smoothing, bool | np.bool_) or not isinstance(smoothing, numbers.Real):
        raise ValueError(
            f"smoothing: must be a finite real number >= 0 (a pseudo-count), "
            f"got {smoothing!r} of type {type(smoothing).__name__}"
        )
    value = float(smoothing)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(
            f"smoothing: must be a finite real number >= 0 (a pseudo-count), got {value!r}"
        )
    return value


def _as_counts(
    values: object, name: str, *, ndims: tuple[int, ...] = (1, 2), min_bins: int = 1
) -> np.ndarray:
    """``values`` as a C-contiguous float64 array of counts, or ``ValueError`` naming ``name``.

    Accepts any array-like of real numbers (ints, floats, lists, numpy arrays);
    rejects bool, complex, string and object dtypes, ragged lists, other
    dimensionalities than ``ndims``, and NaN, infinite or negative counts.
    """
    counts = _as_count_array(values, name, ndims=ndims, min_bins=min_bins)
    finite = np.isfinite(counts)
    if not finite.all():
        where = np.unravel_index(int(np.argmin(finite)), counts.shape)
        raise ValueError(_bad_count_message(name, float(counts[where]), where))
    negative = counts < 0.0
    if negative.any():
        where = np.unravel_index(int(np.argmax(negative)), counts.shape)
        raise ValueError(_bad_count_message(name, float(counts[where]), where))
    return counts


def _bad_count_message(name: str, value: float, where: tuple[object, ...]) -> str:
    """The error for one count that is NaN, infinite or negative, with its index."""
    index = tuple(int(i) for i in where)  # type: ignore[call-overload]
    if not math.isfinite(value):
        return f"{name}: counts must be finite, got {value!r} at index {index}"
    return f"{name}: counts must be >= 0, got {value!r} at index {index}"


def _as_count_array(
    values: object, name: str, *, ndims: tuple[int, ...] = (1, 2), min_bins: int = 1
) -> np.ndarray:
    """:func:`_as_counts` without the scan of the values (dtype, shape and K only).

    Costs nothing for a C-contiguous float64 array; anything else is
    converted once. The values themselves are then checked by the kernel
    that reads them (:func:`divergences`).
    """
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name}: cannot be read as an array of counts ({error}); "
            "pass a rectangular list or array of numbers"
        ) from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(
            f"{name}: counts must be real numbers (int or float), got dtype {array.dtype}; "
            "convert to a numeric array first"
        )
    if array.ndim not in ndims:
        allowed = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name}: must be {allowed}, got {array.ndim}-D shape {array.shape}")
    if array.shape[-1] < min_bins:
        raise ValueError(f"{name}: needs at least one bin (K >= 1), got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float64)


def _check_totals(reference: np.ndarray, live: np.ndarray, smoothing: float = 0.0) -> None:
    """Reject counts whose row totals overflow float64.

    Each side's total plus ``K * smoothing``, and the two raw totals together
    (the G-test's N), must be finite; ``reference`` is named when it alone is
    too large, ``live`` otherwise.
    """
    n_bins = reference.shape[-1]
    with np.errstate(over="ignore"):
        reference_totals = reference.sum(axis=-1)
        live_totals = live.sum(axis=-1)
        reference_ok = np.isfinite(reference_totals + n_bins * smoothing)
        live_ok = np.isfinite(live_totals + n_bins * smoothing) & np.isfinite(
            reference_totals + live_totals
        )
    for name, ok in (("reference", reference_ok), ("live", live_ok)):
        if not np.all(ok):
            raise ValueError(
                f"{name}: counts (plus smoothing) too large, their total overflows float64; "
                "rescale them"
            )


def _check_same_shape(reference: np.ndarray, live: np.ndarray) -> None:
    if reference.shape != live.shape:
        raise ValueError(
            f"live: shape {live.shape} does not match reference shape {reference.shape}; "
            "both need one count per bin, in the same bin order"
        )


def _packed_offsets(n_monitors: int, n_bins: int) -> np.ndarray:
    return np.arange(n_monitors + 1, dtype=np.int64) * n_bins


def divergences(
    reference: object, live: object, *, smoothing: float = 0.5, base: str | int = "e"
) -> dict[str, np.ndarray]:
    """Every docs/divergences.md divergence of live counts against reference counts.

    ``reference`` and ``live``: counts (any array-like of non-negative finite
    real numbers) of shape ``(K,)`` for one monitor or ``(M, K)`` for M
    monitors of K bins each. ``smoothing``: the pseudo-count ``a >= 0`` added
    to every bin of both sides. ``base``: ``"e"`` for nats or ``"2"`` (or
    ``2``) for bits; it applies to ``kl``, ``kl_reverse``, ``js``, the
    entropies and ``cross_entropy``; ``psi`` is in nats and ``hellinger`` and
    ``p_value`` have no unit.

    Returns ``{metric: array}`` for every name in :data:`METRICS`, each of
    shape ``()`` for 1-D input or ``(M,)``. A row with R = 0 or L = 0 has no
    divergence and gets NaN in every metric; nothing else gives NaN. With
    ``smoothing=0``, a bin empty on one side only makes the KL towards it
    +Inf (never clipped).

    Raises ``ValueError`` naming the argument for negative, NaN or infinite
    counts (and the index of the first one, in row order, the reference's
    row before the live one), totals that overflow float64, non-numeric
    dtypes (bool, complex, strings, objects), shapes that differ or are not
    1-D/2-D, K < 1, a negative or non-finite smoothing, or an unknown base.
    Dtype, shape, smoothing and base are checked before any JIT code runs;
    the counts themselves in the same kernel pass that evaluates them (one
    read of each array), and nothing is returned when one is bad.
    """
    reference_counts = _as_count_array(reference, "reference")
    live_counts = _as_count_array(live, "live")
    _check_same_shape(reference_counts, live_counts)
    pseudo_count = _check_smoothing_value(smoothing)
    log_scale = log_scale_of(base)

    single = reference_counts.ndim == 1
    n_bins = reference_counts.shape[-1]
    reference_2d = reference_counts.reshape(-1, n_bins)
    live_2d = live_counts.reshape(-1, n_bins)
    n_monitors = reference_2d.shape[0]
    out = np.empty((len(METRICS), n_monitors))
    error = np.zeros(4, dtype=np.int64)
    kernel = (
        _kernels.one_shot_pass_parallel
        if reference_2d.size >= PARALLEL_MIN_BINS and n_monitors > 1
        else _kernels.one_shot_pass
    )
    kernel(reference_2d, live_2d, pseudo_count, log_scale, out, error)
    if error[_kernels.ERR_KIND] != _kernels.NO_ERROR:
        raise ValueError(_one_shot_error(error, reference_counts, live_counts))
    if single:
        return {name: out[row].reshape(()) for row, name in enumerate(METRICS)}
    return {name: out[row] for row, name in enumerate(METRICS)}


def _one_shot_error(error: np.ndarray, reference: np.ndarray, live: np.ndarray) -> str:
    """The message of a bad count (or row total) that :func:`divergences`' kernel found."""
    name, counts = ("reference", reference) if error[_kernels.ERR_SIDE] == 0 else ("live", live)
    row, column = int(error[_kernels.ERR_ROW]), int(error[_kernels.ERR_COLUMN])
    if error[_kernels.ERR_KIND] == _kernels.TOTAL_OVERFLOW:
        return (
            f"{name}: counts (plus smoothing) too large, their total overflows float64"
            f"{'' if counts.ndim == 1 else f' in row {row}'}; rescale them"
        )
    where = (column,) if counts.ndim == 1 else (row, column)
    return _bad_count_message(name, float(counts[where]), where)


def _run_pass(
    live_counts: np.ndarray,
    bin_offsets: np.ndarray,
    smoothing: np.ndarray,
    reference_bins: np.ndarray,
    reference_monitors: np.ndarray,
    log_scale: float,
    out: np.ndarray,
) -> None:
    kernel = (
        _kernels.divergence_pass_parallel
        if live_counts.shape[0] >= PARALLEL_MIN_BINS and bin_offsets.shape[0] > 2
        else _kernels.divergence_pass
    )
    kernel(live_counts, bin_offsets, smoothing, reference_bins, reference_monitors, log_scale, out)


class PackedDivergence:
    """Engine use: all monitors at once, reference side cached.

    ``reference_counts``: float64-compatible counts of length ``B`` (every
    monitor's bins concatenated); ``bin_offsets``: ``M + 1`` strictly
    increasing integers from 0 to ``B`` (monitor ``m`` owns bins
    ``bin_offsets[m]:bin_offsets[m+1]``, so K may differ per monitor);
    ``smoothing``: ``M`` pseudo-counts >= 0 (or one for all); ``base``: as in
    :func:`divergences`. Everything is validated here; the reference side
    (``ln p`` per bin; total, entropy and normalising inverse per monitor) is
    computed once. Build a new instance when the reference changes.
    """

    def __init__(
        self,
        reference_counts: np.ndarray,
        bin_offsets: np.ndarray,
        smoothing: np.ndarray,
        base: str | int = "e",
    ) -> None:
        counts = _as_counts(reference_counts, "reference_counts", ndims=(1,), min_bins=0)
        offsets = _check_offsets(bin_offsets, counts.shape[0])
        n_monitors = offsets.shape[0] - 1
        smoothing_array = _check_smoothing_array(smoothing, n_monitors)
        self.log_scale = log_scale_of(base)
        bins_per_monitor = np.diff(offsets)
        with np.errstate(over="ignore"):
            totals = np.add.reduceat(counts, offsets[:-1]) if n_monitors else np.zeros(0)
            with_smoothing = totals + bins_per_monitor * smoothing_array
        for side in (totals, with_smoothing):
            if not np.all(np.isfinite(side)):
                raise ValueError(
                    "reference_counts: a monitor's total (plus smoothing) overflows float64; "
                    "rescale the counts"
                )
        self.n_bins = int(counts.shape[0])
        self.n_monitors = int(n_monitors)
        self.bin_offsets = offsets
        self.smoothing = smoothing_array
        self.reference_bins, self.reference_monitors = _kernels.prepare_reference(
            counts, offsets, smoothing_array
        )

    def evaluate(self, live_counts: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float64[9, M] in METRICS order.

        ``live_counts``: float64 C-contiguous array of length ``B``, trusted to
        hold finite non-negative counts (only its type, dtype and length are
        checked). ``out``: optional float64 C-contiguous ``[9, M]`` array to
        fill (avoids an allocation per evaluation). Monitors with R = 0 or
        L = 0 get NaN in every row.
        """
        if (
            not isinstance(live_counts, np.ndarray)
            or live_counts.dtype != np.float64
            or live_counts.shape != (self.n_bins,)
            or not live_counts.flags.c_contiguous
        ):
            raise ValueError(
                f"live_counts: need a C-contiguous float64 array of shape ({self.n_bins},), got "
                f"{type(live_counts).__name__} {getattr(live_counts, 'dtype', '')} "
                f"{getattr(live_counts, 'shape', '')}"
            )
        if out is None:
            out = np.empty((len(METRICS), self.n_monitors))
        elif (
            not isinstance(out, np.ndarray)
            or out.dtype != np.float64
            or out.shape != (len(METRICS), self.n_monitors)
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise ValueError(
                f"out: need a writeable C-contiguous float64 array of shape "
                f"({len(METRICS)}, {self.n_monitors})"
            )
        _run_pass(
            live_counts, self.bin_offsets, self.smoothing, self.reference_bins,
            self.reference_monitors, self.log_scale, out,
        )
        return out


def _check_offsets(bin_offsets: object, n_bins: int) -> np.ndarray:
    """``bin_offsets`` as int64[M+1]: integers, 0 first, ``n_bins`` last, strictly increasing."""
    offsets = np.asarray(bin_offsets)
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(
            f"bin_offsets: need a 1-D integer array of M + 1 offsets, got dtype {offsets.dtype} "
            f"shape {offsets.shape}"
        )
    if offsets[0] != 0 or offsets[-1] != n_bins:
        raise ValueError(
            f"bin_offsets: must start at 0 and end at len(reference_counts) = {n_bins}, "
            f"got {int(offsets[0])} ... {int(offsets[-1])}"
        )
    if np.any(np.diff(offsets) <= 0):
        raise ValueError(
            "bin_offsets: must be strictly increasing (every monitor needs at least one bin)"
        )
    return np.ascontiguousarray(offsets, dtype=np.int64)


def _check_smoothing_array(smoothing: object, n_monitors: int) -> np.ndarray:
    """``smoothing`` as float64[M] of finite values >= 0 (a scalar is broadcast)."""
    array = np.asarray(smoothing)
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"smoothing: must be real numbers, got dtype {array.dtype}")
    if array.ndim == 0:
        array = np.full(n_monitors, float(array))
    if array.shape != (n_monitors,):
        raise ValueError(
            f"smoothing: need one pseudo-count per monitor, shape ({n_monitors},), "
            f"got {array.shape}"
        )
    values = np.ascontiguousarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0.0):
        raise ValueError("smoothing: every pseudo-count must be finite and >= 0")
    return values


def _check_edges(edges: object, name: str) -> np.ndarray:
    """``edges`` as float64[n+1], finite, strictly increasing, at least two of them."""
    try:
        array = np.asarray(edges)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}: cannot be read as an array of bin edges ({error})") from None
    if array.dtype.kind not in _NUMERIC_KINDS or array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(
            f"{name}: need a 1-D array of at least 2 real bin edges, got dtype {array.dtype} "
            f"shape {array.shape}"
        )
    values = np.ascontiguousarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: bin edges must be finite")
    if np.any(np.diff(values) <= 0.0):
        raise ValueError(f"{name}: bin edges must be strictly increasing")
    return values


def wasserstein(reference: object, live: object, edges: object) -> np.ndarray:
    """docs/divergences.md ``wasserstein``: W1 of binned numeric data over the reference's std.

    ``reference``, ``live``: counts over the value bins ``[underflow, regular
    bins..., overflow]`` (``len(edges) + 1`` of them; leave ``missing`` and
    ``invalid`` out). ``edges``: the regular bins' edges, finite, strictly
    increasing, at least two. Underflow mass sits at ``edges[0]``, overflow
    mass at ``edges[-1]``, each regular bin's at its centre. Results are in
    reference standard deviations (0.1 = a tenth of one); NaN where either
    side's total is 0 or the reference's standard deviation is 0.

    Three layouts, all evaluated in one kernel call:

    - shared edges (1-D ``edges``): counts of shape ``(K,)`` (result shape
      ``()``) or ``(M, K)`` (result ``(M,)``), ``K = len(edges) + 1``;
    - one edge array per monitor, all of the same length (2-D ``edges`` of
      shape ``(M, n + 1)``): counts ``(M, n + 2)``; result ``(M,)``;
    - one edge array per monitor, lengths free (a list of ``M`` 1-D edge
      arrays): counts packed like the engine's, one 1-D array holding each
      monitor's ``len(edges[j]) + 1`` value bins in turn, or a list of ``M``
      1-D count arrays; result ``(M,)``. A 20-feature check is one call.

    Raises ``ValueError`` naming the argument for bad counts (as
    :func:`divergences`), mismatched shapes, counts that do not fit the
    edges, or bad edges (``edges[j]`` for the per-monitor layouts).
    """
    per_monitor = _per_monitor_edges(edges)
    if per_monitor is None:
        reference_counts = _as_counts(reference, "reference")
        live_counts = _as_counts(live, "live")
        _check_same_shape(reference_counts, live_counts)
        edge_values = _check_edges(edges, "edges")
        n_bins = reference_counts.shape[-1]
        if n_bins != edge_values.shape[0] + 1:
            raise ValueError(
                f"reference: {n_bins} value bins but {edge_values.shape[0]} edges; pass "
                f"len(edges) + 1 = {edge_values.shape[0] + 1} counts per row (underflow, "
                "regular bins, overflow; no missing/invalid)"
            )
        single = reference_counts.ndim == 1
        n_monitors = 1 if single else reference_counts.shape[0]
        flat_edges = np.tile(edge_values, n_monitors)
        edge_offsets = np.arange(n_monitors + 1, dtype=np.int64) * edge_values.shape[0]
    else:
        flat_edges, edge_offsets = per_monitor
        single = False
        lengths = np.diff(edge_offsets) + 1
        reference_counts = _packed_counts(reference, "reference", lengths)
        live_counts = _packed_counts(live, "live", lengths)
        _check_same_shape(reference_counts, live_counts)
        n_monitors = lengths.shape[0]
    _check_totals(reference_counts, live_counts)
    reference_flat = reference_counts.reshape(-1)
    starts = edge_offsets[:-1] + np.arange(n_monitors, dtype=np.int64)
    gaps, reference_cdf, reference_monitors = _kernels.prepare_wasserstein_reference(
        reference_flat, starts, edge_offsets, flat_edges
    )
    out = np.empty(n_monitors)
    _kernels.wasserstein_pass(
        live_counts.reshape(-1), starts, edge_offsets, gaps, reference_cdf, reference_monitors,
        out,
    )
    return out.reshape(()) if single else out


def _per_monitor_edges(edges: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(flat edges, int64 edge offsets) when ``edges`` holds one edge array per monitor.

    ``None`` for one shared edge array (1-D). Each monitor's edges are
    checked as :func:`_check_edges` does, in one vectorised pass, and named
    ``edges[j]``.
    """
    if isinstance(edges, np.ndarray):
        if edges.ndim != 2:
            return None
        arrays: list[np.ndarray] = list(edges)
    elif (
        isinstance(edges, list | tuple)
        and edges
        and all(isinstance(e, list | tuple | np.ndarray) for e in edges)
    ):
        arrays = [np.asarray(e) for e in edges]
    else:
        return None
    for j, array in enumerate(arrays):
        if array.dtype.kind not in _NUMERIC_KINDS or array.ndim != 1 or array.shape[0] < 2:
            raise ValueError(
                f"edges[{j}]: need a 1-D array of at least 2 real bin edges, got dtype "
                f"{array.dtype} shape {array.shape}"
            )
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.ascontiguousarray(np.concatenate(arrays), dtype=np.float64)
    not_finite = np.flatnonzero(~np.isfinite(flat))
    if not_finite.size:
        j = int(np.searchsorted(offsets, not_finite[0], side="right")) - 1
        raise ValueError(f"edges[{j}]: bin edges must be finite")
    not_increasing = flat[1:] <= flat[:-1]
    not_increasing[offsets[1:-1] - 1] = False  # one monitor's last edge, the next one's first
    if not_increasing.any():
        j = int(np.searchsorted(offsets, int(np.argmax(not_increasing)), side="right")) - 1
        raise ValueError(f"edges[{j}]: bin edges must be strictly increasing")
    return flat, offsets


def _packed_counts(values: object, name: str, bins_per_monitor: np.ndarray) -> np.ndarray:
    """Counts for per-monitor edges: ``(M, K)`` rows, packed 1-D, or a list of 1-D arrays.

    Returned as a C-contiguous float64 array whose flattening is the packed
    layout (each monitor's value bins in turn), checked as :func:`_as_counts`
    does; ``ValueError`` naming ``name`` when it does not fit the edges.
    """
    n_monitors = bins_per_monitor.shape[0]
    total = int(bins_per_monitor.sum())
    if (
        isinstance(values, list | tuple)
        and len(values) == n_monitors
        and all(isinstance(v, list | tuple | np.ndarray) for v in values)
        and [len(v) for v in values] == bins_per_monitor.tolist()
    ):
        # One count array per monitor: their concatenation is the packed layout.
        values = np.concatenate([np.asarray(v) for v in values])
    counts = _as_counts(values, name)
    same_k = bool(np.all(bins_per_monitor == bins_per_monitor[0]))
    if same_k and counts.shape == (n_monitors, int(bins_per_monitor[0])):
        return counts
    if counts.shape == (total,):
        return counts
    raise ValueError(
        f"{name}: shape {counts.shape} does not fit {n_monitors} edge arrays; pass "
        f"len(edges[j]) + 1 value bins per monitor: packed, {total} counts in all"
        + (
            f", or shape ({n_monitors}, {int(bins_per_monitor[0])})"
            if same_k
            else ", or a list of one count array per monitor"
        )
    )


class PackedWasserstein:
    """Engine use: the numeric monitors of a packed layout.

    reference_counts / live_counts are the FULL packed arrays (length B, same
    as PackedDivergence); starts[j] is the index in B of numeric monitor j's
    underflow bin; edges[j] its regular-bin edges, so its value bins are
    B[starts[j] : starts[j] + len(edges[j]) + 1]. Validated here (counts
    finite and non-negative, starts in range, edges finite, strictly
    increasing, at least two each); the reference CDF, gaps and standard
    deviations are computed once. Build a new instance when the reference
    changes.
    """

    def __init__(
        self, reference_counts: np.ndarray, starts: np.ndarray, edges: Sequence[np.ndarray]
    ) -> None:
        counts = _as_counts(reference_counts, "reference_counts", ndims=(1,), min_bins=0)
        start_array = np.asarray(starts)
        if start_array.dtype.kind not in "iu" or start_array.ndim != 1:
            raise ValueError(
                f"starts: need a 1-D integer array, got dtype {start_array.dtype} "
                f"shape {start_array.shape}"
            )
        if len(edges) != start_array.shape[0]:
            raise ValueError(
                f"edges: need one edge array per start, got {len(edges)} for "
                f"{start_array.shape[0]} starts"
            )
        checked = [_check_edges(e, f"edges[{j}]") for j, e in enumerate(edges)]
        for j, (start, edge_values) in enumerate(zip(start_array, checked, strict=True)):
            stop = int(start) + edge_values.shape[0] + 1
            if start < 0 or stop > counts.shape[0]:
                raise ValueError(
                    f"starts[{j}]: value bins {int(start)}:{stop} fall outside "
                    f"reference_counts of length {counts.shape[0]}"
                )
            with np.errstate(over="ignore"):
                value_total = float(counts[int(start) : stop].sum())
            if not math.isfinite(value_total):
                raise ValueError(
                    f"reference_counts: the value-bin total of numeric monitor {j} overflows "
                    "float64; rescale the counts"
                )
        lengths = np.array([e.shape[0] for e in checked], dtype=np.int64)
        self.n_bins = int(counts.shape[0])
        self.starts = np.ascontiguousarray(start_array, dtype=np.int64)
        self.edge_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat_edges = np.concatenate(checked) if checked else np.zeros(0)
        self.gaps, self.reference_cdf, self.reference_monitors = (
            _kernels.prepare_wasserstein_reference(
                counts, self.starts, self.edge_offsets, flat_edges
            )
        )

    def evaluate(self, live_counts: np.ndarray) -> np.ndarray:
        """float64[len(starts)]: the normalised W1 per numeric monitor (NaN: see `wasserstein`).

        ``live_counts``: float64 C-contiguous array of length ``B``, trusted to
        hold finite non-negative counts (only type, dtype and length checked).
        """
        if (
            not isinstance(live_counts, np.ndarray)
            or live_counts.dtype != np.float64
            or live_counts.shape != (self.n_bins,)
            or not live_counts.flags.c_contiguous
        ):
            raise ValueError(
                f"live_counts: need a C-contiguous float64 array of shape ({self.n_bins},), got "
                f"{type(live_counts).__name__} {getattr(live_counts, 'dtype', '')} "
                f"{getattr(live_counts, 'shape', '')}"
            )
        out = np.empty(self.starts.shape[0])
        _kernels.wasserstein_pass(
            live_counts, self.starts, self.edge_offsets, self.gaps, self.reference_cdf,
            self.reference_monitors, out,
        )
        return out
