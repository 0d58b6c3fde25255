"""Deployment history: one row per attempt in the warehouse table `deployments`.

Rows are appended, never replaced: the history is the audit trail ("who served
what, when, and why it was rolled back") and the source of rollback targets.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pandas as pd

from qlora.core.warehouse import Warehouse

TABLE = "deployments"

# result values
DEPLOYED = "deployed"          # the alias names the new version only; the old one is unloaded
ROLLED_BACK = "rolled_back"    # a step failed; the previous version serves again (confirmed)
BLOCKED = "blocked"            # refused before any change: gate not passed, or trained on another base
FAILED = "failed"              # a step failed and the rollback could not be confirmed either


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class DeploymentRecord:
    domain: str
    version: str
    path: str
    action: str                      # "deploy" or "rollback"
    gate_passed: bool
    started_at: datetime
    previous_version: str | None = None
    finished_at: datetime | None = None
    result: str = ""
    reason: str = ""
    steps: list[dict] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        row = asdict(self)
        row["steps_json"] = json.dumps(row.pop("steps"), ensure_ascii=False)
        row["previous_version"] = row["previous_version"] or ""
        return pd.DataFrame([row])


def record_deployment(warehouse: Warehouse, record: DeploymentRecord) -> None:
    warehouse.append(TABLE, record.frame())


def deployment_history(warehouse: Warehouse, domain: str, limit: int = 20) -> pd.DataFrame:
    """Newest first."""
    return warehouse.query(
        f"select * from {TABLE} where domain = ? order by started_at desc limit {int(limit)}", [domain]
    )


def deployed_versions(warehouse: Warehouse, domain: str) -> pd.DataFrame:
    """Versions that went live for the domain (deploy or rollback succeeded), newest first."""
    return warehouse.query(
        f"select version, path, finished_at from {TABLE} where domain = ? and result = ? "
        "order by finished_at desc",
        [domain, DEPLOYED],
    )


def history_markdown(history: pd.DataFrame) -> str:
    if history.empty:
        return "_no deployments yet_"
    lines = ["| started | action | version | gate | result | reason |", "|---|---|---|---|---|---|"]
    for row in history.itertuples():
        reason = str(row.reason).replace("|", "\\|").replace("\n", " ")
        gate = "passed" if row.gate_passed else "not passed"
        lines.append(
            f"| {row.started_at:%Y-%m-%d %H:%M:%S} | {row.action} | {row.version} | {gate} "
            f"| {row.result} | {reason} |"
        )
    return "\n".join(lines)
