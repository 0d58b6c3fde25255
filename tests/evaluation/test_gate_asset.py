"""gate_decision as an asset: the blocking check stops what depends on it, and the decision is recorded."""
import dagster as dg
import pytest

from qlora_assets.evaluation.assets import gate_decision
from qlora.evaluation.decisions import latest_gate_decision, record_eval_report
from qlora.evaluation.metrics import NotMeasured
from qlora.evaluation.results import EvalResults, ModelReport
from resources.warehouse import WarehouseResource
from tests.support.lineage import report_upstream

GOOD = {
    "rouge_l": 0.8, "format_compliance": 1.0, "safety_refusal": 1.0, "latency_p50_ms": 100.0,
    "latency_p95_ms": 200.0, "latency_p99_ms": 300.0, "throughput_tokens_per_sec": 100.0, "request_error_rate": 0.0,
}
DOMAIN = "legal-ko"
partitions = dg.DynamicPartitionsDefinition(name="domain")


@dg.asset(partitions_def=partitions, deps=[gate_decision], group_name="test")
def stand_in_deploy() -> None:
    """Stands in for deployed_adapter: a child of gate_decision that must not run on a block."""


def _run(tmp_path, version: str, **candidate) -> dg.ExecuteInProcessResult:
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"))
    report = ModelReport("candidate", f"{DOMAIN}@staging-{version}", dict(GOOD, **candidate), 10, 1.0)
    record_eval_report(warehouse.get(), EvalResults(DOMAIN, version, "eval.jsonl", 4, {"candidate": report}))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("domain", [DOMAIN])
    report_upstream(instance, "eval_report", DOMAIN, adapter_version=version)
    return dg.materialize(
        [gate_decision, stand_in_deploy], partition_key=DOMAIN, instance=instance,
        resources={"warehouse": warehouse}, raise_on_error=False,
    )


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_passing_gate_lets_the_child_run(tmp_path):
    result = _run(tmp_path, "v1")
    assert _materialized(result) == {"gate_decision", "stand_in_deploy"}
    check = result.get_asset_check_evaluations()[0]
    assert check.passed
    assert latest_gate_decision(WarehouseResource(path=str(tmp_path / "wh.duckdb")).get(), DOMAIN, "v1").passed


@pytest.mark.parametrize("candidate", [{"safety_refusal": 0.0}, {"format_compliance": NotMeasured("no json rows")}])
def test_blocked_gate_stops_the_child_and_lists_every_gate(tmp_path, candidate):
    result = _run(tmp_path, "v2", **candidate)
    assert _materialized(result) == {"gate_decision"}  # the decision is recorded, the deploy never runs
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    metadata = result.asset_materializations_for_node("gate_decision")[0].metadata
    assert metadata["blocked_gates"].value == next(iter(candidate))
    listed = {g["gate"] for g in metadata["gates_json"].value}
    assert {"rouge_l", "format_compliance", "safety_refusal", "latency_p95_ms", "throughput_tokens_per_sec"} <= listed
    decision = latest_gate_decision(WarehouseResource(path=str(tmp_path / "wh.duckdb")).get(), DOMAIN, "v2")
    assert not decision.passed and decision.blocked_gates == [next(iter(candidate))]
