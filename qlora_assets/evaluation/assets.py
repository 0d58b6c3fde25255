"""`eval_report` and `gate_decision`: offline eval of the newest adapter, then pass/block per gate."""

import json
import os
from pathlib import Path

import dagster as dg

from qlora.core.adapters import AdapterNotFoundError, latest_adapter

from qlora.evaluation.config import load_eval_settings, load_gate_config
from qlora.evaluation.decisions import (
    latest_eval_results,
    record_eval_report,
    record_gate_decision,
)
from qlora.data.export import load_eval_rows
from qlora.evaluation.eval_set import EvalCase, cases_from_rows, load_eval_cases
from qlora.evaluation.gate import decide
from qlora.evaluation.metrics import is_measured
from qlora.evaluation.runner import evaluate_adapter
from qlora.modeling.base_identity import compare_bases, serving_base_root
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
        return _config_path(self.gates_file or os.environ.get("QLORA_QUALITY_GATE", "quality_gate.yaml"))

    def settings_path(self) -> Path:
        return _config_path(self.eval_settings_file)


def _config_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else paths().config_dir / path


def latest_adapter_or_fail(warehouse, domain: str) -> tuple[str, Path]:
    try:
        ref = latest_adapter(warehouse, domain)
    except AdapterNotFoundError as exc:
        raise dg.Failure(f"{exc}; materialise qlora_adapter first") from None
    return ref.version, Path(ref.path)


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
    description="Offline eval of the newest adapter vs base and deployed: ROUGE-L, JSON format, refusals, latency, tokens/s.",
)
def eval_report(
    context: dg.AssetExecutionContext, config: EvalRunConfig, warehouse: WarehouseResource, serving: ServingResource
) -> dg.MaterializeResult:
    domain = context.partition_key
    store = warehouse.get()
    version, adapter_path = latest_adapter_or_fail(store, domain)
    cases, eval_source = eval_cases_for(store, domain)
    settings = load_eval_settings(config.settings_path())
    client = serving.client()
    same_base = compare_bases(serving_base_root(client.models()), adapter_path)
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
    description="Pass/block per gate of the quality gate file for the newest eval report, with reasons.",
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
    results = latest_eval_results(store, domain)
    if results is None:
        raise dg.Failure(f"no eval report for domain {domain!r} in `eval_reports`; materialise eval_report first")
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
