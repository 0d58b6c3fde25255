"""The `cost_report` asset: GPU-hours and cost of every training run, and the month's spend against the budget."""
import dagster as dg
import pandas as pd

from qlora.core.paths import paths
from qlora.training.cost_report import load_costs, manifests_from_rows, monthly_report
from resources.warehouse import WarehouseResource

BUDGET_CHECK = "within_monthly_budget"


def budget_check(report: dict) -> dg.AssetCheckResult:
    """WARN, not ERROR: an over-budget month shows in the UI and blocks nothing downstream."""
    budget = report["budget_usd_per_month"]
    return dg.AssetCheckResult(
        check_name=BUDGET_CHECK,
        passed=not report["over_budget"],
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"usd_per_month": report["usd_per_month"], "budget_usd_per_month": budget,
                  "share_of_budget": round(report["usd_per_month"] / budget, 3) if budget else None},
        description=(f"projected ${report['usd_per_month']:,.2f} a month against a budget of ${budget:,.2f}"
                     if budget else "no budget set in configs/costs.yaml (budget.monthly_usd)"),
    )


@dg.asset(
    deps=["qlora_adapter"],
    kinds={"duckdb", "python"},
    group_name="training",
    description="GPU-hours and cost per training run, per domain per month at the weekly cadence, against the budget.",
    check_specs=[dg.AssetCheckSpec(BUDGET_CHECK, asset="cost_report", blocking=False,
                                   description="Projected monthly training spend is within budget.monthly_usd (WARN).")],
    automation_condition=dg.AutomationCondition.eager(),
)
def cost_report(warehouse: WarehouseResource) -> dg.MaterializeResult:
    rows = warehouse.get().query("select domain, version, manifest_json from adapters")
    report = monthly_report(manifests_from_rows(rows.to_dict("records")), load_costs(paths().config_dir / "costs.yaml"))
    per_domain = pd.DataFrame([{"domain": d, **v} for d, v in report["domains"].items()])
    return dg.MaterializeResult(
        metadata={
            "runs": len(report["runs"]),
            "usd_per_month": report["usd_per_month"],
            "budget_usd_per_month": report["budget_usd_per_month"],
            "runs_per_month": report["runs_per_month"],
            "gpu_hours_total": round(sum(r["gpu_hours"] for r in report["runs"]), 4),
            "per_domain": dg.MetadataValue.md(per_domain.to_markdown(index=False) if len(per_domain) else "no runs yet"),
        },
        check_results=[budget_check(report)],
    )
