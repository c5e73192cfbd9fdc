"""Divergence kernels and their public wrappers (docs/divergences.md) against tests/naive.py."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import divergences_one, wasserstein_one
from scipy import stats

import driftmon
from driftmon import divergence
from driftmon.binning import NumericBinner
from driftmon.divergence import (
    METRICS,
    PARALLEL_MIN_BINS,
    PackedDivergence,
    PackedWasserstein,
    divergences,
    wasserstein,
)
from driftmon.quantiles import quantile_edges

LN2 = math.log(2.0)
BASE_SCALED = ("kl", "kl_reverse", "js", "entropy_reference", "entropy_live", "cross_entropy")


# --- random inputs -------------------------------------------------------------


def random_counts_matrix(
    rng: np.random.Generator, n_monitors: int, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[M, K]`` reference and live counts, each row from :func:`random_counts`."""
    rows = [random_counts(rng, n_bins) for _ in range(n_monitors)]
    return np.array([r for r, _ in rows]), np.array([q for _, q in rows])


def random_counts(rng: np.random.Generator, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """One monitor's (reference, live) counts with the shapes that matter.

    Whole counts of very different sizes, a share of empty bins on either or
    both sides, sometimes fractional weights, sometimes live = reference.
    """
    scale = rng.choice([5.0, 50.0, 1e3, 1e6])
    shape = rng.dirichlet(np.full(n_bins, rng.choice([0.3, 1.0, 10.0])))
    reference = rng.poisson(scale * n_bins * shape).astype(np.float64)
    drift = rng.dirichlet(np.full(n_bins, 5.0)) * rng.uniform(0.0, 1.0) + shape
    live = rng.poisson(rng.choice([1.0, 30.0, 1e4]) * n_bins * drift / drift.sum())
    live = live.astype(np.float64)
    reference[rng.random(n_bins) < 0.15] = 0.0
    live[rng.random(n_bins) < 0.15] = 0.0
    kind = rng.integers(0, 10)
    if kind == 0:
        live = reference.copy()
    elif kind == 1:
        reference = reference * rng.uniform(0.1, 3.0)
        live = live * rng.uniform(0.1, 3.0)
    return reference, live


def assert_metrics_match(
    got: dict[str, float], expected: dict[str, float], n_bins: int, context: str
) -> None:
    """Every metric to 1e-12 relative (1e-15 absolute near 0); p_value to 1e-9 absolute."""
    for name in METRICS:
        value, want = got[name], expected[name]
        where = f"{name} ({context}): got {value!r}, naive {want!r}"
        if math.isnan(want) or math.isinf(want):
            assert value == want or (math.isnan(value) and math.isnan(want)), where
        elif name == "p_value":
            assert abs(value - want) <= 1e-9, where
        elif name == "hellinger":
            # naive evaluates 1 - Σ sqrt(p q): its rounding (a few ulps of 1,
            # growing like sqrt(K) with Σ p ≠ 1 in floats) is absolute in the
            # square; the kernel's ½ Σ (√p - √q)² has no such floor (see
            # test_nearly_equal_distributions_are_accurate). Compare squares.
            floor = 2.3e-16 * (4.0 + math.sqrt(n_bins))
            assert abs(value**2 - want**2) <= 1e-12 * want**2 + floor, where
        else:
            assert math.isclose(value, want, rel_tol=1e-12, abs_tol=1e-15), where


@pytest.mark.parametrize("base", ["e", "2"])
@pytest.mark.parametrize("smoothing", [0.0, 0.5, 1.0])
def test_packed_pass_matches_naive_on_random_monitors(smoothing: float, base: str) -> None:
    rng = np.random.default_rng([int(smoothing * 2), base == "2"])
    sizes = np.concatenate([[2, 3, 512], rng.integers(2, 513, size=37)])
    pairs = [random_counts(rng, int(k)) for k in sizes]
    pairs.append((np.zeros(5), np.arange(5.0)))  # R = 0
    pairs.append((np.arange(5.0), np.zeros(5)))  # L = 0
    reference = np.concatenate([r for r, _ in pairs])
    live = np.concatenate([q for _, q in pairs])
    offsets = np.concatenate([[0], np.cumsum([r.size for r, _ in pairs])])
    engine = PackedDivergence(reference, offsets, np.full(len(pairs), smoothing), base)
    out = engine.evaluate(live)
    assert out.shape == (len(METRICS), len(pairs))
    for m, (r, q) in enumerate(pairs):
        expected = divergences_one(r, q, smoothing, base)
        got = {name: float(out[row, m]) for row, name in enumerate(METRICS)}
        assert_metrics_match(got, expected, r.size, f"monitor {m}, K={r.size}")
    assert np.isnan(out[:, -2:]).all()
    assert not np.isnan(out[:, :-2]).any()


@pytest.mark.parametrize("base", ["e", "2", 2])
def test_divergences_matches_naive_for_a_batch_of_one_k(base: str | int) -> None:
    rng = np.random.default_rng(7)
    for n_bins in (2, 16, 64, 511):
        pairs = [random_counts(rng, n_bins) for _ in range(6)]
        reference = np.stack([r for r, _ in pairs])
        live = np.stack([q for _, q in pairs])
        for smoothing in (0.0, 0.5, 1.0):
            result = divergences(reference, live, smoothing=smoothing, base=base)
            assert set(result) == set(METRICS)
            for m, (r, q) in enumerate(pairs):
                expected = divergences_one(r, q, smoothing, str(base))
                got = {name: float(result[name][m]) for name in METRICS}
                assert_metrics_match(got, expected, n_bins, f"K={n_bins}, a={smoothing}, row {m}")


def test_design_worked_example_to_six_digits() -> None:
    p, q1, q2 = [0.9, 0.1], [0.6, 0.4], [0.99, 0.01]
    first = divergences(p, q1, smoothing=0)
    second = divergences(p, q2, smoothing=0)
    assert round(float(first["kl"]), 6) == 0.226289
    assert round(float(second["kl"]), 6) == 0.144479
    assert round(float(first["kl_reverse"]), 6) == 0.311239
    assert round(float(first["js"]), 6) == 0.063288
    # the same from counts, as the README's one-liner prints it
    counts = driftmon.divergences([[9, 1]], [[6, 4]], smoothing=0)
    assert round(float(counts["kl"][0]), 6) == 0.226289


def test_shapes_of_results() -> None:
    one = divergences([3, 1, 0], [1, 1, 1])
    assert all(one[name].shape == () for name in METRICS)
    batch = divergences([[3, 1, 0], [0, 0, 0]], [[1, 1, 1], [2, 0, 0]])
    assert all(batch[name].shape == (2,) for name in METRICS)
    assert np.isnan([batch[name][1] for name in METRICS]).all()
    empty = divergences(np.zeros((0, 4)), np.zeros((0, 4)))
    assert all(empty[name].shape == (0,) for name in METRICS)


def test_accepts_every_real_array_like() -> None:
    expected = divergences(np.array([4.0, 2.0, 0.0]), np.array([1.0, 2.0, 3.0]))
    for reference, live in [
        ([4, 2, 0], [1, 2, 3]),
        ((4.0, 2.0, 0.0), (1.0, 2.0, 3.0)),
        (np.array([4, 2, 0], dtype=np.uint8), np.array([1, 2, 3], dtype=np.int32)),
        (np.array([4, 2, 0], dtype=np.float32), np.array([1, 2, 3], dtype=np.float16)),
        (np.array([[4, 2, 0]])[0], np.array([[1, 0], [2, 0], [3, 0]])[:, 0]),  # strided view
    ]:
        got = divergences(reference, live)
        for name in METRICS:
            assert got[name] == expected[name], name


def test_base_two_is_nats_over_ln2_and_leaves_psi_hellinger_p_value_alone() -> None:
    rng = np.random.default_rng(3)
    reference, live = rng.poisson(20, (5, 30)), rng.poisson(20, (5, 30))
    nats = divergences(reference, live)
    for base in ("2", 2, np.int64(2)):
        bits = divergences(reference, live, base=base)  # type: ignore[arg-type]
        for name in METRICS:
            scale = 1.0 / LN2 if name in BASE_SCALED else 1.0
            np.testing.assert_allclose(bits[name], nats[name] * scale, rtol=1e-15)


def test_identical_and_proportional_counts() -> None:
    reference = np.array([[5.0, 0.0, 12.0, 3.0, 1.0], [7.0, 7.0, 0.0, 1.0, 2.0]])
    for smoothing in (0.5, 0.0):
        result = divergences(reference, reference.copy(), smoothing=smoothing)
        for name in ("kl", "kl_reverse", "js", "psi", "hellinger"):
            assert np.all(result[name] == 0.0), name
        assert np.all(result["p_value"] == 1.0)
        np.testing.assert_array_equal(result["entropy_reference"], result["cross_entropy"])
    # Proportional tables: the G statistic is exactly 0, so p is exactly 1
    # (no rounding noise posing as evidence of drift), even for huge windows.
    for factor in (3.0, 1000.0, 2.0**30):
        result = divergences(reference, factor * reference, smoothing=0.0)
        assert np.all(result["p_value"] == 1.0), factor
        assert np.all(result["kl"] <= 1e-15)


def test_infinity_only_where_smoothing_zero_forces_it() -> None:
    result = divergences([[5, 5, 0], [5, 0, 5]], [[5, 0, 5], [5, 0, 5]], smoothing=0)
    assert result["kl"][0] == math.inf
    assert result["kl_reverse"][0] == math.inf
    assert result["psi"][0] == math.inf
    assert result["cross_entropy"][0] == math.inf
    assert math.isfinite(result["js"][0]) and math.isfinite(result["hellinger"][0])
    assert np.isfinite([result[name][1] for name in METRICS]).all()
    smoothed = divergences([[5, 5, 0]], [[5, 0, 5]], smoothing=1e-300)
    assert np.isfinite([smoothed[name][0] for name in METRICS]).all()


def test_g_test_p_value_of_a_known_table() -> None:
    # 2x2 table [[30, 10], [20, 40]]: G = 2 Σ O ln(O/E) by hand.
    observed = np.array([[30.0, 10.0], [20.0, 40.0]])
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0) / observed.sum()
    g = 2.0 * float(np.sum(observed * np.log(observed / expected)))
    result = divergences(observed[0], observed[1])
    assert abs(float(result["p_value"]) - math.erfc(math.sqrt(g / 2.0))) < 1e-12
    # bins empty on both sides add nothing to G; the bins the reference has none of
    # take one degree of freedom together, whether or not the window has values there
    # (like a bin the window happens to miss): P(χ²(2) >= G) = exp(-G/2)
    padded = divergences([30, 0, 10, 0], [20, 0, 40, 0])
    assert abs(float(padded["p_value"]) - math.exp(-g / 2.0)) < 1e-12
    # a single bin, every value in it: nothing to test
    assert divergences([8], [3])["p_value"] == 1.0
    assert divergences([0, 8, 0], [0, 3, 0])["p_value"] == 1.0


def test_p_value_scores_live_values_where_the_reference_has_none_exactly() -> None:
    # One populated bin: p is the exact chance that one of 4 live values lies outside the
    # range of 8 reference values, all 12 exchangeable: 2 (4/12) - (4/12)(3/11).
    result = divergences([0, 8, 0], [0, 3, 1])
    assert abs(float(result["p_value"]) - (2 * 4 / 12 - (4 / 12) * (3 / 11))) < 1e-15
    # With more bins the exact chance enters as its χ²(1) quantile, beside the G of the
    # populated bins (with the live total that lies in them).
    reference = np.array([0.0, 500.0, 300.0, 200.0, 0.0])
    live = np.array([1.0, 40.0, 35.0, 20.0, 2.0])
    inside = live[1:4]
    table = np.array([reference[1:4], inside])
    expected_counts = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    g = 2.0 * float(np.sum(table * np.log(table / expected_counts)))
    total = reference.sum() + live.sum()
    f3 = (98 * 97 * 96) / (total * (total - 1) * (total - 2))
    f4 = f3 * 95 / (total - 3)
    chance = 4 * f3 - 3 * f4
    want = stats.chi2.sf(g + stats.chi2.isf(chance, 1), 3)
    assert abs(float(divergences(reference, live)["p_value"]) - want) < 1e-12


def test_p_value_keeps_its_level_with_edges_learned_from_the_reference() -> None:
    """No drift, quantile edges learned from the reference they bin: a learned layout
    leaves the reference's underflow and overflow empty, and live values past the
    reference's range land there (in 1 in 6 windows of 10 000 rows against a 100 000-row
    reference). The χ² approximation scored one such value as p ≈ 0.0024 at 1 000 rows
    (the exact chance is ≈ 2 %), so p < 0.01 held in 1.2–1.7 % of these checks; the
    exact treatment keeps it at or below the level."""
    rng = np.random.default_rng(20261206)
    for rows in (1_000, 10_000):
        below = 0
        checks = 0
        for _ in range(10):
            values = rng.standard_normal(100_000)
            edges = quantile_edges(values, 10)
            binner = NumericBinner.from_edges(edges)
            reference = np.zeros(binner.n_bins)
            binner.add(values, reference)
            cdf = stats.norm.cdf(edges)
            chances = np.zeros(binner.n_bins)
            chances[0] = cdf[0]
            chances[1 : len(edges)] = np.diff(cdf)
            chances[len(edges)] = 1.0 - cdf[-1]
            live = rng.multinomial(rows, chances / chances.sum(), size=2_000).astype(np.float64)
            p = divergences(np.broadcast_to(reference, live.shape), live)["p_value"]
            below += int((p < 0.01).sum())
            checks += live.shape[0]
        assert below / checks <= 0.01, (rows, below / checks)


def _exact_divergences(reference: list[int], live: list[int], smoothing: int) -> dict[str, float]:
    """KL, JS and Hellinger with 60-digit decimals: an oracle free of float cancellation."""
    with localcontext() as context:
        context.prec = 60
        a = Decimal(smoothing)
        big_r = Decimal(sum(reference)) + len(reference) * a
        big_l = Decimal(sum(live)) + len(live) * a
        p = [(Decimal(r) + a) / big_r for r in reference]
        q = [(Decimal(x) + a) / big_l for x in live]
        half = Decimal(1) / 2
        m = [(pi + qi) * half for pi, qi in zip(p, q, strict=True)]
        kl = sum(pi * (pi / qi).ln() for pi, qi in zip(p, q, strict=True))
        js = half * sum(
            pi * (pi / mi).ln() + qi * (qi / mi).ln() for pi, qi, mi in zip(p, q, m, strict=True)
        )
        h2 = 1 - sum((pi * qi).sqrt() for pi, qi in zip(p, q, strict=True))
        return {"kl": float(kl), "js": float(js), "hellinger": float(h2.sqrt())}


def test_nearly_equal_distributions_are_accurate() -> None:
    # Large windows that barely drift: the divergences are ~1e-10, far below
    # the terms they are summed from. KL and JS keep an absolute error of a
    # few 1e-17 (one rounding per term); the Hellinger distance, ~1e-5 here,
    # stays right to 1e-9 relative, where 1 - Σ sqrt(p q) would have lost
    # half its digits (its square is ~1e-10 next to a rounding of ~1e-16).
    rng = np.random.default_rng(11)
    for _ in range(5):
        reference = rng.integers(10**6, 10**7, size=40)
        live = reference + rng.integers(-300, 300, size=40)
        got = divergences(reference, live, smoothing=1.0)
        exact = _exact_divergences(reference.tolist(), live.tolist(), 1)
        assert 0.0 < exact["kl"] < 1e-8
        assert abs(float(got["kl"]) - exact["kl"]) <= 2e-16
        assert abs(float(got["js"]) - exact["js"]) <= 2e-16
        assert math.isclose(float(got["hellinger"]), exact["hellinger"], rel_tol=1e-9)


def test_scale_invariance_down_to_subnormal_counts() -> None:
    # Without smoothing every metric but the p-value depends on proportions
    # only, and scaling by a power of two is exact: subnormal counts (whose
    # totals have no finite inverse, so the careful path runs and divides
    # instead of multiplying by the inverse) must give the same numbers as
    # their normal-sized originals, to the last bit or two.
    rng = np.random.default_rng(21)
    for _ in range(20):
        n_bins = int(rng.integers(2, 40))
        reference = rng.integers(0, 50, n_bins).astype(np.float64)
        live = rng.integers(0, 50, n_bins).astype(np.float64)
        reference[0] += 1.0
        live[1] += 1.0
        original = divergences(reference, live, smoothing=0.0)
        for exponent in (-1000, -1060):
            scaled = divergences(
                np.ldexp(reference, exponent), np.ldexp(live, exponent), smoothing=0.0
            )
            for name in METRICS[:-1]:
                np.testing.assert_allclose(
                    scaled[name], original[name], rtol=1e-14, atol=1e-16, err_msg=name
                )


def test_careful_path_equals_fast_path_where_nothing_underflows() -> None:
    kernels = divergence._kernels
    rng = np.random.default_rng(23)
    for smoothing in (0.0, 0.5, 1.0):
        for n_bins in (1, 7, 8, 9, 64, 333):
            reference, live = random_counts(rng, n_bins)
            reference[0] += 1.0
            live[-1] += 1.0
            offsets = np.array([0, n_bins], dtype=np.int64)
            engine = PackedDivergence(reference, offsets, np.array([smoothing]))
            ref_total, live_total = reference.sum(), live.sum()
            denominator = live_total + n_bins * smoothing
            inverse = kernels._safe_inverse(denominator)
            share_r = kernels._log_quotient(ref_total, ref_total + live_total)
            share_l = kernels._log_quotient(live_total, ref_total + live_total)
            fast = np.full((kernels._N_TERMS, n_bins), np.nan)
            careful = np.full((kernels._N_TERMS, n_bins), np.nan)
            ref_denominator = ref_total + n_bins * smoothing
            ref_inverse = kernels._safe_inverse(ref_denominator)
            suspicious = kernels._monitor_terms_fast(
                0, n_bins, live, smoothing, inverse, ref_inverse, share_r, share_l,
                engine.reference_bins, fast,
            )
            assert suspicious == 0
            kernels._monitor_terms_careful(
                0, n_bins, live, smoothing, denominator, inverse, float(np.log(denominator)),
                ref_denominator, ref_inverse, share_r, share_l, engine.reference_bins, careful,
            )
            np.testing.assert_array_equal(fast, careful)


# --- hypothesis properties -------------------------------------------------------

count_lists = st.integers(min_value=1, max_value=24).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k),
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k),
    )
)
fractional_lists = st.integers(min_value=1, max_value=24).flatmap(
    lambda k: st.tuples(
        st.lists(st.floats(0.0, 1e9), min_size=k, max_size=k),
        st.lists(st.floats(0.0, 1e9), min_size=k, max_size=k),
    )
)
# any finite non-negative magnitude, subnormals included, with exact zeros
wild_lists = st.integers(min_value=1, max_value=16).flatmap(
    lambda k: st.tuples(
        st.lists(st.one_of(st.just(0.0), st.floats(0.0, 1e300)), min_size=k, max_size=k),
        st.lists(st.one_of(st.just(0.0), st.floats(0.0, 1e300)), min_size=k, max_size=k),
    )
)
smoothings = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 100.0))
bases = st.sampled_from(["e", "2"])


@settings(max_examples=300, deadline=None)
@given(pair=st.one_of(count_lists, fractional_lists, wild_lists), smoothing=smoothings, base=bases)
def test_properties_of_every_pair(
    pair: tuple[list[float], list[float]], smoothing: float, base: str
) -> None:
    reference, live = (np.array(side, dtype=np.float64) for side in pair)
    result = {name: float(v) for name, v in divergences(reference, live, smoothing=smoothing,
                                                         base=base).items()}
    swapped = divergences(live, reference, smoothing=smoothing, base=base)
    scale = 1.0 / LN2 if base == "2" else 1.0

    empty_side = reference.sum() == 0.0 or live.sum() == 0.0
    assert all(math.isnan(result[name]) == empty_side for name in METRICS)
    if empty_side:
        return

    for name in ("kl", "kl_reverse", "js", "psi", "entropy_reference", "entropy_live"):
        assert result[name] >= 0.0, name
    assert result["js"] <= LN2 * scale
    assert 0.0 <= result["hellinger"] <= 1.0
    assert 0.0 <= result["p_value"] <= 1.0
    assert math.isclose(result["js"], float(swapped["js"]), rel_tol=1e-12, abs_tol=1e-300)
    assert math.isclose(result["kl"], float(swapped["kl_reverse"]), rel_tol=1e-12)
    assert math.isclose(
        result["psi"], (result["kl"] + result["kl_reverse"]) / scale, rel_tol=1e-12
    ) or (math.isinf(result["psi"]) and math.isinf(result["kl"] + result["kl_reverse"]))

    forced_inf_kl = smoothing == 0.0 and bool(np.any((reference > 0) & (live == 0)))
    forced_inf_reverse = smoothing == 0.0 and bool(np.any((live > 0) & (reference == 0)))
    assert math.isinf(result["kl"]) == forced_inf_kl
    assert math.isinf(result["kl_reverse"]) == forced_inf_reverse
    assert math.isinf(result["psi"]) == (forced_inf_kl or forced_inf_reverse)
    assert math.isinf(result["cross_entropy"]) == forced_inf_kl
    for name in ("js", "hellinger", "entropy_reference", "entropy_live", "p_value"):
        assert math.isfinite(result[name]), name


@settings(max_examples=150, deadline=None)
@given(side=st.lists(st.floats(0.0, 1e12), min_size=1, max_size=30), smoothing=smoothings)
def test_a_distribution_does_not_diverge_from_itself(side: list[float], smoothing: float) -> None:
    result = divergences(side, side, smoothing=smoothing)
    if sum(side) == 0.0:
        assert all(math.isnan(float(result[name])) for name in METRICS)
        return
    for name in ("kl", "kl_reverse", "js", "psi", "hellinger"):
        assert result[name] == 0.0, name
    assert result["p_value"] == 1.0


@settings(max_examples=100, deadline=None)
@given(
    pair=count_lists,
    smoothing=st.floats(min_value=0.0, max_value=1e-300, allow_subnormal=True),
)
def test_tiny_positive_smoothing_never_gives_infinity(
    pair: tuple[list[int], list[int]], smoothing: float
) -> None:
    reference, live = pair
    if sum(reference) == 0 or sum(live) == 0 or smoothing == 0.0:
        return
    result = divergences(reference, live, smoothing=smoothing)
    assert np.isfinite([float(result[name]) for name in METRICS]).all()


# --- packed layout ---------------------------------------------------------------


def _mixed_layout(rng: np.random.Generator, n_monitors: int) -> tuple[
    list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray
]:
    pairs = [random_counts(rng, int(rng.integers(1, 70))) for _ in range(n_monitors)]
    pairs[1] = (np.zeros_like(pairs[1][0]), pairs[1][1])
    offsets = np.concatenate([[0], np.cumsum([r.size for r, _ in pairs])]).astype(np.int64)
    smoothing = rng.choice([0.0, 0.5, 1.0], size=n_monitors)
    return pairs, offsets, smoothing


def test_packed_with_mixed_k_equals_per_monitor_divergences() -> None:
    rng = np.random.default_rng(5)
    pairs, offsets, smoothing = _mixed_layout(rng, 60)
    engine = PackedDivergence(
        np.concatenate([r for r, _ in pairs]), offsets, smoothing, base="2"
    )
    out = np.full((len(METRICS), len(pairs)), -1.0)
    returned = engine.evaluate(np.concatenate([q for _, q in pairs]), out=out)
    assert returned is out
    for m, (r, q) in enumerate(pairs):
        alone = divergences(r, q, smoothing=float(smoothing[m]), base="2")
        np.testing.assert_array_equal(out[:, m], [alone[name] for name in METRICS])


def test_parallel_pass_equals_serial_pass() -> None:
    rng = np.random.default_rng(9)
    pairs, offsets, smoothing = _mixed_layout(rng, 700)
    reference = np.concatenate([r for r, _ in pairs])
    live = np.concatenate([q for _, q in pairs])
    assert reference.size >= PARALLEL_MIN_BINS
    engine = PackedDivergence(reference, offsets, smoothing)
    parallel = engine.evaluate(live)
    serial = np.empty_like(parallel)
    divergence._kernels.divergence_pass(
        live, engine.bin_offsets, engine.smoothing, engine.reference_bins,
        engine.reference_monitors, engine.log_scale, serial,
    )
    np.testing.assert_array_equal(parallel, serial)


def test_packed_reference_is_cached_and_evaluate_reusable() -> None:
    reference = np.array([4.0, 1.0, 0.0, 2.0, 2.0, 2.0])
    offsets = np.array([0, 3, 6])
    engine = PackedDivergence(reference, offsets, np.array([0.5, 0.5]))
    reference[:] = 0.0  # the engine keeps its own copy of what it needs
    first = engine.evaluate(np.array([1.0, 1.0, 1.0, 0.0, 3.0, 3.0]))
    second = engine.evaluate(np.array([4.0, 1.0, 0.0, 2.0, 2.0, 2.0]))
    np.testing.assert_array_equal(
        first[:, 0], [divergences([4, 1, 0], [1, 1, 1])[name] for name in METRICS]
    )
    assert second[0, 0] == 0.0 and second[0, 1] == 0.0


# --- wasserstein -----------------------------------------------------------------


def random_edges(rng: np.random.Generator, n_edges: int) -> np.ndarray:
    return np.cumsum(rng.uniform(0.01, 3.0, n_edges)) - rng.uniform(0.0, 50.0)


def test_wasserstein_matches_naive() -> None:
    rng = np.random.default_rng(13)
    for n_edges in [2, 3, 8, 21, 100, 511]:
        edges = random_edges(rng, n_edges)
        pairs = [random_counts(rng, n_edges + 1) for _ in range(8)]
        reference = np.stack([r for r, _ in pairs])
        live = np.stack([q for _, q in pairs])
        got = wasserstein(reference, live, edges)
        assert got.shape == (8,)
        for m, (r, q) in enumerate(pairs):
            want = wasserstein_one(r, q, edges)
            if math.isnan(want):
                assert math.isnan(got[m])
            else:
                assert math.isclose(got[m], want, rel_tol=1e-12, abs_tol=1e-15), (got[m], want)
        single = wasserstein(reference[0], live[0], edges)
        assert single.shape == () and (single == got[0] or np.isnan(got[0]))


def test_wasserstein_takes_many_monitors_with_their_own_edges_in_one_call() -> None:
    rng = np.random.default_rng(17)
    all_edges = [random_edges(rng, int(rng.integers(2, 40))) for _ in range(20)]
    pairs = [random_counts(rng, e.size + 1) for e in all_edges]
    alone = np.array(
        [float(wasserstein(r, q, e)) for (r, q), e in zip(pairs, all_edges, strict=True)]
    )
    for (r, q), e, got in zip(pairs, all_edges, alone, strict=True):
        want = wasserstein_one(r, q, e)
        assert (math.isnan(want) and math.isnan(got)) or math.isclose(got, want, rel_tol=1e-12)
    packed_reference = np.concatenate([r for r, _ in pairs])
    packed_live = np.concatenate([q for _, q in pairs])
    packed = wasserstein(packed_reference, packed_live, all_edges)
    listed = wasserstein([r for r, _ in pairs], [q.tolist() for _, q in pairs], all_edges)
    np.testing.assert_array_equal(packed, alone)
    np.testing.assert_array_equal(listed, alone)
    # The same number of edges per monitor: 2-D edges and (M, K) counts.
    rows = np.array([random_edges(rng, 9) for _ in range(6)])
    grid = [random_counts(rng, 10) for _ in range(6)]
    reference = np.array([r for r, _ in grid])
    live = np.array([q for _, q in grid])
    by_row = wasserstein(reference, live, rows)
    assert by_row.shape == (6,)
    for m in range(6):
        np.testing.assert_array_equal(by_row[m], wasserstein(reference[m], live[m], rows[m]))
    np.testing.assert_array_equal(wasserstein(reference.ravel(), live.ravel(), list(rows)), by_row)


@pytest.mark.parametrize(
    ("reference", "live", "edges", "match"),
    [
        ([1] * 7, [1] * 7, [[0.0, 1.0], [0.0, 2.0, 1.0]], r"edges\[1\]: .* strictly increasing"),
        ([1] * 7, [1] * 7, [[0.0, 1.0], [0.0, math.nan, 1.0]], r"edges\[1\]: .* finite"),
        ([1] * 7, [1] * 7, [[0.0, 1.0], [0.0]], r"edges\[1\]: need a 1-D array of at least 2"),
        ([1] * 7, [1] * 7, [[0.0, 1.0], ["a", "b"]], r"edges\[1\]: need a 1-D array"),
        ([1] * 6, [1] * 7, [[0.0, 1.0], [0.0, 1.0, 2.0]], r"reference: shape \(6,\) does not fit"),
        ([1] * 7, [1] * 8, [[0.0, 1.0], [0.0, 1.0, 2.0]], r"live: shape \(8,\) does not fit"),
        ([1, 1, -1, 1, 1, 1, 1], [1] * 7, [[0.0, 1.0], [0.0, 1.0, 2.0]],
         r"reference: counts must be >= 0, got -1\.0 at index \(2,\)"),
        (np.ones((2, 4)), np.ones((2, 4)), np.array([[0.0, 1.0], [1.0, 2.0]]),
         r"reference: shape \(2, 4\) does not fit 2 edge arrays; .* or shape \(2, 3\)"),
    ],
)
def test_bad_per_monitor_wasserstein_input_is_rejected(
    no_jit: None, reference: object, live: object, edges: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        wasserstein(reference, live, edges)


def test_wasserstein_by_hand_and_its_nan_cases() -> None:
    edges = [0.0, 1.0, 2.0]  # positions 0, 0.5, 1.5, 2
    # reference all at 0.5 and 1.5 equally: mean 1, std 0.5; live all at 1.5:
    # W1 = 0.5 * (1.5 - 0.5) = 0.5 -> 1 reference std
    assert float(wasserstein([0, 1, 1, 0], [0, 0, 3, 0], edges)) == pytest.approx(1.0, rel=1e-15)
    assert math.isnan(float(wasserstein([0, 0, 0, 0], [0, 0, 3, 0], edges)))
    assert math.isnan(float(wasserstein([0, 1, 1, 0], [0, 0, 0, 0], edges)))
    assert math.isnan(float(wasserstein([0, 5, 0, 0], [0, 0, 3, 0], edges)))  # std 0
    assert float(wasserstein([2, 1, 1, 5], [2, 1, 1, 5], edges)) == 0.0


def test_packed_wasserstein_equals_per_monitor_wasserstein() -> None:
    rng = np.random.default_rng(17)
    blocks: list[np.ndarray] = []
    live_blocks: list[np.ndarray] = []
    starts: list[int] = []
    all_edges: list[np.ndarray] = []
    position = 0
    for j in range(12):
        if j % 3 == 0:  # a categorical monitor's bins in between
            r, q = random_counts(rng, 7)
            blocks.append(r)
            live_blocks.append(q)
            position += 7
        n_edges = int(rng.integers(2, 40))
        edges = random_edges(rng, n_edges)
        r, q = random_counts(rng, n_edges + 3)  # value bins, missing, invalid
        blocks.append(r)
        live_blocks.append(q)
        starts.append(position)
        all_edges.append(edges)
        position += n_edges + 3
    engine = PackedWasserstein(np.concatenate(blocks), np.array(starts), all_edges)
    live = np.concatenate(live_blocks)
    got = engine.evaluate(live)
    reference = np.concatenate(blocks)
    for j, (start, edges) in enumerate(zip(starts, all_edges, strict=True)):
        stop = start + edges.size + 1
        alone = wasserstein(reference[start:stop], live[start:stop], edges)
        np.testing.assert_array_equal(got[j], alone)


# --- validation ------------------------------------------------------------------


@pytest.fixture
def no_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any kernel call fail loudly, to prove validation happens before JIT code."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a kernel ran before validation")

    for name in (
        "prepare_reference",
        "divergence_pass",
        "divergence_pass_parallel",
        "prepare_wasserstein_reference",
        "wasserstein_pass",
        "one_shot_pass",
        "one_shot_pass_parallel",
    ):
        monkeypatch.setattr(divergence._kernels, name, forbidden)


@pytest.mark.parametrize(
    ("reference", "live", "match"),
    [
        ([1, 1, 2], [1, 1], r"live: shape \(2,\) does not match reference shape \(3,\)"),
        ([1, 1, 2], [[1, 1, 1], [0, -2, 0]], r"live: shape \(2, 3\) does not match"),
        ([[1, 1, 2]], [1, 1, 2], r"live: shape \(3,\) does not match reference shape \(1, 3\)"),
        (5, 5, r"reference: must be 1-D or 2-D, got 0-D"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2)), r"reference: must be 1-D or 2-D, got 3-D"),
        ([], [], r"reference: needs at least one bin \(K >= 1\)"),
        (np.ones((3, 0)), np.ones((3, 0)), r"reference: needs at least one bin"),
        (["a", "b"], [1, 2], r"reference: counts must be real numbers .* dtype <U1"),
        ([1, 2], ["1", "2"], r"live: counts must be real numbers"),
        ([1, None], [1, 2], r"reference: counts must be real numbers .* dtype object"),
        ([1 + 1j, 2], [1, 2], r"reference: counts must be real numbers .* complex128"),
        ([True, False], [1, 2], r"reference: counts must be real numbers .* dtype bool"),
        ([[1, 2], [3]], [[1, 2], [3, 4]], r"reference: cannot be read as an array of counts"),
    ],
)
def test_bad_counts_are_rejected_naming_the_argument(
    no_jit: None, reference: object, live: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        divergences(reference, live)


@pytest.mark.parametrize(
    ("reference", "live", "message"),
    [
        ([1, -1, 2], [1, 1, 1], "reference: counts must be >= 0, got -1.0 at index (1,)"),
        ([[1, 1, 1], [1, 1, 2]], [[1, 1, 1], [0, -2, 0]],
         "live: counts must be >= 0, got -2.0 at index (1, 1)"),
        ([1, math.nan, 2], [1, 1, 1], "reference: counts must be finite, got nan at index (1,)"),
        ([1, 1, 2], [1, math.inf, 1], "live: counts must be finite, got inf at index (1,)"),
        ([1, 1, -math.inf], [1, 1, 1],
         "reference: counts must be finite, got -inf at index (2,)"),
        # The first bad row wins; within a row the reference before the live counts.
        ([[1, 1], [1, -3], [-4, 1]], [[1, 1], [-1, 1], [1, 1]],
         "reference: counts must be >= 0, got -3.0 at index (1, 1)"),
        ([[1, 1], [1, 1], [-4, 1]], [[1, 1], [-1, 1], [1, 1]],
         "live: counts must be >= 0, got -1.0 at index (1, 0)"),
        ([1e308, 1e308], [1, 1],
         "reference: counts (plus smoothing) too large, their total overflows float64; "
         "rescale them"),
        ([[1, 1], [1, 1]], [[1, 1], [1e308, 1e308]],
         "live: counts (plus smoothing) too large, their total overflows float64 in row 1; "
         "rescale them"),
        ([9e307, 0], [9e307, 0],
         "live: counts (plus smoothing) too large, their total overflows float64; rescale them"),
    ],
)
def test_bad_count_values_are_found_by_the_pass_naming_argument_and_index(
    reference: object, live: object, message: str
) -> None:
    """The counts are checked in the kernel pass that reads them; nothing is returned."""
    with pytest.raises(ValueError) as caught:
        divergences(reference, live)
    assert str(caught.value) == message


@pytest.mark.parametrize("side", ["reference", "live"])
def test_the_threaded_pass_names_the_first_bad_count_too(side: str) -> None:
    rng = np.random.default_rng(4)
    reference, live = random_counts_matrix(rng, 9000, 16)
    assert reference.size >= divergence.ONE_SHOT_PARALLEL_MIN_BINS
    bad = reference if side == "reference" else live
    bad[8999, 3] = -1.0
    bad[1234, 15] = math.nan  # the first bad row, in some chunk other than the last
    with pytest.raises(ValueError) as caught:
        divergences(reference, live)
    assert str(caught.value) == f"{side}: counts must be finite, got nan at index (1234, 15)"


def test_the_one_shot_pass_equals_the_engine_pass_bit_for_bit() -> None:
    rng = np.random.default_rng(6)
    for n_monitors, n_bins in ((1, 7), (50, 16), (9000, 16)):
        reference, live = random_counts_matrix(rng, n_monitors, n_bins)
        reference[::7, 2] = 0.0
        live[::5, 1] = 0.0
        for smoothing in (0.0, 0.5):
            got = divergences(reference, live, smoothing=smoothing)
            offsets = np.arange(n_monitors + 1, dtype=np.int64) * n_bins
            engine = PackedDivergence(reference.ravel(), offsets, np.full(n_monitors, smoothing))
            table = engine.evaluate(np.ascontiguousarray(live.ravel()))
            for row, name in enumerate(divergence.METRICS):
                np.testing.assert_array_equal(got[name], table[row], err_msg=name)


@pytest.mark.parametrize(
    ("smoothing", "match"),
    [
        (-0.5, r"smoothing: must be a finite real number >= 0 .* got -0\.5"),
        (math.nan, r"smoothing: .* got nan"),
        (math.inf, r"smoothing: .* got inf"),
        ("0.5", r"smoothing: .* got '0\.5' of type str"),
        (True, r"smoothing: .* of type bool"),
        (None, r"smoothing: .* of type NoneType"),
    ],
)
def test_bad_smoothing_is_rejected(no_jit: None, smoothing: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        divergences([1, 2, 3], [3, 2, 1], smoothing=smoothing)  # type: ignore[arg-type]


def test_a_smoothing_whose_total_overflows_is_rejected_by_the_pass() -> None:
    with pytest.raises(ValueError, match=r"reference: counts \(plus smoothing\) too large"):
        divergences([1, 2, 3], [3, 2, 1], smoothing=1e308)


@pytest.mark.parametrize("base", ["10", "E", "bits", 2.0, 10, True, None, "", math.e])
def test_unknown_base_is_rejected(no_jit: None, base: object) -> None:
    with pytest.raises(ValueError, match=r'base: must be "e" \(nats\) or "2" \(bits\), got'):
        divergences([1, 2, 3], [3, 2, 1], base=base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reference", "live", "edges", "match"),
    [
        ([1, 1, 1, 1], [1, 1, 1, 1], [0.0, 2.0, 1.0], r"edges: bin edges must be strictly"),
        ([1, 1, 1, 1], [1, 1, 1, 1], [0.0, 1.0, 1.0], r"edges: bin edges must be strictly"),
        ([1, 1, 1, 1], [1, 1, 1, 1], [0.0, 1.0, math.inf], r"edges: bin edges must be finite"),
        ([1, 1], [1, 1], [0.0], r"edges: need a 1-D array of at least 2 real bin edges"),
        ([1, 1, 1], [1, 1, 1], ["a", "b"], r"edges: need a 1-D array"),
        ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0.0, 1.0, 2.0], r"reference: 5 value bins but 3 edges"),
        ([1, 1, 1, 1], [1, 1, 1], [0.0, 1.0, 2.0], r"live: shape \(3,\) does not match"),
        ([1, -1, 1, 1], [1, 1, 1, 1], [0.0, 1.0, 2.0], r"reference: counts must be >= 0"),
        ([1, 1, 1, 1], ["x"] * 4, [0.0, 1.0, 2.0], r"live: counts must be real numbers"),
    ],
)
def test_bad_wasserstein_input_is_rejected(
    no_jit: None, reference: object, live: object, edges: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        wasserstein(reference, live, edges)


@pytest.mark.parametrize(
    ("reference", "offsets", "smoothing", "match"),
    [
        (np.ones(6), np.array([0, 4, 3, 6]), 0.5, r"bin_offsets: must be strictly increasing"),
        (np.ones(6), np.array([0, 3, 3, 6]), 0.5, r"bin_offsets: must be strictly increasing"),
        (np.ones(6), np.array([1, 3, 6]), 0.5, r"bin_offsets: must start at 0 and end at"),
        (np.ones(6), np.array([0, 3, 5]), 0.5, r"bin_offsets: must start at 0 and end at .* = 6"),
        (np.ones(6), np.array([0.0, 3.0, 6.0]), 0.5, r"bin_offsets: need a 1-D integer array"),
        (np.ones(6), np.array([0, 3, 6]), np.array([0.5]), r"smoothing: need one pseudo-count"),
        (np.ones(6), np.array([0, 3, 6]), np.array([0.5, -1.0]), r"smoothing: every pseudo"),
        (np.ones(6), np.array([0, 3, 6]), np.array([0.5, math.nan]), r"smoothing: every pseudo"),
        (-np.ones(6), np.array([0, 3, 6]), 0.5, r"reference_counts: counts must be >= 0"),
        (np.ones((2, 3)), np.array([0, 3, 6]), 0.5, r"reference_counts: must be 1-D"),
        (np.full(6, 1e308), np.array([0, 3, 6]), 0.5, r"reference_counts: a monitor's total"),
        (np.ones(6), np.array([0, 3, 6]), np.array([0.5, 1e308]), r"reference_counts: a mon"),
    ],
)
def test_packed_divergence_validates_its_layout(
    no_jit: None, reference: np.ndarray, offsets: np.ndarray, smoothing: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        PackedDivergence(reference, offsets, smoothing)  # type: ignore[arg-type]


def test_packed_divergence_checks_live_and_out_cheaply() -> None:
    engine = PackedDivergence(np.ones(6), np.array([0, 3, 6]), np.array([0.5, 0.5]))
    for live in (np.ones(5), np.ones(6, dtype=np.float32), [1.0] * 6, np.ones(12)[::2]):
        with pytest.raises(ValueError, match=r"live_counts: need a C-contiguous float64"):
            engine.evaluate(live)  # type: ignore[arg-type]
    for out in (np.empty((9, 3)), np.empty((2, 9)).T, np.empty((9, 2), dtype=np.float32)):
        with pytest.raises(ValueError, match=r"out: need a writeable C-contiguous float64"):
            engine.evaluate(np.ones(6), out=out)
    with pytest.raises(ValueError, match=r"base: must be"):
        PackedDivergence(np.ones(6), np.array([0, 3, 6]), np.array([0.5, 0.5]), base="10")


def test_packed_wasserstein_validates_its_layout(no_jit: None) -> None:
    counts = np.ones(10)
    with pytest.raises(ValueError, match=r"starts\[1\]: value bins 8:11 fall outside"):
        PackedWasserstein(counts, np.array([0, 8]), [np.array([0.0, 1.0])] * 2)
    with pytest.raises(ValueError, match=r"starts\[0\]: value bins -1:2 fall outside"):
        PackedWasserstein(counts, np.array([-1]), [np.array([0.0, 1.0])])
    with pytest.raises(ValueError, match=r"edges: need one edge array per start, got 1 for 2"):
        PackedWasserstein(counts, np.array([0, 4]), [np.array([0.0, 1.0])])
    with pytest.raises(ValueError, match=r"edges\[1\]: bin edges must be strictly increasing"):
        PackedWasserstein(counts, np.array([0, 4]), [np.array([0.0, 1.0]), np.array([1.0, 0.0])])
    with pytest.raises(ValueError, match=r"starts: need a 1-D integer array"):
        PackedWasserstein(counts, np.array([0.0]), [np.array([0.0, 1.0])])
    with pytest.raises(ValueError, match=r"reference_counts: counts must be finite"):
        PackedWasserstein(np.full(4, math.nan), np.array([0]), [np.array([0.0, 1.0])])


def test_packed_wasserstein_checks_live_cheaply() -> None:
    engine = PackedWasserstein(np.ones(10), np.array([0, 4]), [np.array([0.0, 1.0, 2.0])] * 2)
    with pytest.raises(ValueError, match=r"live_counts: need a C-contiguous float64 .*\(10,\)"):
        engine.evaluate(np.ones(9))
