"""`ab_experiment`, `online_report`, `ab_decision`, `ab_feedback_candidates`: the staging A/B after the gate."""
import dagster as dg

from qlora.ab import lifecycle
from qlora.ab.config import ABConfig, load_ab_config
from qlora.ab.export import export_candidates
from qlora.ab.records import experiments, has_promote_decision, journal_frames, running_experiment
from qlora.ab.report import build_report
from qlora.ab.sample_size import plan_sample
from qlora.core.adapters import latest_adapter, version_of
from qlora.deploy.config import load_deploy_config
from qlora.deploy.deployer import Deployer
from qlora.evaluation.decisions import latest_gate_decision
from qlora.deploy.serving_state import ServingState
from qlora.deploy.smoke import golden_prompts
from qlora.core.paths import paths
from qlora_assets.ab.markdown import report_markdown
from qlora_assets.partitions import domain_partitions
from resources.serving import ServingResource
from resources.warehouse import WarehouseResource

GROUP = "online_ab"
PROMOTION_CHECK = "production_has_promote_decision"


@dg.asset(partitions_def=domain_partitions, deps=["gate_decision"], kinds={"python", "duckdb"}, group_name=GROUP,
          description="Starts a staging A/B (configs/ab.yaml) of the newest gate-passed adapter against production.",
          # After a gate pass (a block fails the gate's blocking check and stops here).
          automation_condition=dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed())
def ab_experiment(context: dg.AssetExecutionContext, serving: ServingResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain, store = context.partition_key, warehouse.get()
    config = load_ab_config()
    plan = plan_sample(config)
    if running := running_experiment(store, domain):
        # One experiment per domain: a newer candidate waits until this one is decided.
        return dg.MaterializeResult(metadata={"started": False, "experiment_id": running.experiment_id,
                                              "reason": f"experiment {running.experiment_id} still runs",
                                              "candidate": running.candidate, "planned_sample": running.planned})
    if domain not in config.required_for_domains:
        # Opt-in per domain: elsewhere deployed_adapter deploys on the gate alone (`qlora ab start` still works).
        return dg.MaterializeResult(metadata={"started": False, "reason": f"{domain} is not in required_for_domains "
                                              "of configs/ab.yaml", "planned_sample": plan.total})
    candidate = latest_adapter(store, domain)
    client = serving.client()
    gate = latest_gate_decision(store, domain, candidate.version)  # the gate alone: the A/B is what comes next
    production = ServingState(client, store).serving(domain)
    if gate is None or not gate.passed or production is None or production.name == candidate.served_name:
        reason = f"{candidate.served_name}: no passing gate decision" if gate is None or not gate.passed else ("nothing serves the domain yet" if production is None
                                          else f"{candidate.served_name} already serves production")
        return dg.MaterializeResult(metadata={"started": False, "reason": reason, "candidate": candidate.served_name})
    record = lifecycle.start(client, store, config, candidate)
    context.log.info(f"{domain}: experiment {record.experiment_id} needs {plan.describe()}")
    return dg.MaterializeResult(metadata={
        "started": True, "experiment_id": record.experiment_id, "control": record.control,
        "candidate": record.candidate, "traffic_share": config.traffic_share, "metric": config.primary_metric,
        "test": config.test, "alpha": config.alpha, "power": config.power,
        "minimum_detectable_effect": config.minimum_detectable_effect,
        "planned_sample": dg.MetadataValue.int(record.planned), "planned": plan.describe()})


@dg.asset(partitions_def=domain_partitions, deps=["ab_experiment"], kinds={"python", "duckdb"}, group_name=GROUP,
          description="Per-arm requests, errors, latency, tokens/s, feedback, thumbs-up and win rate with 95% intervals.")
def online_report(context: dg.AssetExecutionContext, serving: ServingResource,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain, store = context.partition_key, warehouse.get()
    added = lifecycle.sync_journal(serving.client(), store)
    known = experiments(store, domain)
    if not known:
        return dg.MaterializeResult(metadata={"experiment_id": "", "journal_rows_added": str(added)})
    experiment = known[0]
    config = ABConfig.model_validate_json(experiment.config_json)
    responses, feedback = journal_frames(store, experiment.experiment_id)
    report = build_report(experiment.experiment_id, experiment.control, experiment.candidate, responses, feedback,
                          config, experiment.planned)
    return dg.MaterializeResult(metadata={
        "experiment_id": experiment.experiment_id, "status": experiment.status,
        "report": dg.MetadataValue.md(report_markdown(report)),
        "win_rate": dg.MetadataValue.float(float(report.win_rate if report.win_rate is not None else float("nan"))),
        "progress": dg.MetadataValue.float(float(report.progress)),
        "journal_rows_added": f"{added[0]} responses, {added[1]} feedback"})


def _deployer(context, client, store, domain: str) -> Deployer:
    config = load_deploy_config()
    return Deployer(client, store, config, golden_prompts(domain, config.golden_prompts),
                    on_step=lambda s: context.log.info(f"{domain} promote: {s}"))


@dg.asset(partitions_def=domain_partitions, deps=["online_report"], kinds={"python", "duckdb"}, group_name=GROUP,
          description="promote / reject / continue by the pre-registered test; promote canaries the candidate in.",
          check_specs=[dg.AssetCheckSpec(PROMOTION_CHECK, asset="ab_decision", blocking=True,
                                         description="Production is served by the version it had, or by one with "
                                                     "a 'promote' decision for that exact version.")])
def ab_decision(context: dg.AssetExecutionContext, serving: ServingResource,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain, store = context.partition_key, warehouse.get()
    client = serving.client()
    result = lifecycle.look(client, store, domain, deployer=_deployer(context, client, store, domain))
    if result is None:
        return dg.MaterializeResult(metadata={"action": "none", "reason": "no experiment running"},
                                    check_results=[dg.AssetCheckResult(check_name=PROMOTION_CHECK, passed=True)])
    serving_now = ServingState(client, store).serving(domain)
    now = serving_now.name if serving_now else ""
    legitimate = now in (result.experiment.control, "") or (
        now == result.experiment.candidate and has_promote_decision(store, domain, version_of(now)))
    if result.decision.action == "continue":
        legitimate = legitimate or now == result.experiment.candidate  # the split, mid-experiment
    numbers = {k: v for k, v in result.decision.numbers.items() if isinstance(v, (int, float, str)) and v is not None}
    return dg.MaterializeResult(
        metadata={"experiment_id": result.experiment.experiment_id, "action": result.decision.action,
                  "reason": result.decision.reason, "outcome": result.outcome, "production": now,
                  "numbers": dg.MetadataValue.json(numbers), "report": dg.MetadataValue.md(report_markdown(result.report))},
        check_results=[dg.AssetCheckResult(check_name=PROMOTION_CHECK, passed=bool(legitimate),
                                           metadata={"production": now, "action": result.decision.action})])


@dg.asset(partitions_def=domain_partitions, deps=["ab_decision"], kinds={"python"}, group_name=GROUP,
          description="An ended experiment's feedback as next cycle's data candidates (PII-masked, cleaned on read).")
def ab_feedback_candidates(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain, store = context.partition_key, warehouse.get()
    ended = [e for e in experiments(store, domain) if e.status != "running"]
    if not ended:
        return dg.MaterializeResult(metadata={"exported": False, "reason": "no ended experiment"})
    config = ABConfig.model_validate_json(ended[0].config_json)
    result = export_candidates(store, ended[0], paths().data_dir, config.thumbs_up_min_score)
    return dg.MaterializeResult(metadata={
        "experiment_id": ended[0].experiment_id, "exported": True,
        "training_file": str(result.training_file), "review_file": str(result.review_file),
        "chosen_rejected_pairs": result.pairs, "thumbs_up_rows": result.thumbs_up,
        "thumbs_down_for_review": result.thumbs_down, "pii_spans_masked": result.pii_spans_masked})
