"""`eval_report` and `gate_decision`: offline eval of the adapter version qlora_adapter recorded, then pass/block."""

import json
from pathlib import Path

import dagster as dg

from qlora.core.adapters import registered_adapter

from qlora.evaluation.config import gate_config_path, load_eval_settings, load_gate_config
from qlora.evaluation.decisions import (
    eval_results_for,
    record_eval_report,
    record_gate_decision,
)
from qlora.data.export import load_eval_rows
from qlora.evaluation.eval_set import EvalCase, cases_from_rows, load_eval_cases
from qlora.evaluation.gate import decide
from qlora.evaluation.metrics import is_measured
from qlora.evaluation.runner import evaluate_adapter
from qlora.modeling.base_identity import compare_bases
from qlora_assets.lineage import upstream_version
from qlora_assets.partitions import domain_partitions
from qlora.core.paths import paths
from resources.serving import ServingResource
from resources.warehouse import WarehouseResource

GATE_CHECK = "gate_passed"


class EvalRunConfig(dg.Config):
    """Which config files to use; relative names are under QLORA_CONFIG_DIR."""

    eval_settings_file: str = "eval.yaml"
    # Empty: $QLORA_QUALITY_GATE, else quality_gate.yaml (the demo sets quality_gate.demo.yaml).
    gates_file: str = ""

    def gates_path(self) -> Path:
        # The same resolution the config sensor watches (qlora.evaluation.config.gate_config_path).
        return gate_config_path(self.gates_file or None)

    def settings_path(self) -> Path:
        return _config_path(self.eval_settings_file)


def _config_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else paths().config_dir / path


def registered_path(warehouse, domain: str, version: str) -> Path:
    ref = registered_adapter(warehouse, domain, version)
    if ref is None:
        raise dg.Failure(f"qlora_adapter recorded {domain}@{version}, but the warehouse table 'adapters' has no "
                         "such version; re-materialize qlora_adapter")
    return Path(ref.path)


def eval_cases_for(warehouse, domain: str) -> tuple[list[EvalCase], str]:
    """The domain's eval rows from `train_eval_split`; before any split exists, the fixed eval file."""
    rows = load_eval_rows(warehouse, domain)
    if rows:
        return cases_from_rows(rows, f"train_eval_split[{domain}]"), f"warehouse: train_eval_split, domain {domain}"
    eval_file = paths().eval_dir / f"{domain}.jsonl"
    return load_eval_cases(eval_file), str(eval_file)


@dg.asset(
    partitions_def=domain_partitions,
    deps=["qlora_adapter"],
    kinds={"python", "duckdb"},
    group_name="evaluation",
    description="Offline eval of qlora_adapter's version vs base and deployed: ROUGE-L, JSON format, refusals, latency, tokens/s.",
)
def eval_report(
    context: dg.AssetExecutionContext, config: EvalRunConfig, warehouse: WarehouseResource, serving: ServingResource
) -> dg.MaterializeResult:
    domain = context.partition_key
    store = warehouse.get()
    version = upstream_version(context, "qlora_adapter", "version")
    adapter_path = registered_path(store, domain, version)
    cases, eval_source = eval_cases_for(store, domain)
    settings = load_eval_settings(config.settings_path())
    client = serving.client()
    served = client.base()  # what the router reports for the base it serves (GET /admin/base)
    same_base = compare_bases(served.model, served.fingerprint, adapter_path)
    if not same_base.passed:  # an adapter on another base loads whenever shapes agree, then answers badly
        raise dg.Failure(f"serving base differs from the adapter's base: {same_base.message()}",
                         metadata={"serving_base": same_base.serving_base, "adapter_base": same_base.adapter_base})
    context.log.info(f"evaluating {domain}@{version} on {len(cases)} rows, concurrency {settings.concurrency}")
    results = evaluate_adapter(client, adapter_path, cases, settings, domain, version, eval_source)
    record_eval_report(store, results)

    metadata: dict = {
        "adapter_version": version,
        "eval_rows": len(cases),
        "eval_source": eval_source,
        "base_fingerprint": same_base.serving_fingerprint,
        # Latency percentiles are per request at this many requests in flight.
        "eval_concurrency": settings.concurrency,
        "models": ", ".join(f"{role}={r.model}" for role, r in results.reports.items()),
        "report": dg.MetadataValue.md(results.markdown_table()),
    }
    # Numeric entries, one per candidate metric, so Dagster plots them across runs.
    for name, value in results.reports["candidate"].metrics.items():
        metadata[name] = dg.MetadataValue.float(float(value)) if is_measured(value) else f"not measured: {value.reason}"
    base_rouge = results.metric("base", "rouge_l")
    if is_measured(base_rouge):
        metadata["base_rouge_l"] = dg.MetadataValue.float(float(base_rouge))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    partitions_def=domain_partitions,
    deps=[eval_report],
    kinds={"python", "duckdb"},
    group_name="evaluation",
    description="Pass/block per gate of the quality gate file for the version eval_report evaluated, with reasons.",
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK, asset="gate_decision", blocking=True,
            description="Every quality gate passed; on a block, deployed_adapter does not run.",
        )
    ],
)
def gate_decision(context: dg.AssetExecutionContext, config: EvalRunConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain = context.partition_key
    store = warehouse.get()
    version = upstream_version(context, "eval_report", "adapter_version")
    results = eval_results_for(store, domain, version)
    if results is None:
        raise dg.Failure(f"eval_report recorded {domain}@{version}, but `eval_reports` has no rows for it; "
                         "re-materialize eval_report")
    gates_path = config.gates_path()
    decision = decide(results, load_gate_config(gates_path))
    record_gate_decision(store, decision)
    context.log.info(decision.summary())

    table = dg.MetadataValue.md(decision.markdown_table())
    metadata = {
        "adapter_version": decision.adapter_version,
        "passed": decision.passed,
        "gates_file": str(gates_path),
        "blocked_gates": ", ".join(decision.blocked_gates) or "none",
        "gates": table,
        "gates_json": dg.MetadataValue.json(json.loads(decision.gates_json())),
    }
    check = dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"summary": decision.summary(), "gates": table},
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
