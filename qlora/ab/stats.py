"""The test statistics: z-tests for the fixed horizon, a mixture SPRT for always-valid looks,
and 95% intervals for the report.

Fixed horizon: the z statistic uses the variance under H0 (0.25 for a win rate, the pooled
rate for two proportions), which is the test the sample-size formulas plan for.
mSPRT (Johari, Pekelis, Walsh 2017): for an estimate ``d`` of the effect with variance ``v``
and a N(0, tau^2) mixing prior on the effect, the likelihood ratio against "no effect" is
    sqrt(v / (v + tau^2)) * exp(tau^2 d^2 / (2 v (v + tau^2)));
rejecting when it reaches 1/alpha keeps the chance of *ever* rejecting a true H0 <= alpha,
however often one looks (it is a non-negative martingale under H0: Ville's inequality).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm


@dataclass(frozen=True)
class Estimate:
    effect: float         # win rate - 0.5, or candidate rate - control rate
    variance_h0: float    # the estimate's variance under H0 (what the test divides by)
    rate: float           # win rate, or candidate's thumbs-up rate
    control_rate: float | None
    n: int                # decisive pairs, or rated candidate responses
    n_control: int

    @property
    def z(self) -> float:
        return self.effect / math.sqrt(self.variance_h0) if self.variance_h0 > 0 else 0.0

    @property
    def p_value(self) -> float:
        return float(2 * norm.sf(abs(self.z)))


def win_rate_estimate(wins: int, decisive: int) -> Estimate:
    rate = wins / decisive if decisive else 0.5
    return Estimate(rate - 0.5, 0.25 / decisive if decisive else 0.0, rate, None, decisive, 0)


def two_proportion_estimate(control_up: int, control_n: int, candidate_up: int, candidate_n: int) -> Estimate:
    if not control_n or not candidate_n:
        return Estimate(0.0, 0.0, candidate_up / candidate_n if candidate_n else 0.0,
                        control_up / control_n if control_n else None, candidate_n, control_n)
    p1, p2 = control_up / control_n, candidate_up / candidate_n
    pooled = (control_up + candidate_up) / (control_n + candidate_n)
    variance = pooled * (1 - pooled) * (1 / control_n + 1 / candidate_n)
    return Estimate(p2 - p1, variance, p2, p1, candidate_n, control_n)


def msprt_likelihood_ratio(effect: float, variance: float, tau: float) -> float:
    """The mixture likelihood ratio (module docstring); 1.0 before there is any data."""
    if variance <= 0:
        return 1.0
    t2 = tau * tau
    log_lr = 0.5 * math.log(variance / (variance + t2)) + t2 * effect * effect / (2 * variance * (variance + t2))
    return math.exp(min(log_lr, 700.0))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z = norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(control_up: int, control_n: int, candidate_up: int, candidate_n: int,
                        confidence: float = 0.95) -> tuple[float, float]:
    """Wald interval of candidate rate - control rate (unpooled variance)."""
    if not control_n or not candidate_n:
        return -1.0, 1.0
    p1, p2 = control_up / control_n, candidate_up / candidate_n
    half = norm.ppf(0.5 + confidence / 2) * math.sqrt(p1 * (1 - p1) / control_n + p2 * (1 - p2) / candidate_n)
    return max(-1.0, p2 - p1 - half), min(1.0, p2 - p1 + half)
