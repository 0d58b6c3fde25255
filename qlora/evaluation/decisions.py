"""Eval reports and gate decisions in the warehouse, and the look-up the deploy step relies on.

Both tables are append-only histories: a re-run adds rows with a newer
timestamp, and readers take the latest. A deploy must ask
``latest_gate_decision(warehouse, domain, version)`` for the exact version it
is about to serve, so a version blocked in any run never deploys in a later one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from qlora.evaluation.gate import GateDecision
from qlora.evaluation.results import EvalResults
from qlora.core.warehouse import Warehouse

EVAL_REPORTS = "eval_reports"
GATE_DECISIONS = "gate_decisions"


@dataclass(frozen=True)
class RecordedDecision:
    domain: str
    adapter_version: str
    passed: bool
    gates: list[dict[str, Any]]
    decided_at: datetime

    @property
    def blocked_gates(self) -> list[str]:
        return [g["gate"] for g in self.gates if g["verdict"] == "block"]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def record_eval_report(warehouse: Warehouse, results: EvalResults) -> int:
    frame = results.warehouse_frame()
    # Nullable float so "not measured" is stored as NULL, never as a number.
    frame["value"] = frame["value"].astype("Float64")
    frame["evaluated_at"] = _now()
    warehouse.append(EVAL_REPORTS, frame)
    return len(frame)


def latest_eval_results(warehouse: Warehouse, domain: str) -> EvalResults | None:
    """The newest eval run recorded for the domain (all model roles of that run), or None."""
    frame = warehouse.query(
        f"select * from {EVAL_REPORTS} where domain = ? and evaluated_at = "
        f"(select max(evaluated_at) from {EVAL_REPORTS} where domain = ?)",
        [domain, domain],
    )
    return None if frame.empty else EvalResults.from_frame(frame)


def eval_results_for(warehouse: Warehouse, domain: str, adapter_version: str) -> EvalResults | None:
    """The newest eval run recorded for exactly this adapter version (all model roles of that run), or None."""
    frame = warehouse.query(
        f"select * from {EVAL_REPORTS} where domain = ? and adapter_version = ? and evaluated_at = "
        f"(select max(evaluated_at) from {EVAL_REPORTS} where domain = ? and adapter_version = ?)",
        [domain, adapter_version, domain, adapter_version],
    )
    return None if frame.empty else EvalResults.from_frame(frame)


def record_gate_decision(warehouse: Warehouse, decision: GateDecision) -> RecordedDecision:
    decided_at = _now()
    frame = pd.DataFrame(
        [
            {
                "domain": decision.domain,
                "adapter_version": decision.adapter_version,
                "passed": decision.passed,
                "gates_json": decision.gates_json(),
                "decided_at": decided_at,
            }
        ]
    )
    warehouse.append(GATE_DECISIONS, frame)
    return RecordedDecision(decision.domain, decision.adapter_version, decision.passed, json.loads(decision.gates_json()), decided_at)


def latest_gate_decision(warehouse: Warehouse, domain: str, adapter_version: str) -> RecordedDecision | None:
    """The newest decision for exactly this domain and adapter version, or None if it was never gated."""
    frame = warehouse.query(
        f"select * from {GATE_DECISIONS} where domain = ? and adapter_version = ? order by decided_at desc limit 1",
        [domain, adapter_version],
    )
    if frame.empty:
        return None
    row = frame.iloc[0]
    return RecordedDecision(
        domain=row["domain"],
        adapter_version=row["adapter_version"],
        passed=bool(row["passed"]),
        gates=json.loads(row["gates_json"]),
        decided_at=pd.Timestamp(row["decided_at"]).to_pydatetime(),
    )
