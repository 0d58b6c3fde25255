"""GPU-hours and cost per training run, and per domain per month at the weekly cadence, against a budget.

A run's cost is priced from its own manifest: the measured wall seconds, the GPUs it used and its
config's `cost_instance`, at today's prices in configs/costs.yaml. A domain's monthly cost is its
latest run's cost times the runs a month of the weekly cycle (52/12); the total is compared with
`budget.monthly_usd`. Over budget is reported, not enforced: training never waits on money.
"""
from __future__ import annotations

import json

from qlora.training.costs import RUNS_PER_MONTH_WEEKLY, CostsConfig, load_costs

__all__ = ["load_costs", "monthly_report", "run_cost", "manifests_from_rows"]


def run_cost(manifest: dict, costs: CostsConfig) -> dict:
    """GPU-hours and USD of one finished run, from its measured seconds."""
    seconds = float(manifest["metrics"]["wall_seconds"])
    instance = manifest.get("cost", {}).get("instance") or manifest["config"]["cost_instance"]
    if instance not in costs.instances:
        raise ValueError(f"run {manifest.get('domain')}@{manifest.get('version')}: instance {instance!r} "
                         f"not in configs/costs.yaml (known: {', '.join(costs.instances)})")
    price = costs.instances[instance]
    gpus = int(manifest["metrics"].get("world_size") or price.gpus) if price.gpus else 0
    return {"domain": manifest.get("domain", "?"), "version": manifest.get("version", "?"), "instance": instance,
            "wall_seconds": round(seconds, 1), "gpus": gpus, "gpu_hours": round(seconds * gpus / 3600, 4),
            "usd": round(seconds / 3600 * price.usd_per_hour, 4)}


def monthly_report(manifests: list[dict], costs: CostsConfig) -> dict:
    """Per run, per domain (latest run x runs a month) and the total against the budget."""
    runs = sorted((run_cost(m, costs) | {"created_at": m.get("created_at", "")} for m in manifests),
                  key=lambda r: r["created_at"])
    latest = {run["domain"]: run for run in runs}
    per_month = costs.budget.runs_per_month if costs.budget else RUNS_PER_MONTH_WEEKLY
    domains = {d: {"usd_per_run": r["usd"], "gpu_hours_per_run": r["gpu_hours"],
                   "usd_per_month": round(r["usd"] * per_month, 2), "gpu_hours_per_month": round(r["gpu_hours"] * per_month, 3)}
               for d, r in sorted(latest.items())}
    total = round(sum(d["usd_per_month"] for d in domains.values()), 2)
    budget = costs.budget.monthly_usd if costs.budget else None
    return {"runs": runs, "domains": domains, "usd_per_month": total, "runs_per_month": round(per_month, 3),
            "budget_usd_per_month": budget, "over_budget": budget is not None and total > budget}


def manifests_from_rows(rows) -> list[dict]:
    """The `adapters` table's manifest_json column as dicts (domain and version filled from the row)."""
    out = []
    for row in rows:
        manifest = json.loads(row["manifest_json"])
        out.append({**manifest, "domain": manifest.get("domain") or row["domain"],
                    "version": manifest.get("version") or row["version"]})
    return out
