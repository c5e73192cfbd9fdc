"""Slow, obvious reference implementations of docs/configuration.md#bins and docs/divergences.md.

Every kernel must agree with these. They use plain numpy and scipy, one
monitor and one value at a time, and are written to be read, not to be fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from scipy import optimize, special, stats
from scipy.spatial import distance

METRICS = (
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


def smoothed(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """p_i = (c_i + a) / (C + K a)."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts + smoothing) / (counts.sum() + counts.size * smoothing)


def chi2_isf_one(log_p: float) -> float:
    """Q with P(χ²(1) >= Q) = exp(log_p), via scipy (a root of log_ndtr below 1e-300)."""
    if log_p >= 0.0:
        return 0.0
    if log_p > -690.0:
        return float(stats.chi2.isf(math.exp(log_p), 1))
    # P(χ²(1) >= Q) = 2 Φ(-√Q)
    root = optimize.brentq(
        lambda x: special.log_ndtr(-x) + math.log(2.0) - log_p,
        1.0, 2.0 * math.sqrt(-log_p) + 10.0, xtol=1e-300, rtol=1e-15,
    )
    return root * root


def outside_chance(m: float, live: float, reference: float) -> float:
    """ln P(at least m of `live` values lie outside the range of `reference` others), all
    exchangeable: (m + 1) f(m) - m f(m + 1) with f(k) = C(live, k) / C(live + reference, k),
    in exact fractions for whole counts (gammaln for the real counts of decayed windows)."""
    if m <= 0:
        return 0.0
    if all(float(x).is_integer() for x in (m, live, reference)) and m <= 5_000:
        whole_m, whole_l, total = int(m), int(live), int(live + reference)
        f_m = Fraction(1)
        for j in range(whole_m):
            f_m *= Fraction(whole_l - j, total - j)
        chance = (whole_m + 1) * f_m - whole_m * f_m * Fraction(whole_l - whole_m, total - whole_m)
        return min(math.log(chance.numerator) - math.log(chance.denominator), 0.0)
    total = live + reference

    def log_f(k: float) -> float:
        return float(
            special.gammaln(live + 1) - special.gammaln(live - k + 1)
            - special.gammaln(total + 1) + special.gammaln(total - k + 1)
        )

    # f(m + 1) / f(m) = (live - m) / (total - m)
    return min(log_f(m) + math.log((m + 1) - m * (live - m) / (total - m)), 0.0)


def g_test_statistic(reference: np.ndarray, live: np.ndarray) -> float:
    """G = 2 Σ O ln(O/E) over the 2xK table, bins empty on both sides left out."""
    keep = (reference + live) > 0
    if keep.sum() <= 1:
        return 0.0  # one bin: both sides are in the proportion of the totals
    r, q = reference[keep], live[keep]
    big_r, big_l = r.sum(), q.sum()
    n = big_r + big_l
    expected_r = (r + q) * big_r / n
    expected_l = (r + q) * big_l / n
    g = 0.0
    for ri, ei in zip(r, expected_r, strict=True):
        if ri > 0:
            g += ri * math.log(ri / ei)
    for li, fi in zip(q, expected_l, strict=True):
        if li > 0:
            g += li * math.log(li / fi)
    return max(2.0 * g, 0.0)


def g_test_p_value(reference: np.ndarray, live: np.ndarray) -> float:
    """docs/divergences.md p_value: the G-test of homogeneity over the bins the reference
    has counts in, and the exact chance of the live values in the bins it has none of."""
    reference = np.asarray(reference, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    populated = reference > 0
    k_r = int(populated.sum())
    if k_r == reference.size:
        if k_r <= 1:
            return 1.0
        return float(stats.chi2.sf(g_test_statistic(reference, live), k_r - 1))
    outside = float(live[~populated].sum())
    inside = live[populated]
    g = g_test_statistic(reference[populated], inside) if inside.sum() > 0 else 0.0
    q = chi2_isf_one(outside_chance(outside, float(live.sum()), float(reference.sum())))
    return float(stats.chi2.sf(g + q, k_r))


def divergences_one(
    reference: Sequence[float], live: Sequence[float], smoothing: float = 0.5, base: str = "e"
) -> dict[str, float]:
    """Every docs/divergences.md divergence for one monitor, via scipy."""
    reference = np.asarray(reference, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    if reference.sum() == 0 or live.sum() == 0:
        return {name: math.nan for name in METRICS}
    p = smoothed(reference, smoothing)
    q = smoothed(live, smoothing)
    log_base = 2.0 if base == "2" else None
    kl = float(stats.entropy(p, q, base=log_base))
    kl_reverse = float(stats.entropy(q, p, base=log_base))
    js = float(distance.jensenshannon(p, q, base=log_base) ** 2)
    psi = float(stats.entropy(p, q) + stats.entropy(q, p))
    hellinger = float(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(p * q))))))
    entropy_reference = float(stats.entropy(p, base=log_base))
    entropy_live = float(stats.entropy(q, base=log_base))
    return {
        "kl": kl,
        "kl_reverse": kl_reverse,
        "js": js,
        "psi": psi,
        "hellinger": hellinger,
        "entropy_reference": entropy_reference,
        "entropy_live": entropy_live,
        "cross_entropy": entropy_reference + kl,
        "p_value": g_test_p_value(reference, live),
    }


def value_bin_positions(edges: Sequence[float]) -> np.ndarray:
    """Positions of the value bins [underflow, regular..., overflow] (docs/divergences.md)."""
    edges = np.asarray(edges, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2.0
    return np.concatenate([[edges[0]], centres, [edges[-1]]])


def wasserstein_one(
    reference: Sequence[float], live: Sequence[float], edges: Sequence[float]
) -> float:
    """docs/divergences.md wasserstein over value-bin counts, normalised by the reference's std."""
    reference = np.asarray(reference, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    if reference.sum() == 0 or live.sum() == 0:
        return math.nan
    positions = value_bin_positions(edges)
    w1 = stats.wasserstein_distance(positions, positions, reference, live)
    weights = reference / reference.sum()
    mean = float(np.sum(weights * positions))
    std = math.sqrt(float(np.sum(weights * (positions - mean) ** 2)))
    if std == 0.0:
        return math.nan
    return float(w1 / std)


# --- binning (docs/configuration.md) -----------------------------------------------------------
# Numeric layout: [underflow, regular 0..n-1, overflow, missing, invalid].
# Categorical layout: [categories 0..c-1, other, missing, invalid].


def uniform_bin(value: float, lo: float, hi: float, count: int) -> int:
    """Index in the numeric layout of one float value, uniform bins.

    A regular bin index is ``floor((v - lo) * (count / (hi - lo)))``, clamped
    to ``count - 1`` against rounding for values just below ``hi``.
    """
    if math.isnan(value):
        return count + 2
    if value < lo:
        return 0
    if value >= hi:
        return count + 1
    index = math.floor((value - lo) * (count / (hi - lo)))
    return 1 + min(max(index, 0), count - 1)


def edges_bin(value: float, edges: Sequence[float]) -> int:
    """Index in the numeric layout of one float value, explicit edges."""
    n = len(edges) - 1
    if math.isnan(value):
        return n + 2
    if value < edges[0]:
        return 0
    if value >= edges[-1]:
        return n + 1
    return 1 + int(np.searchsorted(np.asarray(edges), value, side="right")) - 1


def histogram_uniform(values: Sequence[float], lo: float, hi: float, count: int) -> np.ndarray:
    """Counts over the numeric layout (invalid bin stays 0: floats are never invalid)."""
    out = np.zeros(count + 4)
    for v in values:
        out[uniform_bin(float(v), lo, hi, count)] += 1
    return out


def histogram_edges(values: Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Counts over the numeric layout for explicit edges."""
    n = len(edges) - 1
    out = np.zeros(n + 4)
    for v in values:
        out[edges_bin(float(v), edges)] += 1
    return out


def quantile_edges(finite: Sequence[float], count: int) -> list[float]:
    """Quantile bins of finite numbers: quantiles 0, 1/count, ..., 1, repeats removed,
    the last moved to the next float above the maximum (so the maximum is in a regular bin)."""
    edges = sorted(set(np.quantile(np.asarray(finite, dtype=float), np.linspace(0, 1, count + 1))))
    edges[-1] = float(np.nextafter(max(finite), math.inf))
    return edges


def p_value_correction(p_values: Sequence[float], method: str) -> list[float]:
    """Adjusted p-values by the textbook formulas, one family, NaN entries left out (and NaN).

    Bonferroni ``min(1, m p)``; Holm ``max_{j<=k} min(1, (m-j+1) p_(j))``;
    Benjamini–Hochberg ``min_{j>=k} min(1, m p_(j) / j)``; ``none`` as given.
    """
    tested = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(tested, key=lambda i: p_values[i])
    m = len(order)
    adjusted = [math.nan] * len(p_values)
    for rank, i in enumerate(order, start=1):
        if method == "none":
            adjusted[i] = p_values[i]
        elif method == "bonferroni":
            adjusted[i] = min(1.0, m * p_values[i])
        elif method == "holm":
            adjusted[i] = max(
                min(1.0, (m - j + 1) * p_values[order[j - 1]]) for j in range(1, rank + 1)
            )
        elif method == "bh":
            adjusted[i] = min(
                min(1.0, m * p_values[order[j - 1]] / j) for j in range(rank, m + 1)
            )
        else:
            raise ValueError(method)
    return adjusted
