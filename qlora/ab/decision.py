"""promote / reject / continue, by the rule fixed in configs/ab.yaml before the experiment began.

Order: guardrails (any look, once the candidate has ``min_requests``) -> the primary test ->
the maximum duration. Fixed horizon: the z-test decides once, when the planned sample is
reached; looks before that can only continue (or stop on a guardrail), so repeated looks by
the sensor do not inflate alpha. mSPRT: promote/reject as soon as the mixture likelihood
ratio reaches 1/alpha (valid at every look). Promotion needs a significant effect in the
candidate's favour; a significant loss, or no significant gain, is a reject (production stays).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qlora.ab import stats
from qlora.ab.assignment import CANDIDATE, CONTROL
from qlora.ab.config import FIXED_HORIZON, ABConfig
from qlora.ab.report import OnlineReport

PROMOTE, REJECT, CONTINUE = "promote", "reject", "continue"


@dataclass
class Decision:
    action: str
    reason: str
    numbers: dict = field(default_factory=dict)


def guardrail_failure(report: OnlineReport, config: ABConfig) -> str:
    guard, candidate, control = config.guardrails, report.arms[CANDIDATE], report.arms[CONTROL]
    if candidate.requests < guard.min_requests:
        return ""
    if candidate.error_rate > guard.max_error_rate:
        return (f"guardrail: candidate error rate {candidate.error_rate:.2%} > {guard.max_error_rate:.2%} "
                f"({candidate.errors} of {candidate.requests} requests)")
    if candidate.latency_p95_ms is not None and candidate.latency_p95_ms > guard.max_latency_p95_ms:
        return f"guardrail: candidate p95 latency {candidate.latency_p95_ms:.0f} ms > {guard.max_latency_p95_ms:.0f} ms"
    if candidate.refusal_rate is not None:
        increase = candidate.refusal_rate - (control.refusal_rate or 0.0)
        if increase > guard.max_refusal_rate_increase:
            return (f"guardrail: candidate refuses {candidate.refusal_rate:.1%} of flagged prompts, "
                    f"{increase:+.1%} vs production (limit {guard.max_refusal_rate_increase:+.1%})")
    return ""


def decide(report: OnlineReport, config: ABConfig, elapsed_hours: float) -> Decision:
    estimate = report.estimate
    numbers = {"metric": config.primary_metric, "test": config.test, "alpha": config.alpha,
               "planned": report.planned, "observed": estimate.n, "effect": estimate.effect,
               "z": estimate.z, "p_value": estimate.p_value, "elapsed_hours": elapsed_hours,
               "win_rate": report.win_rate, "progress": report.progress}
    if failure := guardrail_failure(report, config):
        return Decision(REJECT, failure, numbers)
    if config.test == FIXED_HORIZON:
        reached = report.progress >= 1.0
        if reached and estimate.p_value < config.alpha:
            action = PROMOTE if estimate.effect > 0 else REJECT
            return Decision(action, f"planned sample reached; effect {estimate.effect:+.4f}, "
                                    f"p = {estimate.p_value:.4g} < alpha {config.alpha}", numbers)
        if reached:
            return Decision(REJECT, f"planned sample reached; effect {estimate.effect:+.4f} not significant "
                                    f"(p = {estimate.p_value:.4g} >= alpha {config.alpha})", numbers)
    else:
        ratio = stats.msprt_likelihood_ratio(estimate.effect, estimate.variance_h0, config.msprt_tau)
        numbers["likelihood_ratio"] = ratio
        if ratio >= 1 / config.alpha:
            action = PROMOTE if estimate.effect > 0 else REJECT
            return Decision(action, f"mSPRT likelihood ratio {ratio:.1f} >= 1/alpha = {1 / config.alpha:g}; "
                                    f"effect {estimate.effect:+.4f}", numbers)
    if elapsed_hours >= config.max_duration_hours:
        return Decision(REJECT, f"maximum duration {config.max_duration_hours:g} h reached at "
                                f"{report.progress:.0%} of the planned sample without a promote", numbers)
    return Decision(CONTINUE, f"{report.progress:.0%} of the planned sample ({estimate.n} of {report.planned})",
                    numbers)
