"""cost_report: runs priced from their measured seconds, the month at the weekly cadence, the budget as a WARN."""
from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
import yaml

from qlora.core.warehouse import Warehouse
from qlora.training.cost_report import load_costs, monthly_report


def manifest(domain: str, version: str, seconds: float, created: str, instance: str = "a100-80gb-x1") -> dict:
    return {"domain": domain, "version": version, "created_at": created, "cost": {"instance": instance},
            "config": {"cost_instance": instance}, "metrics": {"wall_seconds": seconds, "world_size": 1}}


def costs_file(tmp_path, budget: float | None):
    data = {"instances": {"a100-80gb-x1": {"gpus": 1, "usd_per_hour": 3.67},
                          "a100-80gb-x8": {"gpus": 8, "usd_per_hour": 26.0}}}
    if budget is not None:
        data["budget"] = {"monthly_usd": budget}
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_month_uses_each_domains_latest_run_at_the_weekly_cadence(tmp_path):
    costs = load_costs(costs_file(tmp_path, budget=100.0))
    runs = [manifest("legal-ko", "v1", 7200, "2026-11-01"), manifest("legal-ko", "v2", 3600, "2026-11-08"),
            manifest("medical-ko", "v1", 1800, "2026-11-08", instance="a100-80gb-x8")]
    report = monthly_report(runs, costs)
    assert [r["usd"] for r in report["runs"]] == [7.34, 3.67, 13.0]
    assert report["runs"][2]["gpu_hours"] == 0.5  # the run's world size, not the instance's 8 GPUs
    assert report["domains"]["legal-ko"]["usd_per_month"] == pytest.approx(3.67 * 52 / 12, abs=0.01)
    assert report["usd_per_month"] == pytest.approx((3.67 + 13.0) * 52 / 12, abs=0.02)
    assert report["over_budget"] is False


def test_unknown_instance_names_the_run_and_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"legal-ko@v1: instance 'h100-x1' not in configs/costs.yaml \(known: a100"):
        monthly_report([manifest("legal-ko", "v1", 60, "2026-11-01", instance="h100-x1")],
                       load_costs(costs_file(tmp_path, 10.0)))


def test_bad_budget_fails_naming_the_field(tmp_path):
    path = costs_file(tmp_path, budget=-5.0)
    with pytest.raises(ValueError, match="budget.monthly_usd"):
        load_costs(path)


@pytest.mark.parametrize("budget, passed", [(1000.0, True), (10.0, False)])
def test_asset_warns_over_budget_without_blocking(tmp_path, monkeypatch, budget, passed):
    from qlora_assets.training.cost_report import cost_report
    from resources.warehouse import WarehouseResource

    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    costs_file(config_dir, budget)
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(config_dir))
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    warehouse.append("adapters", pd.DataFrame([{"domain": "legal-ko", "version": "v1", "path": "/x",
                                                "manifest_json": json.dumps(manifest("legal-ko", "v1", 3600, "2026-11-01"))}]))
    result = dg.materialize([cost_report], resources={"warehouse": WarehouseResource(path=str(tmp_path / "wh.duckdb"))},
                            selection=[cost_report])
    assert result.success  # over budget never fails the run
    check = result.get_asset_check_evaluations()[0]
    assert check.passed is passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["usd_per_month"].value == pytest.approx(3.67 * 52 / 12, abs=0.01)


def test_cost_report_is_in_the_definitions():
    from definitions import defs

    assert dg.AssetKey("cost_report") in {key for key in defs.resolve_asset_graph().get_all_asset_keys()}
