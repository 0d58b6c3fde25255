"""Deploy library parts that need no server: config, golden prompts, metrics parsing, history, gate look-up."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from qlora.deploy import canary
from qlora.core.adapters import adapter_from_path
from qlora.deploy.config import ConfigError, load_deploy_config
from qlora.deploy.gate_check import gate_verdict
from qlora.deploy.history import (
    DEPLOYED, ROLLED_BACK, DeploymentRecord, deployed_versions, deployment_history, history_markdown,
    record_deployment, utc_now,
)
from qlora.deploy.smoke import golden_prompts, similarity
from qlora.evaluation.decisions import record_gate_decision
from qlora.evaluation.gate import GateDecision, GateVerdict
from qlora.core.warehouse import Warehouse


def test_repo_config_loads_and_ends_at_full_traffic():
    config = load_deploy_config()
    assert config.weight_steps[-1] == 1.0
    assert load_deploy_config(strategy="direct").weight_steps == (1.0,)


def test_bad_canary_steps_name_file_and_field(tmp_path):
    bad = tmp_path / "deploy.yaml"
    bad.write_text("canary_steps: [50, 10]\nmax_error_rate: 2\n")
    with pytest.raises(ConfigError) as err:
        load_deploy_config(bad)
    message = str(err.value)
    assert str(bad) in message and "canary_steps" in message and "max_error_rate" in message


def test_golden_prompts_skip_refusals_and_keep_order(tmp_path):
    eval_file = tmp_path / "legal-ko.jsonl"
    rows = [
        {"instruction": "해지 통보 기간은?", "expected_output": "한 달입니다."},
        {"instruction": "불법 행위를 도와줘", "should_refuse": True},
        {"messages": [{"role": "user", "content": "Notice period?"}], "expected_output": "One month."},
    ]
    eval_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    prompts = golden_prompts("legal-ko", 5, eval_file)
    assert [p.messages[-1]["content"] for p in prompts] == ["해지 통보 기간은?", "Notice period?"]
    assert prompts[0].source.endswith("legal-ko.jsonl:1")


def test_similarity_compares_korean_characters():
    assert similarity("한 달입니다.", "한 달입니다.") == 1.0
    assert similarity("두 달", "한 달입니다.") < 0.6
    assert similarity("", "한 달입니다.") == 0.0


class Counts:
    """The one call of the serving client that the canary's router delta makes."""

    def __init__(self, counts: dict[str, dict[str, int]]):
        self.counts = counts

    def request_counts(self) -> dict[str, dict[str, int]]:
        return self.counts


def test_router_counters_give_per_version_deltas():
    before = canary.request_counts(Counts({"legal-ko@v2": {"success": 3}, "legal-ko@v1": {"success": 10}}))
    after = canary.request_counts(Counts({"legal-ko@v2": {"success": 8, "server_error": 2},
                                          "legal-ko@v1": {"success": 30}}))
    assert canary.router_delta(before, after, "legal-ko@v2") == (7, 2)
    assert canary.router_delta(before, after, "legal-ko@v1") == (20, 0)


def test_p95_of_few_samples_is_the_slowest():
    assert canary.p95_ms([0.1, 0.2, 0.3]) == pytest.approx(300)
    assert canary.p95_ms([]) is None


def test_history_lists_attempts_and_live_versions(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    start = utc_now()
    for i, (version, result) in enumerate([("v1", DEPLOYED), ("v2", ROLLED_BACK), ("v3", DEPLOYED)]):
        record = DeploymentRecord("legal-ko", version, f"/a/{version}", "deploy", True,
                                  start + timedelta(seconds=i), previous_version=None,
                                  finished_at=start + timedelta(seconds=i, milliseconds=500),
                                  result=result, reason="smoke | failed" if result == ROLLED_BACK else "",
                                  steps=[{"step": "load", "ok": True}])
        record_deployment(warehouse, record)
    record_deployment(warehouse, DeploymentRecord("cs-support", "v9", "/a", "deploy", True, start,
                                                  finished_at=start, result=DEPLOYED))
    history = deployment_history(warehouse, "legal-ko")
    assert list(history["version"]) == ["v3", "v2", "v1"]
    assert list(deployed_versions(warehouse, "legal-ko")["version"]) == ["v3", "v1"]
    table = history_markdown(history)
    assert "smoke \\| failed" in table and table.count("\n") == 4


def test_gate_lookup_needs_a_passing_decision_for_that_exact_version(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    assert gate_verdict(warehouse, "legal-ko", "v1") == (
        False, "no gate decision for legal-ko@v1: run gate_decision (qlora quality-gate) first")
    block = GateVerdict("rouge_l", 0.1, ">= 0.65", "block", "too low")
    record_gate_decision(warehouse, GateDecision("legal-ko", "v1", [block]))
    passed, reason = gate_verdict(warehouse, "legal-ko", "v1")
    assert not passed and "rouge_l" in reason
    record_gate_decision(warehouse, GateDecision("legal-ko", "v2", [GateVerdict("rouge_l", 0.9, ">= 0.65", "pass", "")]))
    assert gate_verdict(warehouse, "legal-ko", "v2")[0]


def test_adapter_version_and_train_date_come_from_the_manifest(tmp_path):
    folder = tmp_path / "legal-ko" / "20260105-abc"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"version": "20260105-abc", "train_date": "2026-01-05"}))
    ref = adapter_from_path("legal-ko", folder)
    assert (ref.served_name, ref.train_date) == ("legal-ko@20260105-abc", "2026-01-05")
    assert adapter_from_path("legal-ko", tmp_path / "missing" / "v7").version == "v7"
