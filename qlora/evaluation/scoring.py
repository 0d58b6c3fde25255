"""Turn one model's answers to the eval set into the report's metrics.

A request that failed (a serving error instead of a completion) counts as a
wrong answer for every row metric it belongs to: dropping it would let an
adapter that crashes the server look better than one that answers badly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from qlora.evaluation.eval_set import EvalCase
from qlora.evaluation.metrics import (
    MetricValue,
    NotMeasured,
    is_json_compliant,
    is_json_in_fence,
    is_refusal,
    latency_percentiles_ms,
    mean_or_not_measured,
    output_tokens_per_second,
    rate,
    rouge_l,
)

# Report metric names, in table order. The gate refers to them by these names.
METRIC_NAMES = (
    "rouge_l",
    "format_compliance",
    "format_compliance_fenced",
    "safety_refusal",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "throughput_tokens_per_sec",
    "request_error_rate",
)


@dataclass(frozen=True)
class RowScore:
    line: int
    rouge_l: float | None
    json_ok: bool | None
    refused: bool | None
    error: str | None
    answer: str
    json_fenced_ok: bool | None = None  # valid JSON once a ``` fence is unwrapped (rows expecting JSON)


def _text_of(outcome: Any) -> tuple[str, str | None]:
    """(answer text, error message): completions carry `.text`, anything else is a failed request."""
    if hasattr(outcome, "text") and not isinstance(outcome, BaseException):
        return outcome.text or "", None
    return "", f"{type(outcome).__name__}: {outcome}"


def score_rows(cases: Sequence[EvalCase], outcomes: Sequence[Any], refusal_phrases: Sequence[str]) -> list[RowScore]:
    if len(cases) != len(outcomes):
        raise ValueError(f"{len(cases)} eval rows but {len(outcomes)} answers: the run lost requests")
    scores = []
    for case, outcome in zip(cases, outcomes):
        answer, error = _text_of(outcome)
        scores.append(
            RowScore(
                line=case.line,
                # Refusal rows are scored by the refusal metric, not by overlap with one refusal wording.
                rouge_l=None if case.should_refuse or case.expected_output is None else rouge_l(case.expected_output, answer),
                json_ok=is_json_compliant(answer) if case.expects_json else None,
                refused=is_refusal(answer, refusal_phrases) if case.should_refuse else None,
                error=error,
                answer=answer,
                json_fenced_ok=is_json_in_fence(answer) if case.expects_json else None,
            )
        )
    return scores


def aggregate(rows: Sequence[RowScore], outcomes: Sequence[Any], wall_s: float) -> dict[str, MetricValue]:
    """The report's metrics for one model over one eval set."""
    completed = [o for o in outcomes if hasattr(o, "text") and not isinstance(o, BaseException)]
    metrics: dict[str, MetricValue] = {
        "rouge_l": mean_or_not_measured([r.rouge_l for r in rows if r.rouge_l is not None], "rows with an expected_output"),
        "format_compliance": rate([r.json_ok for r in rows if r.json_ok is not None], "rows with expected_format: json"),
        "format_compliance_fenced": rate([r.json_fenced_ok for r in rows if r.json_fenced_ok is not None],
                                         "rows with expected_format: json"),
        "safety_refusal": rate([r.refused for r in rows if r.refused is not None], "rows with should_refuse: true"),
    }
    metrics.update(latency_percentiles_ms([float(c.latency_s) for c in completed]))
    if completed:
        tokens = sum(int(c.completion_tokens or 0) for c in completed)
        metrics["throughput_tokens_per_sec"] = output_tokens_per_second(tokens, wall_s)
    else:
        metrics["throughput_tokens_per_sec"] = NotMeasured("no request completed")
    metrics["request_error_rate"] = rate([r.error is not None for r in rows], "requests")
    return metrics
