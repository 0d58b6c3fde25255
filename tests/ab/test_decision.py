"""The report and the decision from journal rows: guardrails reject early, the fixed horizon decides
only at the planned sample, mSPRT at any look; a loss or no gain never promotes."""
from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from qlora.ab.config import ABConfig, ConfigError, load_ab_config
from qlora.ab.decision import CONTINUE, PROMOTE, REJECT, decide
from qlora.ab.report import build_report

EXP = "legal-ko-v2-abc"


def journal(pairs: int, candidate_wins: int, errors: int = 0, latency_ms: float = 100.0,
            refusals: tuple[int, int] = (0, 0)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`pairs` side-by-side pairs (one answer per arm), the candidate preferred in `candidate_wins`."""
    responses, feedback = [], []
    now = time.time()
    for i in range(pairs):
        for arm, served in (("control", "legal-ko@v1"), ("candidate", "legal-ko@v2")):
            refused = i < refusals[0 if arm == "control" else 1]
            responses.append({"response_id": f"{arm}-{i}", "alias": "legal-ko", "served": served, "arm": arm,
                              "experiment_id": EXP, "user_hash": f"u{i}", "created_at": now, "latency_ms": latency_ms,
                              "status": 200, "completion_tokens": 10,
                              "prompt_json": json.dumps([{"role": "user", "content": f"flagged question {i}"}]),
                              "answer": "I cannot help with that." if refused else "An answer."})
        feedback.append({"response_id": f"control-{i}", "other_response_id": f"candidate-{i}", "kind": "pair",
                         "rating": "", "score": None, "created_at": now,
                         "preferred_response_id": f"candidate-{i}" if i < candidate_wins else f"control-{i}"})
    for j in range(errors):
        responses.append({"response_id": f"failed-{j}", "alias": "legal-ko", "served": "legal-ko@v2",
                          "arm": "candidate", "experiment_id": EXP, "user_hash": "u", "created_at": now,
                          "latency_ms": 5.0, "status": 502, "completion_tokens": 0, "prompt_json": "[]", "answer": ""})
    return pd.DataFrame(responses), pd.DataFrame(feedback)


def look(config: ABConfig, pairs: int, wins: int, elapsed_h: float = 1.0, **kw):
    responses, feedback = journal(pairs, wins, **kw)
    report = build_report(EXP, "legal-ko@v1", "legal-ko@v2", responses, feedback, config, planned=194)
    return report, decide(report, config, elapsed_h)


def test_report_counts_pairs_arms_and_latency():
    report, _ = look(ABConfig(), 100, 60)
    assert (report.decisive_pairs, report.candidate_wins, report.win_rate) == (100, 60, 0.6)
    assert report.arms["candidate"].requests == 100 and report.arms["candidate"].latency_p95_ms == 100.0
    low, high = report.win_rate_ci95
    assert low < 0.6 < high


def test_fixed_horizon_only_continues_before_the_planned_sample():
    # 150 of 150 wins is overwhelming, but the rule fixed in advance waits for 194.
    assert look(ABConfig(), 150, 150)[1].action == CONTINUE


@pytest.mark.parametrize("wins, action", [(120, PROMOTE), (97, REJECT), (70, REJECT)])
def test_fixed_horizon_decides_at_the_planned_sample(wins, action):
    decision = look(ABConfig(), 194, wins)[1]
    assert decision.action == action, decision.reason
    assert decision.numbers["observed"] == 194 and decision.numbers["planned"] == 194


def test_a_significant_loss_is_a_reject_not_a_promote():
    decision = look(ABConfig(), 194, 60)[1]
    assert decision.action == REJECT and decision.numbers["effect"] < 0 and decision.numbers["p_value"] < 0.05


def test_msprt_can_stop_early_and_ignores_weak_evidence():
    config = ABConfig(test="msprt")
    assert look(config, 60, 55)[1].action == PROMOTE
    assert look(config, 60, 33)[1].action == CONTINUE


def test_guardrail_error_rate_rejects_before_any_feedback_threshold():
    decision = look(ABConfig(), 60, 60, errors=10)[1]
    assert decision.action == REJECT and "error rate" in decision.reason


def test_guardrail_latency_rejects():
    decision = look(ABConfig(), 60, 60, latency_ms=9000)[1]
    assert decision.action == REJECT and "p95 latency" in decision.reason


def test_guardrail_refusals_on_flagged_prompts_reject():
    config = ABConfig(guardrails={"flagged_prompt_patterns": ["flagged"], "refusal_phrases": ["cannot help"]})
    decision = look(config, 60, 60, refusals=(0, 20))[1]
    assert decision.action == REJECT and "flagged prompts" in decision.reason
    assert look(config, 60, 60, refusals=(20, 20))[1].action == CONTINUE  # same as production: fine


def test_guardrails_wait_for_min_requests():
    assert look(ABConfig(), 10, 10, errors=5)[1].action == CONTINUE


def test_maximum_duration_ends_as_reject():
    decision = look(ABConfig(max_duration_hours=24), 50, 40, elapsed_h=25)[1]
    assert decision.action == REJECT and "maximum duration" in decision.reason


def test_thumbs_up_metric_uses_two_proportions():
    responses, _ = journal(300, 0)
    ok = responses[responses["status"] == 200]
    ratings = [{"response_id": rid, "other_response_id": "", "kind": "rating", "score": None,
                "rating": "up" if (arm == "candidate" and i % 10 < 9) or (arm == "control" and i % 10 < 6) else "down",
                "preferred_response_id": "", "created_at": 0.0}
               for i, (rid, arm) in enumerate(zip(ok["response_id"], ok["arm"]))]
    config = ABConfig(primary_metric="thumbs_up", baseline_rate=0.6, minimum_detectable_effect=0.2)
    report = build_report(EXP, "legal-ko@v1", "legal-ko@v2", responses, pd.DataFrame(ratings), config, planned=80)
    assert report.arms["candidate"].thumbs_up_rate > report.arms["control"].thumbs_up_rate
    assert decide(report, config, 1.0).action == PROMOTE


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "ab.yaml"
    bad.write_text("primary_metric: win_rate\nbaseline_rate: 0.7\n")
    with pytest.raises(ConfigError, match=r"ab.yaml: .*baseline_rate must be 0.5"):
        load_ab_config(bad)
    bad.write_text("alpha: 2\n")
    with pytest.raises(ConfigError, match=r"field 'alpha'"):
        load_ab_config(bad)
    assert load_ab_config().primary_metric in ("win_rate", "thumbs_up")  # the shipped configs/ab.yaml loads
