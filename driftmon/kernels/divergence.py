"""Divergence kernels: every docs/divergences.md metric for all monitors in one pass.

Layout (shared with the engine): the monitors' bins are concatenated into
float64 arrays of length ``B``; monitor ``m`` owns bins
``bin_offsets[m]:bin_offsets[m + 1]`` (``K_m = bin_offsets[m+1] - bin_offsets[m]``
may differ between monitors), with smoothing pseudo-count ``smoothing[m]``.

The reference side changes only when a reference is (re)loaded, so
:func:`prepare_reference` computes it once into ``reference_bins[2, B]`` (rows
raw count ``r`` and ``ln p``) and ``reference_monitors[3, M]`` (total ``R``,
``H(P)`` in nats, and ``1 / (R + K a)``). ``p = (r + a) / (R + K a)`` and
``sqrt p`` are recomputed in the pass from ``r`` and that inverse, bit for bit
as :func:`prepare_reference` computes them: cheaper than streaming two more
arrays from memory (24 bytes a bin with the live counts instead of 40).

:func:`divergence_pass` (serial) and :func:`divergence_pass_parallel`
(``prange`` over chunks of monitors, worth it above a few thousand bins) then
fill ``out[9, M]`` (rows :data:`ROWS`) for a live array. Per bin that is four
logs (``ln q``, ``ln m`` and the G-test's two) and two square roots; each
monitor's bins go through one branch-free loop that writes the per-bin terms
to a small scratch table, which LLVM vectorises (the logs are
:func:`~driftmon.kernels.special.log_branchless`, not calls), and the terms
are then summed in a fixed order.

Numerics (docs/divergences.md), for one monitor, ``a`` its smoothing:

- ``p_i = (r_i + a) / (R + K a)``, as a product by the inverse of the
  denominator. The live side uses the very same arithmetic, so identical
  counts give KL = 0 exactly.
- A side has mass in a bin iff ``r_i + a > 0`` (``l_i + a > 0``); its terms are
  0 otherwise. A bin with mass on the reference side only makes ``kl`` +Inf
  (never clipped); with ``a > 0`` that cannot happen. If ``p_i`` underflows to
  0 while having mass (a subnormal smoothing), ``ln p_i`` is taken as
  ``ln(r_i + a) - ln(R + K a)`` so that it stays finite; monitors where such
  an underflow could occur on the live side take a scalar path with the same
  safeguards (:func:`_monitor_terms_careful`).
- ``js`` uses ``ln m_i = ln((p_i + q_i) / 2)``; ``psi = kl + kl_reverse`` in
  nats always; ``hellinger = sqrt(½ Σ (√p_i - √q_i)²)``, which equals
  ``sqrt(1 - Σ √(p_i q_i))`` for proper distributions and does not cancel
  catastrophically when P ≈ Q. Rounding noise past the mathematical bounds
  (KL, JS, H² < 0; JS > ln 2; H² > 1) is clamped to the bound.
- ``log_scale`` (1 for nats, 1/ln 2 for bits) multiplies ``kl``,
  ``kl_reverse``, ``js``, the entropies and ``cross_entropy = H(P) + KL``.
- ``p_value``: G-test of homogeneity on the raw counts,
  ``G/2 = Σ r ln(r/E) + l ln(l/F)`` over the bins with ``s = r + l > 0``,
  evaluated as ``r (ln(r/s) - ln(R/N)) + l (ln(l/s) - ln(L/N))``: every log
  is of a correctly rounded quotient, so a bin whose counts are in the
  proportion of the totals contributes exactly 0 when the counts are whole
  numbers (no rounding noise posing as drift), and the error is a few ulps of
  ``r`` per bin, like scipy's. With ``K_R`` bins where ``r > 0``:
  ``p = chi2_sf(G, K_R - 1)`` (1 when ``K_R <= 1``) if that is every bin;
  otherwise the ``M`` live values in the bins the reference has none of are
  scored by their exact chance instead of the χ² approximation, which is
  poorest there (:func:`_g_test_p_value`), on ``K_R`` degrees of freedom.
- A monitor with ``R = 0`` or ``L = 0`` gets NaN in all nine rows; no other
  input gives NaN (the public wrappers reject non-finite counts and totals
  that overflow).

Wasserstein (numeric monitors, docs/divergences.md): :func:`prepare_wasserstein_reference`
caches, per numeric monitor, the gaps between consecutive value-bin positions,
the reference CDF at each gap and the reference total and standard deviation;
:func:`wasserstein_pass` computes ``Σ |CDF_P - CDF_Q| gap / std``.

Every kernel is ``@njit(nogil=True, cache=True, error_model="numpy")``: IEEE
division (``x / 0`` is ``inf``, never an exception, and no zero test per
division in the loops); never ``fastmath``, which would assume away the +Inf
that KL legitimately returns. Pure functions over arrays; imports only numpy,
numba and sibling kernels.

The serial, parallel and one-shot passes and the careful scalar path stay in
one module (about 800 lines) because they must give the same numbers: the term
formulas they share are read side by side.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from driftmon.kernels.special import (
    chi2_isf_one,
    chi2_sf,
    log_branchless,
    log_outside_chance,
)

ROWS = (
    "kl",
    "kl_reverse",
    "js",
    "psi",
    "hellinger",
    "entropy_reference",
    "entropy_live",
    "cross_entropy",
    "p_value",
)
"""The rows of a pass's ``out[9, M]``, in order (docs/divergences.md names)."""

N_ROWS = len(ROWS)
REF_COUNT, REF_LOG_P = 0, 1
"""Rows of ``reference_bins[2, B]``."""
MON_TOTAL, MON_ENTROPY, MON_INVERSE = 0, 1, 2
"""Rows of ``reference_monitors[3, M]`` (the inverse is 0 where it overflows)."""

# Rows of the per-monitor scratch table of per-bin terms.
_KL, _KL_REVERSE, _ENTROPY_LIVE, _JS, _HELLINGER_SQ, _G_HALF = 0, 1, 2, 3, 4, 5
_N_TERMS = 6

_PARALLEL_CHUNKS = 64
_LN2 = math.log(2.0)
_LARGEST = 1.7976931348623157e308


@njit(nogil=True, cache=True, error_model="numpy")
def _total(counts: np.ndarray, lo: int, hi: int) -> float:
    """``Σ counts[lo:hi]`` with four running sums (a single one is latency-bound)."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = lo
    while i + 4 <= hi:
        s0 += counts[i]
        s1 += counts[i + 1]
        s2 += counts[i + 2]
        s3 += counts[i + 3]
        i += 4
    while i < hi:
        s0 += counts[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


@njit(nogil=True, cache=True, error_model="numpy")
def _safe_inverse(denominator: float) -> float:
    """``1 / denominator``, or 0 when that overflows (a subnormal denominator)."""
    inverse = 1.0 / denominator
    return inverse if inverse <= _LARGEST else 0.0


@njit(nogil=True, cache=True, error_model="numpy")
def _normalise(shifted: float, denominator: float, inverse: float) -> float:
    """``shifted / denominator`` as a product by ``inverse`` (from :func:`_safe_inverse`).

    Both sides of a comparison go through this function, so identical counts
    give bit-identical ``p`` and ``q``; the division is kept for the
    subnormal denominators whose inverse overflows.
    """
    if inverse > 0.0:
        return shifted * inverse
    return shifted / denominator


@njit(nogil=True, cache=True, error_model="numpy")
def _log_share(share: float, shifted: float, log_denominator: float) -> float:
    """``ln(share)`` for ``share = shifted / denominator``, finite whenever ``shifted > 0``.

    ``ln(share)`` itself is the accurate one (``ln(shifted) - ln(denominator)``
    cancels when the two are close, e.g. a bin holding nearly all of a big
    window); the difference of logs is used only when ``share`` underflowed
    to 0, so that a positive smoothing never turns into ``ln 0 = -inf``.
    """
    if share > 0.0:
        return log_branchless(share)
    return log_branchless(shifted) - log_denominator


@njit(nogil=True, cache=True, error_model="numpy")
def _log_quotient(numerator: float, denominator: float) -> float:
    """``ln(numerator / denominator)`` for ``0 < numerator <= denominator`` finite."""
    quotient = numerator / denominator
    if quotient > 0.0:
        return log_branchless(quotient)
    return log_branchless(numerator) - log_branchless(denominator)


@njit(nogil=True, cache=True, error_model="numpy")
def prepare_reference(
    reference_counts: np.ndarray, bin_offsets: np.ndarray, smoothing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The reference side of every monitor, computed once per reference.

    ``reference_counts``: float64[B] raw counts; ``bin_offsets``: int64[M+1];
    ``smoothing``: float64[M]. Returns ``(reference_bins[2, B],
    reference_monitors[3, M])`` as described in the module docstring. A
    monitor with ``R = 0`` gets ``ln p = 0`` in its bins and NaN entropy (a
    pass reports it as NaN anyway).
    """
    n_monitors = bin_offsets.shape[0] - 1
    reference_bins = np.zeros((2, reference_counts.shape[0]))
    reference_monitors = np.zeros((3, n_monitors))
    for m in range(n_monitors):
        lo = bin_offsets[m]
        hi = bin_offsets[m + 1]
        total = _total(reference_counts, lo, hi)
        for i in range(lo, hi):
            reference_bins[REF_COUNT, i] = reference_counts[i]
        _prepare_monitor(reference_bins, lo, hi, total, smoothing[m], reference_monitors, m)
    return reference_bins, reference_monitors


@njit(nogil=True, cache=True, error_model="numpy")
def _prepare_monitor(
    reference_bins: np.ndarray,
    lo: int,
    hi: int,
    total: float,
    a: float,
    reference_monitors: np.ndarray,
    m: int,
) -> None:
    """One monitor's reference side: ``ln p`` of bins ``lo:hi`` from their raw counts
    (``reference_bins[REF_COUNT]``) into ``reference_bins[REF_LOG_P]``, and column ``m``
    of ``reference_monitors``. The only implementation, so that the engine's cached
    reference and the one-shot pass agree bit for bit."""
    reference_monitors[MON_TOTAL, m] = total
    reference_monitors[MON_INVERSE, m] = 0.0
    if total == 0.0 or hi == lo:
        reference_monitors[MON_ENTROPY, m] = math.nan
        for i in range(lo, hi):
            reference_bins[REF_LOG_P, i] = 0.0
        return
    denominator = total + (hi - lo) * a
    inverse = _safe_inverse(denominator)
    reference_monitors[MON_INVERSE, m] = inverse
    underflow = 0 if inverse > 0.0 else 1
    if underflow == 0:
        # Branch-free, so that it vectorises; the same arithmetic as the guarded
        # loop below wherever no p with mass underflows to 0.
        for i in range(lo, hi):
            shifted = reference_bins[REF_COUNT, i] + a
            p = shifted * inverse
            reference_bins[REF_LOG_P, i] = log_branchless(p)
            underflow += 1 if (shifted > 0.0) & (p == 0.0) else 0
    if underflow == 0:
        entropy = 0.0
        for i in range(lo, hi):
            shifted = reference_bins[REF_COUNT, i] + a
            entropy -= shifted * inverse * reference_bins[REF_LOG_P, i] if shifted > 0.0 else 0.0
        reference_monitors[MON_ENTROPY, m] = max(entropy, 0.0)
        return
    log_denominator = log_branchless(denominator)
    entropy = 0.0
    for i in range(lo, hi):
        shifted = reference_bins[REF_COUNT, i] + a
        p = _normalise(shifted, denominator, inverse)
        log_p = _log_share(p, shifted, log_denominator)
        reference_bins[REF_LOG_P, i] = log_p
        if shifted > 0.0:
            entropy -= p * log_p
    reference_monitors[MON_ENTROPY, m] = max(entropy, 0.0)


@njit(nogil=True, cache=True, error_model="numpy")
def _split_by_reference(
    lo: int, hi: int, live_counts: np.ndarray, reference_bins: np.ndarray
) -> tuple[float, float, int]:
    """``(L', M, E)`` of the bins ``lo:hi``: the live count in the bins with ``r > 0``, the
    live count in the others, and how many others there are. Each sum is taken over its
    own bins (two running sums each), so that ``L'`` of a table whose values all lie
    in one populated bin equals that bin's count exactly."""
    in0 = 0.0
    in1 = 0.0
    out0 = 0.0
    out1 = 0.0
    empty = 0
    i = lo
    while i + 2 <= hi:
        count0 = live_counts[i]
        count1 = live_counts[i + 1]
        empty0 = reference_bins[REF_COUNT, i] == 0.0
        empty1 = reference_bins[REF_COUNT, i + 1] == 0.0
        in0 += 0.0 if empty0 else count0
        in1 += 0.0 if empty1 else count1
        out0 += count0 if empty0 else 0.0
        out1 += count1 if empty1 else 0.0
        empty += (1 if empty0 else 0) + (1 if empty1 else 0)
        i += 2
    if i < hi:
        if reference_bins[REF_COUNT, i] == 0.0:
            out0 += live_counts[i]
            empty += 1
        else:
            in0 += live_counts[i]
    return in0 + in1, out0 + out1, empty


@njit(nogil=True, cache=True, error_model="numpy")
def _monitor_terms_fast(
    lo: int,
    hi: int,
    live_counts: np.ndarray,
    a: float,
    inverse: float,
    ref_inverse: float,
    log_share_r: float,
    log_share_l: float,
    reference_bins: np.ndarray,
    terms: np.ndarray,
) -> int:
    """Per-bin terms of one monitor into ``terms[6, :K]``, without a branch.

    Returns the number of suspicious bins: a bin is suspicious when a
    quotient with a positive numerator underflowed to 0, whose log here would
    be -inf; the caller then redoes the monitor carefully. The G-test's terms
    are those of the bins with ``r > 0`` (``log_share_l`` is the share of the
    live values that lie in them).
    """
    suspicious = 0
    for k in range(hi - lo):
        i = lo + k
        r = reference_bins[REF_COUNT, i]
        p = (r + a) * ref_inverse
        log_p = reference_bins[REF_LOG_P, i]
        count = live_counts[i]
        shifted = count + a
        q = shifted * inverse
        log_q = log_branchless(q)
        p_has_mass = log_p > -math.inf
        q_has_mass = shifted > 0.0
        half_mixture = 0.5 * (p + q)
        log_m = log_branchless(half_mixture)
        both = r + count
        share_r = r / both
        share_l = count / both

        kl_term = p * (log_p - log_q) if q_has_mass else math.inf
        terms[_KL, k] = kl_term if p_has_mass else 0.0
        kl_reverse_term = q * (log_q - log_p) if p_has_mass else math.inf
        terms[_KL_REVERSE, k] = kl_reverse_term if q_has_mass else 0.0
        terms[_ENTROPY_LIVE, k] = -q * log_q if q_has_mass else 0.0
        js_p = p * (log_p - log_m) if p_has_mass else 0.0
        js_q = q * (log_q - log_m) if q_has_mass else 0.0
        terms[_JS, k] = js_p + js_q
        root_gap = math.sqrt(p) - math.sqrt(q)
        terms[_HELLINGER_SQ, k] = root_gap * root_gap
        g_r = r * (log_branchless(share_r) - log_share_r) if r > 0.0 else 0.0
        g_l = count * (log_branchless(share_l) - log_share_l)
        terms[_G_HALF, k] = g_r + g_l if (count > 0.0) & (r > 0.0) else g_r

        underflow = (
            (q_has_mass and q == 0.0)
            or ((p_has_mass or q_has_mass) and half_mixture == 0.0)
            or (r > 0.0 and share_r == 0.0)
            or (count > 0.0 and share_l == 0.0)
        )
        suspicious += 1 if underflow else 0
    return suspicious


@njit(nogil=True, cache=True, error_model="numpy")
def _monitor_terms_careful(
    lo: int,
    hi: int,
    live_counts: np.ndarray,
    a: float,
    denominator: float,
    inverse: float,
    log_denominator: float,
    ref_denominator: float,
    ref_inverse: float,
    log_share_r: float,
    log_share_l: float,
    reference_bins: np.ndarray,
    terms: np.ndarray,
) -> None:
    """:func:`_monitor_terms_fast` with every underflow guarded.

    Equal to the fast loop wherever nothing underflows (same formulas), and
    finite wherever the mathematics is.
    """
    for k in range(hi - lo):
        i = lo + k
        r = reference_bins[REF_COUNT, i]
        p = _normalise(r + a, ref_denominator, ref_inverse)
        log_p = reference_bins[REF_LOG_P, i]
        count = live_counts[i]
        shifted = count + a
        q = _normalise(shifted, denominator, inverse)
        log_q = _log_share(q, shifted, log_denominator)
        p_has_mass = log_p > -math.inf
        q_has_mass = shifted > 0.0
        for row in range(_N_TERMS):
            terms[row, k] = 0.0
        if p_has_mass:
            terms[_KL, k] = p * (log_p - log_q) if q_has_mass else math.inf
        if q_has_mass:
            terms[_KL_REVERSE, k] = q * (log_q - log_p) if p_has_mass else math.inf
            terms[_ENTROPY_LIVE, k] = -q * log_q
        mixture = p + q
        if mixture > 0.0:
            log_m = _log_share(0.5 * mixture, mixture, _LN2)
            if p_has_mass:
                terms[_JS, k] += p * (log_p - log_m)
            if q_has_mass:
                terms[_JS, k] += q * (log_q - log_m)
        root_gap = math.sqrt(p) - math.sqrt(q)
        terms[_HELLINGER_SQ, k] = root_gap * root_gap
        both = r + count
        if r > 0.0:
            terms[_G_HALF, k] += r * (_log_quotient(r, both) - log_share_r)
            if count > 0.0:
                terms[_G_HALF, k] += count * (_log_quotient(count, both) - log_share_l)


@njit(nogil=True, cache=True, error_model="numpy")
def _sum_row(terms: np.ndarray, row: int, n_bins: int) -> float:
    """``Σ terms[row, :n_bins]`` with eight interleaved partial sums, added pairwise.

    A fixed order (bin ``k`` goes to partial sum ``k % 8``), so the result
    does not depend on the machine, while the eight independent adds per
    step can be one vector add instead of a latency-bound scalar chain.
    """
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    full = n_bins - n_bins % 8
    for k in range(0, full, 8):
        s0 += terms[row, k]
        s1 += terms[row, k + 1]
        s2 += terms[row, k + 2]
        s3 += terms[row, k + 3]
        s4 += terms[row, k + 4]
        s5 += terms[row, k + 5]
        s6 += terms[row, k + 6]
        s7 += terms[row, k + 7]
    tail = 0.0
    for k in range(full, n_bins):
        tail += terms[row, k]
    return (((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))) + tail


@njit(nogil=True, cache=True, error_model="numpy")
def _monitor_pass(
    m: int,
    live_counts: np.ndarray,
    bin_offsets: np.ndarray,
    smoothing: np.ndarray,
    reference_bins: np.ndarray,
    reference_monitors: np.ndarray,
    log_scale: float,
    terms: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fill column ``m`` of ``out[9, M]`` (see :func:`divergence_pass`); ``terms`` is scratch."""
    lo = bin_offsets[m]
    hi = bin_offsets[m + 1]
    _monitor_values(
        lo, hi, live_counts, _total(live_counts, lo, hi), smoothing[m], reference_bins,
        reference_monitors, m, log_scale, terms, out, m,
    )


@njit(nogil=True, cache=True, error_model="numpy")
def _monitor_values(
    lo: int,
    hi: int,
    live_counts: np.ndarray,
    live_total: float,
    a: float,
    reference_bins: np.ndarray,
    reference_monitors: np.ndarray,
    ref_column: int,
    log_scale: float,
    terms: np.ndarray,
    out: np.ndarray,
    m: int,
) -> None:
    """Column ``m`` of ``out`` for the monitor whose bins are ``lo:hi`` of ``live_counts``
    and ``reference_bins``, with its reference side in column ``ref_column`` of
    ``reference_monitors``."""
    ref_total = reference_monitors[MON_TOTAL, ref_column]
    if ref_total == 0.0 or live_total == 0.0 or hi == lo:
        for row in range(N_ROWS):
            out[row, m] = math.nan
        return
    denominator = live_total + (hi - lo) * a
    inverse = _safe_inverse(denominator)
    ref_inverse = reference_monitors[MON_INVERSE, ref_column]
    # The G-test's table is the bins the reference has values in; the live
    # values in the others (``outside``) are scored apart (_g_test_p_value).
    # Its shares of the totals are computed as the per-bin shares are, so
    # that a bin in proportion contributes exactly 0.
    live_inside, outside, empty = _split_by_reference(lo, hi, live_counts, reference_bins)
    if outside == 0.0:
        live_inside = live_total
    grand_total = ref_total + live_inside
    log_share_r = _log_quotient(ref_total, grand_total)
    log_share_l = _log_quotient(live_inside, grand_total) if live_inside > 0.0 else 0.0

    suspicious = 1
    if inverse > 0.0 and ref_inverse > 0.0:
        suspicious = _monitor_terms_fast(
            lo, hi, live_counts, a, inverse, ref_inverse, log_share_r, log_share_l,
            reference_bins, terms,
        )
    if suspicious > 0:
        # The reference's denominator, computed exactly as prepare_reference did.
        ref_denominator = ref_total + (hi - lo) * a
        _monitor_terms_careful(
            lo, hi, live_counts, a, denominator, inverse, log_branchless(denominator),
            ref_denominator, ref_inverse, log_share_r, log_share_l, reference_bins, terms,
        )

    n_bins = hi - lo
    kl = _sum_row(terms, _KL, n_bins)
    kl_reverse = _sum_row(terms, _KL_REVERSE, n_bins)
    entropy_live = _sum_row(terms, _ENTROPY_LIVE, n_bins)
    js = _sum_row(terms, _JS, n_bins)
    hellinger_sq = _sum_row(terms, _HELLINGER_SQ, n_bins)
    g_half = _sum_row(terms, _G_HALF, n_bins)

    kl = max(kl, 0.0)
    kl_reverse = max(kl_reverse, 0.0)
    js = min(max(0.5 * js, 0.0), _LN2)
    entropy_reference = reference_monitors[MON_ENTROPY, ref_column]
    out[0, m] = kl * log_scale
    out[1, m] = kl_reverse * log_scale
    out[2, m] = js * log_scale
    out[3, m] = kl + kl_reverse
    out[4, m] = math.sqrt(min(max(0.5 * hellinger_sq, 0.0), 1.0))
    out[5, m] = entropy_reference * log_scale
    out[6, m] = max(entropy_live, 0.0) * log_scale
    out[7, m] = (entropy_reference + kl) * log_scale
    out[8, m] = _g_test_p_value(
        2.0 * g_half, n_bins - empty, n_bins, outside, ref_total, live_total
    )


@njit(nogil=True, cache=True, error_model="numpy")
def _g_test_p_value(
    g: float, populated: int, n_bins: int, outside: float, ref_total: float, live_total: float
) -> float:
    """The ``p_value`` of one monitor.

    ``g``: the G statistic of the ``populated`` bins (those with ``r > 0``);
    ``outside``: the live count ``M`` in the other bins. Every bin populated:
    ``chi2_sf(G, K_R - 1)``. Otherwise the bins the reference has none of take
    one degree of freedom together, and ``M`` is scored by the exact chance of
    that many live values past the reference's range, as its χ²(1) quantile.
    """
    statistic = max(g, 0.0)
    if populated == n_bins:
        return 1.0 if populated <= 1 else chi2_sf(statistic, populated - 1.0)
    if outside > 0.0:
        statistic += chi2_isf_one(log_outside_chance(outside, live_total, ref_total))
    return chi2_sf(statistic, float(populated))


@njit(nogil=True, cache=True, error_model="numpy")
def _max_bins(bin_offsets: np.ndarray) -> int:
    """The largest K of the layout (at least 1)."""
    largest = 1
    for m in range(bin_offsets.shape[0] - 1):
        largest = max(largest, bin_offsets[m + 1] - bin_offsets[m])
    return largest


@njit(nogil=True, cache=True, error_model="numpy")
def divergence_pass(
    live_counts: np.ndarray,
    bin_offsets: np.ndarray,
    smoothing: np.ndarray,
    reference_bins: np.ndarray,
    reference_monitors: np.ndarray,
    log_scale: float,
    out: np.ndarray,
) -> None:
    """Every the divergence of every monitor into ``out[9, M]`` (rows :data:`ROWS`), serially.

    ``live_counts``: float64[B]; ``bin_offsets``: int64[M+1]; ``smoothing``:
    float64[M]; ``reference_bins``, ``reference_monitors``: from
    :func:`prepare_reference` with the same offsets and smoothing;
    ``log_scale``: 1.0 (nats) or 1/ln 2 (bits).
    """
    terms = np.empty((_N_TERMS, _max_bins(bin_offsets)))
    for m in range(bin_offsets.shape[0] - 1):
        _monitor_pass(
            m, live_counts, bin_offsets, smoothing, reference_bins, reference_monitors,
            log_scale, terms, out,
        )


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def divergence_pass_parallel(
    live_counts: np.ndarray,
    bin_offsets: np.ndarray,
    smoothing: np.ndarray,
    reference_bins: np.ndarray,
    reference_monitors: np.ndarray,
    log_scale: float,
    out: np.ndarray,
) -> None:
    """:func:`divergence_pass` with chunks of monitors spread over numba's threads.

    Same arguments and results, bit for bit (each monitor is computed by one
    thread in the same way). Worth its thread start-up only above a few
    thousand bins.
    """
    n_monitors = bin_offsets.shape[0] - 1
    # A fixed number of chunks (not one per thread) balances uneven K and
    # keeps the result independent of the thread count.
    n_chunks = min(n_monitors, _PARALLEL_CHUNKS)
    max_bins = _max_bins(bin_offsets)
    for chunk in prange(n_chunks):
        terms = np.empty((_N_TERMS, max_bins))
        for m in range(chunk * n_monitors // n_chunks, (chunk + 1) * n_monitors // n_chunks):
            _monitor_pass(
                m, live_counts, bin_offsets, smoothing, reference_bins, reference_monitors,
                log_scale, terms, out,
            )


# One-shot errors: ``error[ERR_KIND, ERR_SIDE, ERR_ROW, ERR_COLUMN]``.
ERR_KIND, ERR_SIDE, ERR_ROW, ERR_COLUMN = 0, 1, 2, 3
NO_ERROR, NOT_FINITE, NEGATIVE, TOTAL_OVERFLOW = 0, 1, 2, 3
"""Kinds of :func:`one_shot_pass` errors; side 0 is the reference, 1 the live counts."""


@njit(nogil=True, cache=True, error_model="numpy")
def _first_bad(counts: np.ndarray) -> int:
    """Index of the first count of ``counts`` that is NaN, infinite or negative, or -1."""
    for k in range(counts.shape[0]):
        value = counts[k]
        if not (value >= 0.0 and value <= _LARGEST):
            return k
    return -1


@njit(nogil=True, cache=True, error_model="numpy")
def _one_shot_rows(
    reference: np.ndarray,
    live: np.ndarray,
    a: float,
    log_scale: float,
    first_row: int,
    last_row: int,
    out: np.ndarray,
    errors: np.ndarray,
    chunk: int,
) -> None:
    """Rows ``first_row:last_row`` of :func:`one_shot_pass`; stops at the first bad row,
    recording it in ``errors[chunk]``.

    Each row is copied into small scratch arrays as it is checked, so that
    everything after the check reads L1 and no array view is made per row (a
    view's reference count is an atomic that threads would fight over).
    """
    n_bins = reference.shape[1]
    reference_bins = np.empty((2, n_bins))
    reference_row = np.empty(n_bins)
    live_row = np.empty(n_bins)
    reference_monitors = np.empty((3, 1))
    terms = np.empty((_N_TERMS, n_bins))
    for m in range(first_row, last_row):
        bad = 0
        for k in range(n_bins):
            r = reference[m, k]
            q = live[m, k]
            reference_bins[REF_COUNT, k] = r
            reference_row[k] = r
            live_row[k] = q
            r_ok = (r >= 0.0) & (r <= _LARGEST)
            q_ok = (q >= 0.0) & (q <= _LARGEST)
            bad += 0 if (r_ok & q_ok) else 1
        if bad:
            column = _first_bad(reference_row)
            side = 0
            if column < 0:
                column = _first_bad(live_row)
                side = 1
            value = reference_row[column] if side == 0 else live_row[column]
            errors[chunk, ERR_KIND] = NEGATIVE if value < 0.0 else NOT_FINITE
            errors[chunk, ERR_SIDE] = side
            errors[chunk, ERR_ROW] = m
            errors[chunk, ERR_COLUMN] = column
            return
        ref_total = _total(reference_row, 0, n_bins)
        live_total = _total(live_row, 0, n_bins)
        overflow_side = -1
        if not ref_total + n_bins * a <= _LARGEST:
            overflow_side = 0
        elif not (live_total + n_bins * a <= _LARGEST and ref_total + live_total <= _LARGEST):
            overflow_side = 1
        if overflow_side >= 0:
            errors[chunk, ERR_KIND] = TOTAL_OVERFLOW
            errors[chunk, ERR_SIDE] = overflow_side
            errors[chunk, ERR_ROW] = m
            errors[chunk, ERR_COLUMN] = 0
            return
        _prepare_monitor(reference_bins, 0, n_bins, ref_total, a, reference_monitors, 0)
        _monitor_values(
            0, n_bins, live_row, live_total, a, reference_bins, reference_monitors, 0,
            log_scale, terms, out, m,
        )


@njit(nogil=True, cache=True, error_model="numpy")
def one_shot_pass(
    reference: np.ndarray,
    live: np.ndarray,
    a: float,
    log_scale: float,
    out: np.ndarray,
    error: np.ndarray,
) -> None:
    """Validate and evaluate ``M`` monitors of ``K`` bins in one read of each array.

    ``reference``, ``live``: float64 C-contiguous ``[M, K]`` raw counts, not
    yet checked; ``a``: the smoothing; ``log_scale`` as in
    :func:`divergence_pass`; ``out``: float64 ``[9, M]``; ``error``: int64[4]
    set to zeros by the caller. Row by row, the two rows are checked (finite,
    ``>= 0``, totals with smoothing finite) while they are read, then the
    reference side (:func:`_prepare_monitor`) and every value
    (:func:`_monitor_values`) are computed from L1. At the first bad row
    ``error`` gets (kind, side, row, column) and the pass stops; ``out`` is
    then partly written and must not be used. Results equal
    :func:`prepare_reference` + :func:`divergence_pass` bit for bit.
    """
    errors = np.zeros((1, 4), dtype=np.int64)
    _one_shot_rows(reference, live, a, log_scale, 0, reference.shape[0], out, errors, 0)
    for j in range(4):
        error[j] = errors[0, j]


@njit(nogil=True, cache=True, error_model="numpy", parallel=True)
def one_shot_pass_parallel(
    reference: np.ndarray,
    live: np.ndarray,
    a: float,
    log_scale: float,
    out: np.ndarray,
    error: np.ndarray,
) -> None:
    """:func:`one_shot_pass` with chunks of rows spread over numba's threads.

    Same results bit for bit; when several rows are bad, ``error`` names the
    first of them, as the serial pass does.
    """
    n_monitors = reference.shape[0]
    n_chunks = min(n_monitors, _PARALLEL_CHUNKS)
    errors = np.zeros((n_chunks, 4), dtype=np.int64)
    for chunk in prange(n_chunks):
        _one_shot_rows(
            reference, live, a, log_scale, chunk * n_monitors // n_chunks,
            (chunk + 1) * n_monitors // n_chunks, out, errors, chunk,
        )
    for chunk in range(n_chunks):
        if errors[chunk, ERR_KIND] != NO_ERROR:
            for j in range(4):
                error[j] = errors[chunk, j]
            return


@njit(nogil=True, cache=True, error_model="numpy")
def _value_position(edges: np.ndarray, lo: int, hi: int, k: int) -> float:
    """Position of value bin ``k`` of the monitor whose edges are ``edges[lo:hi]``."""
    if k == 0:
        return edges[lo]
    if k == hi - lo:
        return edges[hi - 1]
    return (edges[lo + k - 1] + edges[lo + k]) / 2.0


@njit(nogil=True, cache=True, error_model="numpy")
def prepare_wasserstein_reference(
    reference_counts: np.ndarray,
    starts: np.ndarray,
    edge_offsets: np.ndarray,
    edges: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference side of every numeric monitor's Wasserstein distance.

    Numeric monitor ``j`` has regular-bin edges
    ``edges[edge_offsets[j]:edge_offsets[j+1]]`` (``n + 1`` of them, ``n >= 1``)
    and ``n + 2`` value bins ``reference_counts[starts[j] : starts[j] + n + 2]``
    (underflow, regular, overflow) at positions ``e_0``, the bin centres,
    ``e_n``. Returns ``(gaps, reference_cdf, reference_monitors[2, J])``:
    ``gaps[edge_offsets[j] + k]`` is position ``k+1`` minus position ``k``,
    ``reference_cdf`` at the same index is the reference mass at positions
    ``<= k``, and ``reference_monitors`` holds the total and the standard
    deviation (in the units of the edges; NaN when the total is 0).
    """
    n_numeric = starts.shape[0]
    gaps = np.empty(edges.shape[0])
    reference_cdf = np.zeros(edges.shape[0])
    reference_monitors = np.empty((2, n_numeric))
    for j in range(n_numeric):
        lo = edge_offsets[j]
        hi = edge_offsets[j + 1]
        n_value_bins = hi - lo + 1
        start = starts[j]
        for k in range(hi - lo):
            gaps[lo + k] = _value_position(edges, lo, hi, k + 1) - _value_position(
                edges, lo, hi, k
            )
        total = 0.0
        for k in range(n_value_bins):
            total += reference_counts[start + k]
        reference_monitors[0, j] = total
        if total == 0.0:
            reference_monitors[1, j] = math.nan
            continue
        cumulative = 0.0
        for k in range(hi - lo):
            cumulative += reference_counts[start + k]
            reference_cdf[lo + k] = cumulative / total
        mean = 0.0
        for k in range(n_value_bins):
            mean += reference_counts[start + k] / total * _value_position(edges, lo, hi, k)
        variance = 0.0
        for k in range(n_value_bins):
            deviation = _value_position(edges, lo, hi, k) - mean
            variance += (reference_counts[start + k] / total) * (deviation * deviation)
        reference_monitors[1, j] = math.sqrt(variance)
    return gaps, reference_cdf, reference_monitors


@njit(nogil=True, cache=True, error_model="numpy")
def wasserstein_pass(
    live_counts: np.ndarray,
    starts: np.ndarray,
    edge_offsets: np.ndarray,
    gaps: np.ndarray,
    reference_cdf: np.ndarray,
    reference_monitors: np.ndarray,
    out: np.ndarray,
) -> None:
    """docs/divergences.md normalised W1 of every numeric monitor into ``out[J]``.

    Arguments as in :func:`prepare_wasserstein_reference`, whose results
    ``gaps``, ``reference_cdf`` and ``reference_monitors`` are passed here.
    NaN when either side's value-bin total is 0 or the reference's standard
    deviation is 0.
    """
    for j in range(starts.shape[0]):
        lo = edge_offsets[j]
        hi = edge_offsets[j + 1]
        start = starts[j]
        ref_total = reference_monitors[0, j]
        ref_std = reference_monitors[1, j]
        live_total = 0.0
        for k in range(hi - lo + 1):
            live_total += live_counts[start + k]
        if ref_total == 0.0 or live_total == 0.0 or not ref_std > 0.0:
            out[j] = math.nan
            continue
        distance = 0.0
        cumulative = 0.0
        for k in range(hi - lo):
            cumulative += live_counts[start + k]
            distance += abs(reference_cdf[lo + k] - cumulative / live_total) * gaps[lo + k]
        out[j] = distance / ref_std


def warm_up() -> None:
    """Compile (or load from the cache) every kernel of this module once, on tiny inputs."""
    reference = np.array([3.0, 1.0, 0.0, 2.0, 2.0])
    live = np.array([1.0, 1.0, 1.0, 0.0, 4.0])
    bin_offsets = np.array([0, 2, 5], dtype=np.int64)
    smoothing = np.array([0.5, 0.0])
    reference_bins, reference_monitors = prepare_reference(reference, bin_offsets, smoothing)
    out = np.empty((N_ROWS, 2))
    divergence_pass(live, bin_offsets, smoothing, reference_bins, reference_monitors, 1.0, out)
    divergence_pass_parallel(
        live, bin_offsets, smoothing, reference_bins, reference_monitors, 1.0, out
    )
    error = np.zeros(4, dtype=np.int64)
    rows = np.array([[3.0, 1.0, 0.0], [2.0, 2.0, 1.0]])
    one_shot_pass(rows, rows[::-1].copy(), 0.5, 1.0, out[:, :2].copy(), error)
    one_shot_pass_parallel(rows, rows[::-1].copy(), 0.5, 1.0, np.empty((N_ROWS, 2)), error)
    starts = np.array([0, 1], dtype=np.int64)
    edge_offsets = np.array([0, 2, 5], dtype=np.int64)
    edges = np.array([0.0, 1.0, -1.0, 0.0, 2.0])
    gaps, reference_cdf, wasserstein_monitors = prepare_wasserstein_reference(
        reference, starts, edge_offsets, edges
    )
    distances = np.empty(2)
    wasserstein_pass(
        live, starts, edge_offsets, gaps, reference_cdf, wasserstein_monitors, distances
    )
