"""`deployed_adapter`: the adapter version gate_decision decided on, live on the router's alias."""
import dagster as dg

from qlora.core.adapters import registered_adapter
from qlora.deploy.config import load_deploy_config
from qlora.deploy.deployer import Deployer
from qlora.deploy.history import DEPLOYED, deployment_history, history_markdown
from qlora.deploy.smoke import golden_prompts
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
    check_specs=[dg.AssetCheckSpec(ANSWERS_CHECK, asset="deployed_adapter",
                                   description="A request to the alias is answered by the version just deployed.")],
)
def deployed_adapter(context: dg.AssetExecutionContext, serving: ServingResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
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
    history = deployment_history(store, domain)
    metadata = {
        "domain": domain,
        "version": record.version,
        "served_name": adapter.served_name,
        "previous_version": record.previous_version or "",
        "result": record.result,
        "reason": record.reason,
        "gate_passed": record.gate_passed,
        "steps": dg.MetadataValue.md(_steps_markdown(record.steps)),
        "deployment_history": dg.MetadataValue.md(history_markdown(history)),
        "deploy_seconds": (record.finished_at - record.started_at).total_seconds(),
    }
    if record.result != DEPLOYED:
        # The previous version still serves (or, for "failed", look now); the run must say so loudly.
        raise dg.Failure(description=f"{domain}@{record.version} {record.result}: {record.reason}", metadata=metadata)
    answer = client.chat(domain, golden[0].messages, max_tokens=config.golden_max_tokens)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name=ANSWERS_CHECK,
            passed=answer.model == adapter.served_name,
            metadata={"answered_by": answer.model, "expected": adapter.served_name},
        )],
    )
