"""Planned sample sizes from the normal approximation (the textbook formulas, exactly).

Win rate: one proportion (share of decisive pairs the candidate wins) against 0.5.
Thumbs-up: two independent proportions (control vs candidate), pooled variance under H0.
Both: alpha two-sided, ``power`` at an effect of exactly the minimum detectable size.
Anchors (alpha 0.05, power 0.8): win 60% vs 50% -> 194 pairs, 55% -> 783; thumbs-up
0.70 -> 0.75 -> 1,251 per arm. statsmodels' arcsine (Cohen's h) version agrees within ~1%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm

from qlora.ab.config import WIN_RATE, ABConfig


@dataclass(frozen=True)
class SamplePlan:
    metric: str
    control: int      # thumbs-up: rated control responses; win rate: 0 (pairs are shared)
    candidate: int    # thumbs-up: rated candidate responses; win rate: decisive pairs

    @property
    def total(self) -> int:
        return self.control + self.candidate

    def describe(self) -> str:
        if self.metric == WIN_RATE:
            return f"{self.candidate:,} decisive pairwise preferences"
        return f"{self.control:,} rated control and {self.candidate:,} rated candidate responses"


def one_proportion_n(p0: float, p1: float, alpha: float, power: float) -> int:
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    root = z_a * math.sqrt(p0 * (1 - p0)) + z_b * math.sqrt(p1 * (1 - p1))
    return math.ceil((root / (p1 - p0)) ** 2)


def two_proportion_n(p1: float, p2: float, alpha: float, power: float, ratio: float = 1.0) -> tuple[int, int]:
    """(n1, n2) with n2 = ratio * n1: p1 is the control's rate, p2 the candidate's."""
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)
    pooled = (p1 + ratio * p2) / (1 + ratio)
    root = (z_a * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
            + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio))
    n1 = math.ceil((root / (p2 - p1)) ** 2)
    return n1, math.ceil(ratio * n1)


def plan_sample(config: ABConfig) -> SamplePlan:
    p0, p1 = config.baseline_rate, config.baseline_rate + config.minimum_detectable_effect
    if config.primary_metric == WIN_RATE:
        return SamplePlan(WIN_RATE, 0, one_proportion_n(p0, p1, config.alpha, config.power))
    ratio = config.traffic_share / (1 - config.traffic_share)
    n_control, n_candidate = two_proportion_n(p0, p1, config.alpha, config.power, ratio)
    return SamplePlan(config.primary_metric, n_control, n_candidate)
