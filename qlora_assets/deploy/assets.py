"""`deployed_adapter`: the adapter version gate_decision decided on, live on the router's alias."""
import dagster as dg

from qlora.core.adapters import registered_adapter
from qlora.deploy.config import load_deploy_config
from qlora.deploy.deployer import Deployer
from qlora.deploy.history import DEPLOYED, FAILED, deployment_history, history_markdown
from qlora.deploy.smoke import golden_prompts
from qlora.ops.serving_truth import observe_alias
from qlora_assets.deploy.observation import alias_observation, serving_metadata
from qlora_assets.lineage import upstream_version
from qlora_assets.partitions import domain_partitions
from resources.serving import ServingResource
from resources.warehouse import WarehouseResource

ANSWERS_CHECK = "serving_answers_new_version"


def _steps_markdown(steps: list[dict]) -> str:
    lines = ["| step | ok | seconds | detail |", "|---|---|---|---|"]
    for s in steps:
        detail = str(s.get("detail") or "").replace("|", "\\|")[:200]
        lines.append(f"| {s['step']} | {'yes' if s['ok'] else '**no**'} | {s['seconds']} | {detail} |")
    return "\n".join(lines)


@dg.asset(
    partitions_def=domain_partitions,
    deps=["gate_decision"],
    kinds={"python", "duckdb"},
    group_name="serving",
    description="The version gate_decision passed, swapped onto the router alias blue-green with canary and rollback.",
    # A blocked or rolled-back candidate changes nothing that serves, so it records no materialization:
    # the partition keeps showing the version that still serves, and the check says why.
    output_required=False,
    check_specs=[dg.AssetCheckSpec(
        ANSWERS_CHECK, asset="deployed_adapter",
        description="The candidate went live and a request to the alias is answered by it; a warning naming "
        "the gate (or the failed step) when it was blocked or rolled back and the previous version serves on.",
    )],
)
def deployed_adapter(context: dg.AssetExecutionContext, serving: ServingResource, warehouse: WarehouseResource):
    domain = context.partition_key
    store = warehouse.get()
    config = load_deploy_config()
    client = serving.client()
    version = upstream_version(context, "gate_decision", "adapter_version")
    adapter = registered_adapter(store, domain, version)
    if adapter is None:
        raise dg.Failure(f"gate_decision decided on {domain}@{version}, but the warehouse table 'adapters' has no "
                         "such version")
    golden = golden_prompts(domain, config.golden_prompts)
    record = Deployer(client, store, config, golden, on_step=lambda s: context.log.info(f"{domain}: {s}")).deploy(adapter)
    observed = observe_alias(client, domain)
    # What the router serves after this run, whatever the outcome (the partition's latest event).
    yield alias_observation(observed, f"deployed_adapter run {context.run.run_id[:8]}")
    metadata = {
        "domain": domain,
        "candidate_version": record.version,
        "served_name": adapter.served_name,
        "previous_version": record.previous_version or "",
        "result": record.result,
        "reason": record.reason,
        "gate_passed": record.gate_passed,
        **serving_metadata(observed),
        "steps": dg.MetadataValue.md(_steps_markdown(record.steps)),
        "deployment_history": dg.MetadataValue.md(history_markdown(deployment_history(store, domain))),
        "deploy_seconds": (record.finished_at - record.started_at).total_seconds(),
    }
    if record.result == FAILED:
        # The rollback could not be confirmed either: nobody knows what serves; that is an incident.
        raise dg.Failure(description=f"{domain}@{record.version} {record.result}: {record.reason}", metadata=metadata)
    if record.result != DEPLOYED:
        why = f"{domain}@{record.version} {record.result.replace('_', ' ')}: {record.reason}; serving: {observed.describe()}"
        context.log.warning(why)
        yield dg.AssetCheckResult(
            check_name=ANSWERS_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN, description=why,
            metadata={"result": record.result, "reason": record.reason, "serving": observed.describe()},
        )
        return
    answer = client.chat(domain, golden[0].messages, max_tokens=config.golden_max_tokens)
    yield dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name=ANSWERS_CHECK,
            passed=answer.model == adapter.served_name,
            metadata={"result": record.result, "answered_by": answer.model, "expected": adapter.served_name},
        )],
    )
