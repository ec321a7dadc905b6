"""Null calibration of the report's intervals at 2-10 seed pairs, their agreement with SciPy, the exact sign-flip
test and paired-t power against Monte-Carlo simulation."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from analysis.intervals import (METHODS, TWO_SAMPLE_METHODS, difference_of_means_ci, paired_mean_ci,
                                sign_flip_floor, sign_flip_p_value, t_bounds, welch_bounds)
from analysis.power import paired_t_power, pairs_for_power

DRAWS = 20_000  # binomial SD of a 5% rate over 20,000 draws: 0.15 points, so 5% +- 1.5 is a 10-SD band


def _exclusion(low, high):
    return float(np.mean((low > 0) | (high < 0)))


def test_defaults_are_student_t_and_welch():
    assert METHODS[0] == "t" and TWO_SAMPLE_METHODS[0] == "welch"
    assert paired_mean_ci([1.0, 2.0, 4.0]).method == "t"
    assert difference_of_means_ci([1.0, 2.0], [0.0, 0.5]).method == "welch"


@pytest.mark.parametrize("n", range(2, 11))
def test_student_t_excludes_zero_in_five_percent_of_null_draws(n):
    d = np.random.default_rng(100 + n).normal(0.0, 1.0, (DRAWS, n))
    low, high, p = t_bounds(d, 0.95)
    assert 0.035 <= _exclusion(low, high) <= 0.065
    assert np.array_equal((low > 0) | (high < 0), p < 0.05)  # interval and test agree draw by draw
    # the vectorised bounds are the ones the report uses, draw for draw
    for row in d[:3]:
        ci = paired_mean_ci(row)
        i = np.flatnonzero((d == row).all(axis=1))[0]
        assert (ci.low, ci.high) == pytest.approx((low[i], high[i]), rel=1e-12)


def test_student_t_on_heavy_tailed_differences_is_conservative_as_documented():
    rng = np.random.default_rng(5)
    for n in (3, 5, 10):  # documented: 3.7-4.5% on t3 differences
        low, high, _ = t_bounds(rng.standard_t(3, (DRAWS, n)), 0.95)
        assert 0.03 <= _exclusion(low, high) <= 0.055


@pytest.mark.parametrize("n", range(2, 11))
def test_welch_keeps_its_level_for_unequal_spreads(n):
    rng = np.random.default_rng(200 + n)
    a, b = rng.normal(0.0, 2.0, (DRAWS, n)), rng.normal(0.0, 1.0, (DRAWS, n + 1))
    rate = _exclusion(*welch_bounds(a, b, 0.95)[:2])
    if n == 2:  # two pairs on a side: Welch-Satterthwaite df is small and the interval conservative (~2.7%)
        assert 0.015 <= rate <= 0.065
    else:
        assert 0.035 <= rate <= 0.065


def test_old_expanded_percentile_default_is_miscalibrated_at_three_pairs():
    rng = np.random.default_rng(11)
    draws = 400
    hits = sum(paired_mean_ci(rng.normal(0.0, 1.0, 3), method="expanded-percentile", n_resamples=500,
                              seed=i).excludes_zero() for i in range(draws))
    # at 3 pairs the interval is [min, max]: it excludes 0 whenever all three share a sign, 25% of null draws
    assert hits / draws > 0.17  # SD 2.2 points around 25%; the nominal rate is 5%
    d = np.array([-0.33, 0.0, 0.03]) + 0.2
    ci = paired_mean_ci(d, method="expanded-percentile")
    assert (ci.low, ci.high) == pytest.approx((d.min(), d.max()), abs=1e-9)


def test_student_t_matches_scipy_ttest_1samp():
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 9):
        d = rng.normal(0.4, 1.0, n)
        ref = stats.ttest_1samp(d, 0.0)
        ref_ci = ref.confidence_interval(0.9)
        ci = paired_mean_ci(d, confidence=0.9)
        assert ci.estimate == pytest.approx(d.mean())
        assert (ci.low, ci.high) == pytest.approx((ref_ci.low, ref_ci.high), rel=1e-10)
        assert ci.p_value == pytest.approx(ref.pvalue, rel=1e-10) and ci.n == n and ci.confidence == 0.9


def test_welch_matches_scipy_ttest_ind_unequal_var():
    rng = np.random.default_rng(4)
    a, b = rng.normal(-1.0, 2.0, 4), rng.normal(0.0, 0.5, 6)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ref_ci = ref.confidence_interval(0.95)
    ci = difference_of_means_ci(a, b)
    assert (ci.low, ci.high) == pytest.approx((ref_ci.low, ref_ci.high), rel=1e-10)
    assert ci.p_value == pytest.approx(ref.pvalue, rel=1e-10) and ci.n == 4


def test_the_issue_demo_numbers_no_longer_exclude_zero():
    # differences consistent with the demo's denoise_loss at patch 8: [min, max] = [-0.33, 0.03], mean -0.10
    d = [-0.33, 0.0, 0.03]
    old = paired_mean_ci(d, method="expanded-percentile")
    new = paired_mean_ci(d)
    assert (old.low, old.high) == pytest.approx((-0.33, 0.03), abs=1e-9)
    assert new.low < -0.55 and new.high > 0.35 and not new.excludes_zero()


def test_sign_flip_is_exact_against_enumeration_and_scipy():
    rng = np.random.default_rng(8)
    for n in (1, 3, 6, 9):
        d = rng.normal(0.5, 1.0, n)
        brute = np.mean([abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12
                         for s in itertools.product((-1, 1), repeat=n)])
        assert sign_flip_p_value(d) == pytest.approx(brute)
        if n == 1:  # scipy wants two observations; one pair flips to itself or its mirror: p = 1
            assert sign_flip_p_value(d) == 1.0
            continue
        ref = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided")
        assert sign_flip_p_value(d) == pytest.approx(ref.pvalue)


@pytest.mark.parametrize("n", range(1, 11))
def test_sign_flip_floor_is_two_over_two_to_the_n(n):
    same_sign = np.arange(1.0, n + 1)  # every difference positive: the most extreme pattern
    assert sign_flip_p_value(same_sign) == pytest.approx(sign_flip_floor(n)) == pytest.approx(min(1.0, 2 / 2 ** n))
    assert (sign_flip_floor(n) <= 0.05) == (n >= 6)


def test_sign_flip_beyond_sixteen_pairs_uses_a_fixed_sample():
    d = np.random.default_rng(1).normal(0.3, 1.0, 20)
    p = sign_flip_p_value(d)
    assert p == sign_flip_p_value(d)  # fixed seed
    assert p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, abs=0.03)  # the permutation and t tests agree


@pytest.mark.parametrize("effect, sd, n", [(1.0, 1.0, 6), (0.5, 1.0, 12), (0.1, 0.2, 34)])
def test_paired_t_power_matches_monte_carlo(effect, sd, n):
    rng = np.random.default_rng(n)
    d = rng.normal(effect, sd, (20_000, n))
    simulated = float(np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05))
    assert paired_t_power(effect, sd, n) == pytest.approx(simulated, abs=0.012)  # MC SD <= 0.0035


def test_pairs_for_power_is_the_smallest_n_reaching_eighty_percent():
    assert pairs_for_power(1.0, 1.0) == 10  # standardised effect 1: the textbook paired-t answer
    for effect, sd in ((0.1, 0.2), (0.3, 1.0), (5.0, 1.0)):
        n = pairs_for_power(effect, sd)
        assert paired_t_power(effect, sd, n) >= 0.8
        assert n == 2 or paired_t_power(effect, sd, n - 1) < 0.8
    assert pairs_for_power(-0.5, 1.0) == pairs_for_power(0.5, 1.0)
    assert pairs_for_power(0.0, 1.0) is None and pairs_for_power(1.0, 0.0) is None
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        paired_t_power(1.0, 1.0, 1)
    with pytest.raises(ValueError, match="sd must be a positive finite number, got 0.0"):
        paired_t_power(1.0, 0.0, 5)
    assert math.isnan(sign_flip_p_value([]))


def test_power_stays_defined_far_in_the_noncentral_tail():
    # scipy's noncentral t returns NaN at nc ~ 11 with df 2 (the demo pilot's coarse-patch effect, d = 6.6 at
    # 3 pairs); the integral over the chi-square gives the number, and it agrees where scipy is finite
    import math

    from scipy import stats

    from analysis.power import _power_by_integration, paired_t_power, pairs_for_power
    assert 0.99 < paired_t_power(0.4854, 0.0739, 3) <= 1.0
    assert pairs_for_power(0.4854, 0.0739) == 3
    for effect, sd, n in ((0.5, 0.4, 4), (1.0, 1.0, 10), (0.3, 0.5, 3)):
        crit, nc = stats.t.ppf(0.975, n - 1), effect / sd * math.sqrt(n)
        assert _power_by_integration(crit, n - 1, nc) == pytest.approx(paired_t_power(effect, sd, n), rel=1e-8)
