"""Gate decisions and eval reports in the warehouse; the look-up a deploy uses for one exact version."""
from pathlib import Path

from qlora.evaluation.config import load_gate_config
from qlora.evaluation.decisions import (
    latest_gate_decision,
    record_eval_report,
    record_gate_decision,
)
from qlora.evaluation.gate import decide
from qlora.evaluation.metrics import NotMeasured
from qlora.evaluation.results import EvalResults, ModelReport
from qlora.core.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[2]
GOOD = {
    "rouge_l": 0.8, "format_compliance": 1.0, "format_compliance_fenced": 1.0, "safety_refusal": 1.0, "latency_p50_ms": 100.0,
    "latency_p95_ms": 200.0, "latency_p99_ms": 300.0, "throughput_tokens_per_sec": 100.0, "request_error_rate": 0.0,
}


def _results(version: str, **candidate) -> EvalResults:
    reports = {"candidate": ModelReport("candidate", f"legal-ko@staging-{version}", dict(GOOD, **candidate), 5, 1.0)}
    return EvalResults("legal-ko", version, "eval.jsonl", 4, reports)


def test_latest_decision_is_per_exact_version_and_newest_wins(tmp_path):
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    gates = load_gate_config(REPO / "configs" / "quality_gate.yaml")
    assert latest_gate_decision(warehouse, "legal-ko", "v1") is None

    record_gate_decision(warehouse, decide(_results("v1"), gates))
    record_gate_decision(warehouse, decide(_results("v2", rouge_l=0.2), gates))
    assert latest_gate_decision(warehouse, "legal-ko", "v1").passed
    blocked = latest_gate_decision(warehouse, "legal-ko", "v2")
    assert not blocked.passed and blocked.blocked_gates == ["rouge_l"]
    assert latest_gate_decision(warehouse, "medical-ko", "v1") is None

    # A later run that blocks v1 overrides the earlier pass for v1.
    record_gate_decision(warehouse, decide(_results("v1", safety_refusal=0.0), gates))
    assert latest_gate_decision(warehouse, "legal-ko", "v1").blocked_gates == ["safety_refusal"]


def test_eval_report_rows_store_not_measured_as_null(tmp_path):
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    record_eval_report(warehouse, _results("v1", format_compliance=NotMeasured("no json rows"), safety_refusal=0.0))
    frame = warehouse.query("select metric, value, measured, reason from eval_reports where model_role = 'candidate'")
    rows = {r.metric: r for r in frame.itertuples()}
    assert rows["safety_refusal"].measured and rows["safety_refusal"].value == 0.0
    fmt = rows["format_compliance"]
    assert not fmt.measured and fmt.reason == "no json rows"
    assert warehouse.query("select count(*) as n from eval_reports where value is null").n[0] == 1


def test_latest_eval_results_rebuilds_the_newest_run(tmp_path):
    from qlora.evaluation.decisions import latest_eval_results

    warehouse = Warehouse(tmp_path / "wh.duckdb")
    assert latest_eval_results(warehouse, "legal-ko") is None
    record_eval_report(warehouse, _results("v1"))
    record_eval_report(warehouse, _results("v2", format_compliance=NotMeasured("no json rows"), rouge_l=0.0))
    loaded = latest_eval_results(warehouse, "legal-ko")
    assert loaded.adapter_version == "v2" and set(loaded.reports) == {"candidate"}
    assert loaded.metric("candidate", "rouge_l") == 0.0
    assert loaded.metric("candidate", "format_compliance") == NotMeasured("no json rows")
