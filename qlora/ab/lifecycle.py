"""Start, look at, and end an experiment on the router; promote or reject on the decision.

start: the candidate is loaded beside production under its immutable name, the alias splits
       (``traffic_share`` to the candidate), the router learns the experiment (sticky arms).
look:  the journal is ingested into the warehouse, the report built, the decision taken and
       stored with its numbers.
promote: the experiment ends, the alias returns to production, and the deployer's canary path
       moves it to the candidate (smoke, steps, rollback on failure) as for any deploy.
reject:  the experiment ends, the alias returns to production alone, the candidate is unloaded.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from qlora.ab.config import ABConfig
from qlora.ab.decision import CONTINUE, PROMOTE, REJECT, Decision, decide
from qlora.ab.records import (
    RUNNING, STOPPED, ExperimentRecord, held_seq, ingest_journal, journal_frames, record_decision, record_experiment,
    running_experiment, utc_now,
)
from qlora.ab.report import OnlineReport, build_report
from qlora.ab.router_api import ABRouterApi
from qlora.ab.sample_size import plan_sample
from qlora.core.adapters import AdapterRef
from qlora.core.warehouse import Warehouse
from qlora.deploy.serving_state import ServingState
from qlora.evaluation.decisions import latest_gate_decision


class ExperimentError(RuntimeError):
    pass


@dataclass
class Look:
    experiment: ExperimentRecord
    report: OnlineReport
    decision: Decision
    outcome: str = ""  # what applying the decision did


def start(client, warehouse: Warehouse, config: ABConfig, candidate: AdapterRef) -> ExperimentRecord:
    domain = candidate.domain
    gate = latest_gate_decision(warehouse, domain, candidate.version)
    if gate is None or not gate.passed:
        raise ExperimentError(f"{candidate.served_name} has no passing gate decision: only a version that passed "
                              "the offline gate goes on live traffic")
    if running := running_experiment(warehouse, domain):
        raise ExperimentError(f"{domain} already runs experiment {running.experiment_id} ({running.candidate}); "
                              f"one experiment per domain: `qlora ab stop --domain {domain}` first")
    state = ServingState(client, warehouse)
    production = state.serving(domain)
    if production is None:
        raise ExperimentError(f"nothing serves {domain} yet: an A/B needs a production version to compare with")
    if production.name == candidate.served_name:
        raise ExperimentError(f"{candidate.served_name} already serves {domain}: nothing to test")
    api = ABRouterApi(client)
    experiment_id = f"{domain}-{candidate.version}-{uuid.uuid4().hex[:8]}"
    try:
        state.load(candidate.served_name, candidate.path)
        client.wait_for_model(candidate.served_name, timeout_s=60)
        client.set_alias(domain, {production.name: 1 - config.traffic_share, candidate.served_name: config.traffic_share})
        api.start(domain, experiment_id, production.name, candidate.served_name, config.assignment_header)
    except Exception:
        _restore_production(client, api, domain, production.name, candidate.served_name)
        raise
    finally:
        api.close()
    record = ExperimentRecord(experiment_id, domain, production.name, candidate.served_name, candidate.path,
                              plan_sample(config).total, config.model_dump_json(), utc_now())
    record_experiment(warehouse, record)
    return record


def _restore_production(client, api: ABRouterApi, domain: str, production: str, candidate: str) -> None:
    """Production alone on the alias, the candidate gone: the state before the experiment."""
    api.stop(domain)
    client.set_alias(domain, {production: 1.0})
    if candidate:
        ServingState(client, None).unload(candidate)


def sync_journal(client, warehouse: Warehouse) -> tuple[int, int]:
    """Pull the router's journal rows the warehouse does not hold yet."""
    api = ABRouterApi(client)
    try:
        after = held_seq(warehouse, api.journal_id())
        return ingest_journal(warehouse, api.journal("responses", after[0]), api.journal("feedback", after[1]))
    finally:
        api.close()


def look(client, warehouse: Warehouse, domain: str, apply: bool = True, deployer=None) -> Look | None:
    """Ingest, report, decide, store the decision; with ``apply``, promote or reject on it."""
    experiment = running_experiment(warehouse, domain)
    if experiment is None:
        return None
    config = ABConfig.model_validate_json(experiment.config_json)  # the rules fixed at start
    sync_journal(client, warehouse)
    responses, feedback = journal_frames(warehouse, experiment.experiment_id)
    report = build_report(experiment.experiment_id, experiment.control, experiment.candidate, responses, feedback,
                          config, experiment.planned)
    elapsed = (utc_now() - experiment.started_at).total_seconds() / 3600
    decision = decide(report, config, elapsed)
    record_decision(warehouse, experiment, decision.action, decision.reason, decision.numbers, report.to_dict())
    result = Look(experiment, report, decision)
    if apply and decision.action != CONTINUE:
        result.outcome = apply_decision(client, warehouse, experiment, decision, deployer)
    return result


def apply_decision(client, warehouse: Warehouse, experiment: ExperimentRecord, decision: Decision, deployer=None) -> str:
    api = ABRouterApi(client)
    try:
        _restore_production(client, api, experiment.domain, experiment.control,
                            experiment.candidate if decision.action == REJECT else "")
    finally:
        api.close()
    experiment.status = decision.action if decision.action in (PROMOTE, REJECT) else STOPPED
    record_experiment(warehouse, experiment)
    if decision.action == REJECT:
        return f"rejected: {experiment.control} serves {experiment.domain} alone, {experiment.candidate} unloaded"
    if deployer is None:
        return "promote recorded; no deployer given, production unchanged"
    candidate = AdapterRef(experiment.domain, experiment.candidate_version, experiment.candidate_path)
    record = deployer.deploy(candidate)
    return f"promote -> deploy {record.result}: {record.reason or 'canary passed'}"


def stop(client, warehouse: Warehouse, domain: str) -> ExperimentRecord | None:
    """End the domain's experiment without a decision; production stays as it was."""
    experiment = running_experiment(warehouse, domain)
    api = ABRouterApi(client)
    try:
        if experiment is None:
            api.stop(domain)
            return None
        _restore_production(client, api, domain, experiment.control, experiment.candidate)
    finally:
        api.close()
    experiment.status = STOPPED
    record_experiment(warehouse, experiment)
    return experiment


def status_lines(warehouse: Warehouse, domain: str) -> list[str]:
    from qlora.ab.records import decisions

    experiment = running_experiment(warehouse, domain)
    if experiment is None:
        return [f"{domain}: no experiment running"]
    lines = [f"{domain}: experiment {experiment.experiment_id} {experiment.control} vs {experiment.candidate}, "
             f"planned {experiment.planned}, started {experiment.started_at:%Y-%m-%d %H:%M}"]
    latest = decisions(warehouse, domain)
    latest = latest[latest["experiment_id"] == experiment.experiment_id]
    if not latest.empty:
        row = latest.iloc[0]
        numbers = json.loads(row["numbers_json"])
        lines.append(f"  last look {row['decided_at']:%Y-%m-%d %H:%M}: {row['action']} ({row['reason']}); "
                     f"observed {numbers.get('observed')} of {numbers.get('planned')}")
    return lines
