"""The kernels' special functions against scipy and exact counts (divergences.md p_value)."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from numba import njit
from scipy import special, stats

from driftmon.kernels.special import (
    LN2_HI,
    LN2_LO,
    chi2_isf_one,
    chi2_sf,
    chi2_sf_array,
    gammaincc,
    log_branchless,
    log_outside_chance,
)

ABSOLUTE_TOLERANCE = 1e-9


def _degrees_of_freedom() -> np.ndarray:
    """Every df from 1 to 300, then 150 log-spaced integers up to 10 000 (both ends in)."""
    dense = np.arange(1, 301)
    sparse = np.unique(np.round(np.logspace(math.log10(300), 4, 150)))
    return np.unique(np.concatenate([dense, sparse])).astype(np.float64)


def _statistics() -> np.ndarray:
    """G from 0 through 1e-12 ... 1e7, 12 points a decade."""
    return np.concatenate([[0.0], np.logspace(-12, 7, 19 * 12 + 1)])


def _evaluate(g: np.ndarray, df: np.ndarray) -> np.ndarray:
    out = np.empty_like(g)
    chi2_sf_array(np.ascontiguousarray(g), np.ascontiguousarray(df), out)
    return out


def test_grid_from_tiny_to_huge_statistics_and_1_to_10000_degrees_of_freedom() -> None:
    g, df = (a.ravel() for a in np.meshgrid(_statistics(), _degrees_of_freedom()))
    got = _evaluate(g, df)
    expected = stats.chi2.sf(g, df)
    error = np.abs(got - expected)
    worst = int(np.argmax(error))
    assert error[worst] <= ABSOLUTE_TOLERANCE, (g[worst], df[worst], got[worst], expected[worst])
    assert np.all((got >= 0.0) & (got <= 1.0))


def test_around_the_mean_where_the_two_expansions_meet() -> None:
    # The bulk of the distribution (G = df ± 8 standard deviations) is where
    # the series/continued-fraction switch sits and where real p-values live.
    df_values = _degrees_of_freedom()
    offsets = np.linspace(-8.0, 8.0, 97)
    df = np.repeat(df_values, offsets.size)
    g = df + np.tile(offsets, df_values.size) * np.sqrt(2.0 * df)
    keep = g >= 0.0
    g, df = g[keep], df[keep]
    # and both sides of the switch x = a + 1, i.e. G = df + 2
    g = np.concatenate([g, df_values + 2.0, np.nextafter(df_values + 2.0, 0.0)])
    df = np.concatenate([df, df_values, df_values])
    got = _evaluate(g, df)
    expected = stats.chi2.sf(g, df)
    assert np.max(np.abs(got - expected)) <= ABSOLUTE_TOLERANCE


def test_is_monotone_non_increasing_in_the_statistic() -> None:
    g = np.linspace(0.0, 400.0, 4001)
    for df in (1.0, 2.0, 63.0, 255.0):
        values = _evaluate(g, np.full_like(g, df))
        assert np.all(np.diff(values) <= 1e-15), df


@pytest.mark.parametrize(
    ("g", "df", "expected"),
    [
        (0.0, 1.0, 1.0),
        (-1.0, 3.0, 1.0),
        (math.inf, 5.0, 0.0),
        (1e7, 1.0, 0.0),
        (0.0, 10_000.0, 1.0),
    ],
)
def test_edges_of_the_domain(g: float, df: float, expected: float) -> None:
    assert chi2_sf(g, df) == expected


@pytest.mark.parametrize(("g", "df"), [(math.nan, 1.0), (1.0, math.nan), (1.0, 0.0), (1.0, -2.0)])
def test_undefined_input_gives_nan(g: float, df: float) -> None:
    assert math.isnan(chi2_sf(g, df))


def test_two_degrees_of_freedom_is_an_exponential() -> None:
    # χ²(2) has sf exp(-g/2) in closed form: an oracle independent of scipy.
    g = np.linspace(0.0, 60.0, 601)
    np.testing.assert_allclose(_evaluate(g, np.full_like(g, 2.0)), np.exp(-g / 2.0), rtol=1e-13)


def test_regularised_upper_gamma_for_non_integer_shapes() -> None:
    a = np.array([0.1, 0.5, 1.5, 7.25, 40.0, 1234.5])
    x = np.array([1e-6, 0.3, 2.0, 7.0, 55.0, 1200.0])
    for shape in a:
        for value in x:
            assert abs(gammaincc(shape, value) - special.gammaincc(shape, value)) < 1e-12


# --- log_branchless -----------------------------------------------------------


@njit(nogil=True)
def _log_many(values: np.ndarray, out: np.ndarray) -> None:
    for i in range(values.shape[0]):
        out[i] = log_branchless(values[i])


def _logs(values: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    _log_many(np.ascontiguousarray(values, dtype=np.float64), out)
    return out


def test_ln2_split_is_exact() -> None:
    with localcontext() as context:
        context.prec = 80
        ln2 = Decimal(2).ln()
        # LN2_HI: ln 2 truncated to 32 significant bits, so e * LN2_HI is exact
        assert Decimal(LN2_HI) == Decimal(math.floor(ln2 * 2**32)) / 2**32
        assert LN2_LO == float(ln2 - Decimal(LN2_HI))


def test_log_within_one_ulp_over_the_whole_positive_range() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([
        10.0 ** rng.uniform(-307.0, 308.0, 200_000),
        rng.uniform(0.0, 4.0, 200_000),
        1.0 + rng.uniform(-1e-3, 1e-3, 50_000),
        1.0 + rng.uniform(-1e-12, 1e-12, 10_000),
        10.0 ** rng.uniform(-323.3, -307.7, 20_000),  # subnormal
        [5e-324, np.nextafter(1.0, 0.0), np.nextafter(1.0, 2.0), 0.5, 2.0, math.sqrt(2.0),
         np.nextafter(math.sqrt(2.0), 2.0), np.finfo(np.float64).max,
         np.finfo(np.float64).tiny],
    ])
    values = values[values > 0.0]
    got = _logs(values)
    expected = np.log(values)
    exact = expected == 0.0
    assert np.all(got[exact] == 0.0)
    ulps = np.abs(got[~exact] - expected[~exact]) / np.spacing(np.abs(expected[~exact]))
    assert ulps.max() <= 1.0


def test_log_against_sixty_digit_decimals() -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([10.0 ** rng.uniform(-300.0, 300.0, 300), rng.uniform(0.5, 1.5, 300)])
    got = _logs(values)
    with localcontext() as context:
        context.prec = 60
        for value, result in zip(values, got, strict=True):
            exact = Decimal(float(value)).ln()
            error = abs(Decimal(float(result)) - exact)
            assert error <= Decimal(float(np.spacing(abs(float(exact))))), value


def test_log_special_values() -> None:
    got = _logs(np.array([0.0, math.inf, math.nan, 1.0]))
    assert got[0] == -math.inf
    assert got[1] == math.inf
    assert math.isnan(got[2])
    assert got[3] == 0.0


def test_chi2_one_quantile_inverts_scipy_from_one_down_to_1e_minus_300() -> None:
    chances = np.concatenate([np.logspace(-300, -1e-12, 3001), [0.5, 0.9, 1 - 1e-9, 1 - 1e-15]])
    for p in chances:
        got = chi2_isf_one(math.log(p))
        want = float(stats.chi2.isf(p, 1))
        assert abs(got - want) <= 1e-13 * want, (p, got, want)


@pytest.mark.parametrize("log_p", [-700.0, -745.5, -800.0, -5e3, -1e6, -1e10, -1e100, -1e300])
def test_chi2_one_quantile_of_chances_below_the_smallest_double(log_p: float) -> None:
    # P(χ²(1) >= Q) = 2 Φ(-√Q); scipy's log_ndtr is accurate that far out.
    q = chi2_isf_one(log_p)
    back = float(special.log_ndtr(-math.sqrt(q))) + math.log(2.0)
    assert abs(back - log_p) <= 1e-14 * abs(log_p), (log_p, q, back)


def test_chi2_one_quantile_edges() -> None:
    assert chi2_isf_one(0.0) == 0.0
    assert chi2_isf_one(1e-300) == 0.0
    assert chi2_isf_one(-math.inf) == math.inf
    assert math.isnan(chi2_isf_one(math.nan))


def _outside_counts(reference: int, live: int) -> np.ndarray:
    """How many of the C(N, live) placements of the live values among N ranks leave
    exactly m live values below every reference value or above every one."""
    from itertools import combinations

    total = reference + live
    counts = np.zeros(live + 1)
    for placement in combinations(range(total), live):
        taken = set(placement)
        low = 0
        while low in taken:
            low += 1
        high = 0
        while total - 1 - high in taken and total - 1 - high > low:
            high += 1
        counts[low + high] += 1
    return counts


@pytest.mark.parametrize(("reference", "live"), [(1, 1), (1, 4), (6, 4), (9, 3), (3, 9), (12, 6)])
def test_outside_chance_is_the_exact_share_of_placements(reference: int, live: int) -> None:
    counts = _outside_counts(reference, live)
    for m in range(live + 1):
        exact = counts[m:].sum() / counts.sum()
        got = math.exp(log_outside_chance(float(m), float(live), float(reference)))
        assert abs(got - exact) <= 1e-14, (reference, live, m, got, exact)


def test_outside_chance_of_big_windows_and_real_counts() -> None:
    # One value past a 100 000-value reference's range in a 1 000-value window: about 2L/N.
    live, total = 1_000.0, 101_000.0
    expected = 2 * live / total - live * (live - 1) / (total * (total - 1))
    assert abs(math.exp(log_outside_chance(1.0, live, total - live)) - expected) <= 1e-15
    # Past 64 the product gives way to lgamma; both agree where both apply.
    for m in (64.0, 65.0, 200.0):
        direct = sum(math.log((live - j) / (total - j)) for j in range(int(m)))
        bracket = math.log((m + 1) - m * (live - m) / (total - m))
        got = log_outside_chance(m, live, total - live)
        assert abs(got - (direct + bracket)) <= 1e-9 * abs(direct)
    # a lone reference value: every live value is outside its range, chance 1
    assert log_outside_chance(2.0**53, 2.0**53, 1.0) == 0.0
    assert log_outside_chance(5.0, 5.0, 1.0) == 0.0
    # decayed windows hold real counts: monotone in m, 0 at m = 0
    values = [log_outside_chance(m, 10.5, 19.75) for m in np.linspace(0.0, 10.5, 43)]
    assert values[0] == 0.0
    assert all(b < a for a, b in zip(values, values[1:], strict=False))
