"""Sample sizes, test statistics and intervals against statsmodels/scipy, and the mSPRT's math."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import integrate
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize, proportions_ztest

from qlora.ab import stats
from qlora.ab.config import ABConfig
from qlora.ab.sample_size import one_proportion_n, plan_sample, two_proportion_n


@pytest.mark.parametrize("p1, expected", [(0.60, 194), (0.55, 783)])
def test_win_rate_sample_size_anchors(p1, expected):
    assert one_proportion_n(0.5, p1, 0.05, 0.8) == expected


def test_thumbs_up_sample_size_anchor():
    assert two_proportion_n(0.70, 0.75, 0.05, 0.8) == (1251, 1251)


@pytest.mark.parametrize("p0, p1", [(0.5, 0.6), (0.5, 0.55), (0.7, 0.75), (0.2, 0.3)])
def test_sample_sizes_agree_with_statsmodels_arcsine_power(p0, p1):
    """statsmodels plans on Cohen's h (arcsine); the normal approximation agrees within 2%."""
    h = proportion_effectsize(p1, p0)
    two = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0)
    assert two_proportion_n(p0, p1, 0.05, 0.8)[0] == pytest.approx(two, rel=0.02)
    if p0 != 0.5:
        return  # a win rate is always tested against 0.5
    one = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=0.0)
    assert one_proportion_n(p0, p1, 0.05, 0.8) == pytest.approx(one, rel=0.02)


def test_unequal_split_needs_more_in_the_small_arm():
    control, candidate = two_proportion_n(0.7, 0.75, 0.05, 0.8, ratio=0.25)
    assert candidate == math.ceil(0.25 * control) and control > 1251


def test_plan_from_config():
    assert plan_sample(ABConfig()).candidate == 194
    plan = plan_sample(ABConfig(primary_metric="thumbs_up", baseline_rate=0.7, minimum_detectable_effect=0.05))
    assert (plan.control, plan.candidate) == (1251, 1251)


@given(wins=st.integers(0, 500), extra=st.integers(1, 500))
@settings(max_examples=60, deadline=None)
def test_win_rate_z_matches_statsmodels(wins, extra):
    n = wins + extra
    estimate = stats.win_rate_estimate(wins, n)
    z, p = proportions_ztest(wins, n, value=0.5, prop_var=0.5)
    assert estimate.z == pytest.approx(z, abs=1e-9) and estimate.p_value == pytest.approx(p, abs=1e-9)


@given(c_up=st.integers(0, 300), c_extra=st.integers(1, 300), k_up=st.integers(0, 300), k_extra=st.integers(1, 300))
@settings(max_examples=60, deadline=None)
def test_two_proportion_z_matches_statsmodels(c_up, c_extra, k_up, k_extra):
    c_n, k_n = c_up + c_extra, k_up + k_extra
    estimate = stats.two_proportion_estimate(c_up, c_n, k_up, k_n)
    if estimate.variance_h0 == 0:
        return  # every rating the same: statsmodels divides by zero, we report z = 0
    z, p = proportions_ztest([k_up, c_up], [k_n, c_n])
    assert estimate.z == pytest.approx(z, abs=1e-9) and estimate.p_value == pytest.approx(p, abs=1e-9)


@given(successes=st.integers(0, 400), extra=st.integers(0, 400))
@settings(max_examples=60, deadline=None)
def test_wilson_interval_matches_statsmodels(successes, extra):
    n = successes + extra
    if n == 0:
        return
    low, high = stats.wilson_interval(successes, n)
    ref_low, ref_high = proportion_confint(successes, n, alpha=0.05, method="wilson")
    assert (low, high) == (pytest.approx(ref_low, abs=1e-9), pytest.approx(ref_high, abs=1e-9))


@pytest.mark.parametrize("effect, variance, tau", [(0.0, 0.01, 0.1), (0.05, 0.25 / 194, 0.1),
                                                   (-0.08, 0.002, 0.05), (0.2, 0.25 / 30, 0.3)])
def test_msprt_ratio_is_the_mixture_of_likelihood_ratios(effect, variance, tau):
    """Closed form == integral over the N(0, tau^2) prior of N(d; theta, v) / N(d; 0, v)."""
    def integrand(theta):
        return norm.pdf(effect, theta, math.sqrt(variance)) / norm.pdf(effect, 0, math.sqrt(variance)) \
            * norm.pdf(theta, 0, tau)
    reference, _ = integrate.quad(integrand, -10 * tau - abs(effect), 10 * tau + abs(effect), limit=200)
    assert stats.msprt_likelihood_ratio(effect, variance, tau) == pytest.approx(reference, rel=1e-6)


def test_msprt_holds_alpha_under_continuous_monitoring():
    """Under H0 (fair coin), looking after every pair for 2,000 pairs, the ratio reaches 1/alpha in <= alpha
    of 2,000 simulated experiments (Ville's inequality; the normal approximation can only make it rarer here)."""
    rng = np.random.default_rng(7)
    alpha, tau, crossed = 0.05, 0.1, 0
    n = np.arange(1, 2001)
    for _ in range(2000):
        wins = np.cumsum(rng.random(2000) < 0.5)
        effect, variance = wins / n - 0.5, 0.25 / n
        t2 = tau * tau
        log_lr = 0.5 * np.log(variance / (variance + t2)) + t2 * effect ** 2 / (2 * variance * (variance + t2))
        crossed += bool((log_lr >= math.log(1 / alpha)).any())
    assert crossed / 2000 <= alpha
    # The vectorised form above is the library's function.
    assert stats.msprt_likelihood_ratio(0.03, 0.25 / 500, tau) == pytest.approx(
        math.exp(0.5 * math.log((0.25 / 500) / (0.25 / 500 + t2)) + t2 * 0.03 ** 2 / (2 * (0.25 / 500) * (0.25 / 500 + t2))))


def test_peeking_at_a_fixed_horizon_z_test_would_inflate_alpha():
    """Why the fixed-horizon rule decides only at the planned sample: stopping at the first look with
    p < alpha (here every 10 pairs up to 194) promotes/rejects a fair coin far more often than alpha."""
    rng = np.random.default_rng(3)
    looks = np.arange(10, 195, 10)
    hits = 0
    for _ in range(2000):
        wins = np.cumsum(rng.random(194) < 0.5)[looks - 1]
        z = (wins / looks - 0.5) / np.sqrt(0.25 / looks)
        hits += bool((2 * norm.sf(np.abs(z)) < 0.05).any())
    assert hits / 2000 > 0.10
