"""gate_decision acts on the version its eval_report materialization evaluated, never on a newer warehouse row."""
import dagster as dg
import pytest

from qlora.evaluation.decisions import latest_gate_decision, record_eval_report
from qlora.evaluation.results import EvalResults, ModelReport
from qlora_assets.evaluation.assets import gate_decision
from resources.warehouse import WarehouseResource
from tests.support.lineage import report_upstream

DOMAIN = "legal-ko"
GOOD = {"rouge_l": 0.8, "format_compliance": 1.0, "safety_refusal": 1.0, "latency_p50_ms": 100.0,
        "latency_p95_ms": 200.0, "latency_p99_ms": 300.0, "throughput_tokens_per_sec": 100.0,
        "request_error_rate": 0.0}


def evaluated(warehouse: WarehouseResource, version: str, **metrics) -> None:
    report = ModelReport("candidate", f"{DOMAIN}@staging-{version}", dict(GOOD, **metrics), 10, 1.0)
    record_eval_report(warehouse.get(), EvalResults(DOMAIN, version, "eval.jsonl", 4, {"candidate": report}))


def gate(instance: dg.DagsterInstance, warehouse: WarehouseResource) -> dg.ExecuteInProcessResult:
    return dg.materialize([gate_decision], partition_key=DOMAIN, instance=instance,
                          resources={"warehouse": warehouse}, raise_on_error=False)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", [DOMAIN])
        yield instance


def test_gate_decides_the_version_eval_report_recorded_not_the_newest_eval_row(tmp_path, instance):
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"))
    evaluated(warehouse, "v1")
    report_upstream(instance, "eval_report", DOMAIN, adapter_version="v1")
    evaluated(warehouse, "v2", safety_refusal=0.0)  # e.g. a CLI eval of a newer version, after v1's run
    result = gate(instance, warehouse)
    assert result.asset_materializations_for_node("gate_decision")[0].metadata["adapter_version"].value == "v1"
    assert latest_gate_decision(warehouse.get(), DOMAIN, "v1").passed
    assert latest_gate_decision(warehouse.get(), DOMAIN, "v2") is None  # never gated

    report_upstream(instance, "eval_report", DOMAIN, adapter_version="v2")  # eval_report of v2 ran
    assert not gate(instance, warehouse).get_asset_check_evaluations()[0].passed
    assert latest_gate_decision(warehouse.get(), DOMAIN, "v2").blocked_gates == ["safety_refusal"]


def test_gate_without_an_eval_report_materialization_says_what_to_run(tmp_path, instance):
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"))
    evaluated(warehouse, "v1")  # rows alone are not lineage
    result = gate(instance, warehouse)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no materialization of eval_report for partition 'legal-ko'" in str(failure.event_specific_data.error)


def test_gate_refuses_an_eval_report_materialization_without_its_version(tmp_path, instance):
    warehouse = WarehouseResource(path=str(tmp_path / "wh.duckdb"))
    report_upstream(instance, "eval_report", DOMAIN, eval_rows=4)
    result = gate(instance, warehouse)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "records no 'adapter_version'" in str(failure.event_specific_data.error)
