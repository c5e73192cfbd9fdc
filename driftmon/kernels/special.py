"""Special functions for the kernels: a vectorisable ``log``, the χ² survival function,
the χ²(1) upper quantile and the chance of live values past the reference's range.

``log_branchless(x)`` is the natural log written as straight-line arithmetic
(no call, no branch), so that LLVM can vectorise the divergence loops that use
it; glibc's ``log`` is an opaque call that keeps every loop scalar. Method:
``x = 2^e m`` with ``m`` in ``[sqrt(1/2), sqrt(2))``, ``f = m - 1`` (exact),
``s = f / (2 + f)``, ``ln m = 2 atanh(s) = f - s (f - R(s²))`` with ``R`` the
atanh Taylor series to ``s^19`` (``|s| <= 0.1716``, truncation below 1e-17
relative), plus ``e ln 2`` in two parts (the high part has 32 significant bits,
so ``e * LN2_HI`` is exact). Within 1 ulp of the correctly rounded log over
the whole positive range, subnormals included; ``log(0) = -inf``,
``log(inf) = inf``, NaN in gives NaN (negative input is not supported).

``chi2_sf(g, df)`` is ``P(χ²(df) >= g)``, the regularised upper incomplete
gamma function ``Q(df/2, g/2)``. It is computed the classical way:

- ``x < a + 1``: the power series of the lower function ``P(a, x)``, and
  ``Q = 1 - P``;
- otherwise: the continued fraction of ``Q(a, x)``, evaluated from the
  forward recurrence of its convergents;

both scaled by ``exp(a ln x - x - lgamma(a))``. Accuracy is about 1e-12
absolute over ``g`` in ``[0, 1e7]`` and ``df`` in ``[1, 1e4]`` (the prefactor's
exponent is a difference of numbers up to ``a ln x``; its rounding is the
limit), which ``tests/test_special.py`` checks against ``scipy.stats.chi2.sf``.
Both expansions converge in ``O(sqrt(a))`` steps near ``x = a`` and faster
elsewhere. No scipy at run time.

``chi2_isf_one(log_p)`` is the ``Q`` with ``P(χ²(1) >= Q) = exp(log_p)``,
i.e. ``2 x²`` for ``erfc(x) = p``, taking ``ln p`` so that chances far below
the smallest double still get a finite quantile. ``ln erfc`` is decreasing
and concave on ``x >= 0``, so Newton's method on ``ln erfc(x) - ln p`` from
a point right of the root descends to it monotonically;
``ln erfc`` is ``log1p(-erf x)`` below 0.5, ``log(erfc x)`` up to 26 and the
asymptotic series (four terms, below 1e-11 relative there) beyond, where
``erfc`` underflows.

``log_outside_chance(m, live, reference)`` is the log of the exact chance
that at least ``m`` of ``live`` values fall below the smallest or above the
largest of ``reference`` values, all drawn from one continuous distribution:
``(m + 1) f(m) - m f(m + 1)`` with ``f(m) = C(live, m) / C(live + reference,
m)`` the chance that ``m`` given extreme positions all hold live values
(docs/divergences.md, ``p_value``).

Pure functions over floats and arrays; imports only numpy and numba.

Numba's on-disk cache (``cache=True``) keys each kernel on its own source
file only: kernels of ``divergence.py`` that call these functions keep their
cached machine code when this file alone changes. After editing here, touch
``divergence.py`` too (or clear the ``__pycache__`` ``*.nbi``/``*.nbc`` files).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_EPS = 2.0**-53
_RESCALE_ABOVE = 2.0**500
_RESCALE_BY = 2.0**-500
_MAX_ITERATIONS = 100_000
# exp() of anything below this is 0 in float64 even after multiplying by the
# series or continued-fraction factor, which stays below ~10 here.
_LOG_UNDERFLOW = -760.0
_MAX_NEWTON = 200
_ERFC_SERIES_FROM = 26.0
_LOG_SQRT_PI = 0.5 * math.log(math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# ln 2 = LN2_HI + LN2_LO: LN2_HI is ln 2 truncated to 32 significant bits,
# LN2_LO the rest rounded to double (tests/test_special.py re-derives both).
LN2_HI = 0.6931471803691238
LN2_LO = 1.9082149292705877e-10
_MANTISSA_MASK = (1 << 52) - 1
_ONE_EXPONENT_BITS = 1023 << 52
_HALF_EXPONENT_BITS = 1022 << 52
_SQRT2_MANTISSA = int(np.float64(math.sqrt(2.0)).view(np.int64)) & _MANTISSA_MASK
_SMALLEST_NORMAL = 2.2250738585072014e-308
_TWO_54 = 2.0**54
# Taylor coefficients of (2 atanh(s) - 2 s) / s = Σ_k 2 s^(2k) / (2k + 1), k = 1..9.
_A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9 = (2.0 / (2 * k + 1) for k in range(1, 10))


@njit(nogil=True, cache=True, error_model="numpy")
def log_branchless(x: float) -> float:
    """Natural log of ``x >= 0`` (or NaN) without calls or branches; see the module docstring."""
    subnormal = x < _SMALLEST_NORMAL
    scaled = x * _TWO_54 if subnormal else x
    bits = np.float64(scaled).view(np.int64)
    mantissa = bits & _MANTISSA_MASK
    upper = mantissa > _SQRT2_MANTISSA
    exponent = (bits >> 52) - 1023 + (1 if upper else 0) - (54 if subnormal else 0)
    m = np.int64(mantissa | (_HALF_EXPONENT_BITS if upper else _ONE_EXPONENT_BITS)).view(
        np.float64
    )
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    z2 = z * z
    z4 = z2 * z2
    # Estrin's scheme: shorter dependency chains than Horner for the same terms.
    series = z * (
        ((_A1 + z * _A2) + z2 * (_A3 + z * _A4))
        + z4 * (((_A5 + z * _A6) + z2 * (_A7 + z * _A8)) + z4 * _A9)
    )
    e = float(exponent)
    result: float = e * LN2_HI + (f - (s * (f - series) - e * LN2_LO))
    result = -math.inf if x == 0.0 else result
    result = math.inf if x == math.inf else result
    return x if x != x else result


@njit(nogil=True, cache=True, error_model="numpy")
def gammaincc(a: float, x: float) -> float:
    """Regularised upper incomplete gamma ``Q(a, x) = Γ(a, x) / Γ(a)``.

    ``a > 0``; ``x >= 0``. ``Q(a, 0) = 1``, ``Q(a, +inf) = 0``; NaN in,
    NaN out (also for ``a <= 0``, where Q is not a probability).
    """
    if x != x or a != a or a <= 0.0:
        return math.nan
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        if log_prefactor < _LOG_UNDERFLOW:
            return 1.0
        # P(a, x) = x^a e^-x / Γ(a) * Σ_n x^n / (a (a+1) ... (a+n))
        denominator = a
        term = 1.0 / a
        total = term
        for _ in range(_MAX_ITERATIONS):
            denominator += 1.0
            term *= x / denominator
            total += term
            if term < total * _EPS:
                break
        lower = total * math.exp(log_prefactor)
        return max(0.0, 1.0 - lower)
    if log_prefactor < _LOG_UNDERFLOW:
        return 0.0
    # Q(a, x) = x^a e^-x / Γ(a) / (b0 + a1/(b1 + a2/(b2 + ...))), b_i = x + 2i + 1 - a,
    # a_i = -i (i - a), from the convergents A_n / B_n of the forward
    # recurrence: only multiplications on the dependency chain (the modified
    # Lentz method divides twice per step), with a rescaling against overflow
    # and a cross-multiplied convergence test.
    numerator_prev = 1.0
    denominator_prev = 0.0
    b = x + 1.0 - a
    numerator = b
    denominator = 1.0
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        numerator_next = b * numerator + an * numerator_prev
        denominator_next = b * denominator + an * denominator_prev
        numerator_prev = numerator
        denominator_prev = denominator
        numerator = numerator_next
        denominator = denominator_next
        if abs(numerator) > _RESCALE_ABOVE:
            numerator_prev *= _RESCALE_BY
            denominator_prev *= _RESCALE_BY
            numerator *= _RESCALE_BY
            denominator *= _RESCALE_BY
        cross = denominator * numerator_prev
        if abs(cross - denominator_prev * numerator) <= _EPS * abs(cross):
            break
    fraction = denominator / numerator
    return min(1.0, math.exp(log_prefactor) * fraction)


@njit(nogil=True, cache=True, error_model="numpy")
def chi2_sf(g: float, df: float) -> float:
    """Survival function of the χ² distribution: ``P(χ²(df) >= g)``.

    ``g`` is the statistic (``g <= 0`` gives 1), ``df > 0`` the degrees of
    freedom (need not be an integer). NaN for NaN input or ``df <= 0``.
    """
    return gammaincc(0.5 * df, 0.5 * g)


@njit(nogil=True, cache=True, error_model="numpy")
def _log_erfc(x: float) -> tuple[float, float]:
    """``ln erfc(x)`` and its derivative ``-2/√π · exp(-x²) / erfc(x)`` for ``x >= 0``,
    both finite however large ``x`` is."""
    if x < _ERFC_SERIES_FROM:
        value = math.log1p(-math.erf(x)) if x < 0.5 else math.log(math.erfc(x))
        return value, -_TWO_OVER_SQRT_PI * math.exp(-x * x - value)
    # erfc(x) = exp(-x²) / (x √π) · (1 - 1/(2x²) + 3/(2x²)² - 15/(2x²)³ + 105/(2x²)⁴ ...)
    u = 1.0 / (2.0 * x * x)
    series = 1.0 + u * (-1.0 + u * (3.0 + u * (-15.0 + u * 105.0)))
    return -x * x - math.log(x) - _LOG_SQRT_PI + math.log(series), -2.0 * x / series


@njit(nogil=True, cache=True, error_model="numpy")
def chi2_isf_one(log_p: float) -> float:
    """The χ²(1) upper quantile of ``p = exp(log_p)``: ``Q`` with ``P(χ²(1) >= Q) = p``.

    0 for ``log_p >= 0``; NaN for NaN; +Inf for ``log_p = -inf``.
    """
    if math.isnan(log_p):
        return math.nan
    if log_p >= 0.0:
        return 0.0
    if log_p < -1e200:
        # x² would overflow; Q = -2 ln p - ln(-ln p) - ln π + ... is -2 ln p to the last bit.
        return -2.0 * log_p
    # Newton on h(x) = ln erfc(x) - ln p from a point right of the root: there h is
    # negative and concave, so every step stays right of the root and descends to it.
    # For p < 1/e that point is √(-ln p) (erfc(x) < exp(-x²) when x > 1/√π); above,
    # the first step from 0 lands there.
    x = math.sqrt(-log_p) if log_p < -1.0 else 0.0
    for _ in range(_MAX_NEWTON):
        log_erfc, slope = _log_erfc(x)
        step = (log_erfc - log_p) / slope
        if x > 0.0 and step <= 4.0 * _EPS * x:
            break
        x -= step
    return 2.0 * x * x


@njit(nogil=True, cache=True, error_model="numpy")
def _log_extremes_live(m: float, live: float, reference: float) -> float:
    """``ln f(m)``, ``f(m) = C(live, m) / C(live + reference, m)``, for ``0 < m <= live``.

    ``f(m) = Π_{j<m} (live - j) / (reference + live - j)
    = Π_{1<=i<=reference} (live - m + i) / (live + i)``: the shorter product when
    it is of whole numbers and at most 64 factors (exact to rounding), else
    ``lgamma`` (real counts of decayed windows; the error is a few ulps of the
    largest ``lgamma``, far below anything a p-value shows).
    """
    if m <= 64.0 and m == math.floor(m) and m <= reference:
        product = 1.0
        for j in range(int(m)):
            product *= (live - j) / (reference + (live - j))
        if product > 1e-280:
            return math.log(product)
    elif reference <= 64.0 and reference == math.floor(reference):
        product = 1.0
        for i in range(1, int(reference) + 1):
            product *= ((live - m) + i) / (live + i)
        if product > 1e-280:
            return math.log(product)
    return (
        math.lgamma(live + 1.0) - math.lgamma((live - m) + 1.0)
        - math.lgamma(reference + live + 1.0) + math.lgamma(reference + (live - m) + 1.0)
    )


@njit(nogil=True, cache=True, error_model="numpy")
def log_outside_chance(m: float, live: float, reference: float) -> float:
    """``ln`` of the chance that ``m`` or more of ``live`` values lie outside the range of
    ``reference`` other values (all exchangeable): ``(m + 1) f(m) - m f(m + 1)``.

    ``0 <= m <= live``, ``reference > 0``; 0 (chance 1) when ``m <= 0``.
    """
    if m <= 0.0:
        return 0.0
    m = min(m, live)
    # f(m + 1) / f(m) = (live - m) / (reference + live - m) <= 1: the bracket is >= 1.
    rest = live - m
    bracket = (m + 1.0) - m * (rest / (reference + rest))
    return min(_log_extremes_live(m, live, reference) + math.log(bracket), 0.0)


@njit(nogil=True, cache=True, error_model="numpy")
def chi2_sf_array(g: np.ndarray, df: np.ndarray, out: np.ndarray) -> None:
    """Elementwise :func:`chi2_sf` over float64 arrays of one length, into ``out``."""
    for i in range(g.shape[0]):
        out[i] = chi2_sf(g[i], df[i])


def warm_up() -> None:
    """Compile (or load from the cache) every kernel of this module once, on tiny inputs."""
    log_branchless(2.0)
    g = np.array([0.0, 0.5, 3.0])
    df = np.array([1.0, 2.0, 1.0])
    out = np.empty(3)
    chi2_sf_array(g, df, out)
    chi2_sf(1.0, 1.0)
    gammaincc(1.0, 1.0)
    chi2_isf_one(-1.0)
    log_outside_chance(1.0, 10.0, 90.0)
