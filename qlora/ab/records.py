"""The warehouse side of A/B: experiments, the journal's rows, and every decision with its numbers.

All tables are append-only histories (newest row per experiment wins), like the gate's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

from qlora.core.warehouse import Warehouse

EXPERIMENTS, DECISIONS = "ab_experiments", "ab_decisions"
RESPONSES, FEEDBACK = "ab_responses", "ab_feedback"
RUNNING, STOPPED = "running", "stopped"


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class ExperimentRecord:
    experiment_id: str
    domain: str
    control: str          # versioned names
    candidate: str
    candidate_path: str
    planned: int
    config_json: str
    started_at: datetime
    status: str = RUNNING
    updated_at: datetime | None = None

    @property
    def candidate_version(self) -> str:
        return self.candidate.split("@", 1)[1]


def record_experiment(warehouse: Warehouse, record: ExperimentRecord) -> None:
    record.updated_at = utc_now()
    warehouse.append(EXPERIMENTS, pd.DataFrame([record.__dict__]))


def experiments(warehouse: Warehouse, domain: str | None = None) -> list[ExperimentRecord]:
    """The current state of every experiment (of one domain), newest first."""
    where = "where domain = ?" if domain else ""
    frame = warehouse.query(
        f"select * from (select *, row_number() over (partition by experiment_id order by updated_at desc) as rn "
        f"from {EXPERIMENTS} {where}) where rn = 1 order by started_at desc", [domain] if domain else [])
    fields = ExperimentRecord.__dataclass_fields__
    return [ExperimentRecord(**{k: row[k] for k in fields}) for _, row in frame.iterrows()]


def running_experiment(warehouse: Warehouse, domain: str) -> ExperimentRecord | None:
    return next((e for e in experiments(warehouse, domain) if e.status == RUNNING), None)


def record_decision(warehouse: Warehouse, experiment: ExperimentRecord, action: str, reason: str,
                    numbers: dict, report: dict) -> None:
    warehouse.append(DECISIONS, pd.DataFrame([{
        "experiment_id": experiment.experiment_id, "domain": experiment.domain, "control": experiment.control,
        "candidate": experiment.candidate, "candidate_version": experiment.candidate_version, "action": action,
        "reason": reason, "numbers_json": json.dumps(numbers, default=str),
        "report_json": json.dumps(report, default=str), "decided_at": utc_now()}]))


def decisions(warehouse: Warehouse, domain: str) -> pd.DataFrame:
    return warehouse.query(f"select * from {DECISIONS} where domain = ? order by decided_at desc", [domain])


def has_promote_decision(warehouse: Warehouse, domain: str, version: str) -> bool:
    frame = warehouse.query(f"select count(*) as n from {DECISIONS} where domain = ? and candidate_version = ? "
                            "and action = 'promote'", [domain, version])
    return not frame.empty and int(frame.iloc[0]["n"]) > 0


def ingest_journal(warehouse: Warehouse, responses: list[dict], feedback: list[dict]) -> tuple[int, int]:
    """Add rows not yet held (by response id / feedback identity) in one transaction, so two looks
    ingesting at once (several domains' sensor runs) never store a row twice; re-ingesting is harmless."""
    added = []
    for table, rows, key in ((RESPONSES, responses, ["response_id"]),
                             (FEEDBACK, feedback, ["response_id", "other_response_id", "kind", "created_at"])):
        frame = pd.DataFrame(rows)
        if frame.empty:
            added.append(0)
            continue
        if table == FEEDBACK:
            frame = frame.astype({"score": "Int64"})  # all-null in a page of thumbs: keep the column an integer
        frame = frame.drop_duplicates(subset=key)
        added.append(warehouse.insert_new(table, frame, key))
    return added[0], added[1]


def held_seq(warehouse: Warehouse, journal_id: str) -> tuple[int, int]:
    """The last seq already held from this journal, per table (0 when none): the next page starts after it."""
    out = []
    for table in (RESPONSES, FEEDBACK):
        frame = warehouse.query(f"select coalesce(max(seq), 0) as s from {table} where journal_id = ?", [journal_id])
        out.append(0 if frame.empty else int(frame.iloc[0]["s"]))
    return out[0], out[1]


def journal_frames(warehouse: Warehouse, experiment_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    responses = warehouse.query(f"select * from {RESPONSES} where experiment_id = ?", [experiment_id])
    feedback = warehouse.query(
        f"select f.* from {FEEDBACK} f join {RESPONSES} r on f.response_id = r.response_id "
        "where r.experiment_id = ?", [experiment_id])
    return responses, feedback
