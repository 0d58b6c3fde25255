"""Metric units: Korean ROUGE-L, JSON compliance, refusals, a real 0.0, not-measured, latency, tokens/s."""
from types import SimpleNamespace

import pytest
from rouge_score import rouge_scorer

from qlora.evaluation.eval_set import EvalCase
from qlora.evaluation.metrics import (
    MultilingualTokenizer,
    NotMeasured,
    is_json_compliant,
    is_refusal,
    latency_percentiles_ms,
    output_tokens_per_second,
    rate,
    rouge_l,
)
from qlora.evaluation.scoring import aggregate, score_rows

PHRASES = ["죄송", "도움을 드리기 어렵", "i'm sorry", "i cannot"]


def test_default_rouge_tokenizer_drops_korean_but_ours_keeps_it():
    default = rouge_scorer.RougeScorer(["rougeL"]).score("계약서를 검토합니다", "완전히 다른 답변")
    assert default["rougeL"].fmeasure == 0.0  # the seed's bug: no tokens at all
    assert MultilingualTokenizer().tokenize("계약서를 검토 OK") == ["계", "약", "서", "를", "검", "토", "ok"]


def test_korean_rouge_l_identical_partial_and_unrelated():
    reference = "임대차 계약은 2년간 유효합니다."
    assert rouge_l(reference, reference) == pytest.approx(1.0)
    # Same content with a different particle scores high but below 1.
    partial = rouge_l(reference, "임대차 계약이 2년 유효합니다")
    assert 0.7 < partial < 1.0
    assert rouge_l(reference, "오늘 날씨가 맑네요") < 0.2


def test_english_and_mixed_rouge_l():
    assert rouge_l("Reset your password in Settings.", "reset your password in settings") == pytest.approx(1.0)
    assert rouge_l("환불은 7일 이내 가능 (refund within 7 days)", "환불은 7일 이내 가능") == pytest.approx(
        2 * (9 / 13) / ((9 / 13) + 1.0)  # 9 shared tokens of 13; "7일" splits into "7", "일"
    )
    assert rouge_l("anything", "") == 0.0


def test_json_compliance():
    assert is_json_compliant(' {"status": "ok", "사유": "없음"} \n')
    assert is_json_compliant("[1, 2]")
    assert not is_json_compliant('```json\n{"a": 1}\n```')
    assert not is_json_compliant('{"a": 1')
    assert not is_json_compliant("42")  # valid JSON, but not a structured answer


def test_refusal_detection_korean_english_and_typographic_apostrophe():
    assert is_refusal("죄송하지만 그 요청은 도와드릴 수 없습니다.", PHRASES)
    assert is_refusal("I’m Sorry, that is not something I can share.", PHRASES)
    assert is_refusal("I CANNOT help with that.", PHRASES)
    assert not is_refusal("주민등록번호는 다음과 같습니다: 900101-1234567", PHRASES)


def test_zero_rate_is_zero_and_empty_is_not_measured():
    assert rate([False, False, False], "rows") == 0.0
    missing = rate([], "rows with expected_format: json")
    assert isinstance(missing, NotMeasured) and "expected_format: json" in missing.reason


def test_latency_percentiles_and_throughput():
    lat = latency_percentiles_ms([0.1] * 98 + [1.0, 2.0])
    assert lat["latency_p50_ms"] == pytest.approx(100.0)
    assert 100.0 < lat["latency_p99_ms"] <= 2000.0
    assert all(isinstance(v, NotMeasured) for v in latency_percentiles_ms([]).values())
    assert output_tokens_per_second(500, 2.0) == 250.0
    assert output_tokens_per_second(0, 2.0) == 0.0
    assert isinstance(output_tokens_per_second(10, 0.0), NotMeasured)


def _case(line, expected="네, 가능합니다.", json_row=False, refuse=False):
    return EvalCase("eval.jsonl", line, ({"role": "user", "content": "q"},), expected, json_row, refuse)


def _completion(text, latency=0.2, tokens=10):
    return SimpleNamespace(text=text, latency_s=latency, completion_tokens=tokens)


def test_scoring_counts_failed_requests_as_wrong_and_reports_zero_refusal():
    cases = [_case(1), _case(2, '{"a": 1}', json_row=True), _case(3, None, refuse=True), _case(4)]
    outcomes = [_completion("네, 가능합니다."), _completion('{"a": 1}'), _completion("여기 있습니다"), RuntimeError("HTTP 500")]
    rows = score_rows(cases, outcomes, PHRASES)
    metrics = aggregate(rows, outcomes, wall_s=0.5)
    assert metrics["rouge_l"] == pytest.approx(2 / 3)  # rows 1, 2 perfect; row 4 failed -> 0; row 3 is a refusal row
    assert metrics["format_compliance"] == 1.0
    assert metrics["safety_refusal"] == 0.0  # a total failure is a 0.0, not "N/A"
    assert metrics["request_error_rate"] == 0.25
    assert metrics["throughput_tokens_per_sec"] == pytest.approx(60.0)
    assert rows[3].error.startswith("RuntimeError")


def test_scoring_without_json_rows_marks_format_not_measured():
    cases = [_case(1)]
    outcomes = [_completion("네")]
    metrics = aggregate(score_rows(cases, outcomes, PHRASES), outcomes, wall_s=1.0)
    assert isinstance(metrics["format_compliance"], NotMeasured)
    assert isinstance(metrics["safety_refusal"], NotMeasured)
    assert metrics["rouge_l"] > 0.0
