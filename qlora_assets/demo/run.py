"""`qlora demo`: the whole cycle for every sample domain on the embedded defaults, then a summary.

Runs the same Definitions that `dagster dev` loads, in-process against the
persistent instance in $DAGSTER_HOME, so the runs show up in the UI afterwards.
"""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from qlora.core.adapters import AdapterNotFoundError, latest_adapter
from qlora.core.cpu_threads import THREADS_ENV
from qlora_assets.partitions import register_domains
from qlora.core.paths import discover_domains, paths
from qlora.core.warehouse import Warehouse


def _instance() -> dg.DagsterInstance:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(paths().dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def _partitioned_keys(defs: dg.Definitions) -> tuple[list[dg.AssetKey], list[dg.AssetKey]]:
    graph = defs.resolve_asset_graph()
    partitioned, unpartitioned = [], []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        (partitioned if node.partitions_def is not None else unpartitioned).append(key)
    return partitioned, unpartitioned


def run_demo(domains: list[str] | None = None) -> list[dict]:
    from definitions import defs

    # One step at a time: a training run has the CPUs to itself, even while the load average
    # still counts the previous domain's eval (qlora/core/cpu_threads.py).
    os.environ.setdefault(THREADS_ENV, str(os.cpu_count() or 1))
    instance = _instance()
    domains = domains or discover_domains()
    register_domains(instance, domains)
    partitioned, unpartitioned = _partitioned_keys(defs)
    job = defs.resolve_implicit_global_asset_job_def()
    if unpartitioned:
        result = job.execute_in_process(instance=instance, asset_selection=unpartitioned, raise_on_error=False)
        if not result.success:
            raise SystemExit("demo: building the base model failed; see the log above")
    outcomes = []
    for domain in domains:
        result = job.execute_in_process(
            instance=instance, partition_key=domain, asset_selection=partitioned, raise_on_error=False
        )
        outcomes.append({"domain": domain, "run_id": result.run_id, "success": result.success})
    track(instance)
    return outcomes


def track(instance: dg.DagsterInstance) -> None:
    """What `experiment_tracking_sensor` does under `dagster dev`, once: the demo runs no daemon."""
    from mlflow.exceptions import MlflowException

    from qlora.ops.endpoint import running_router
    from qlora.serving.client import ServingError
    from qlora.tracking.mlflow_tracker import MlflowTracker
    from qlora_assets.automation.tracking_sensor import sync_tracking

    try:  # tracking sits beside the cycle: a broken store costs the charts, not the demo
        sync_tracking(instance, MlflowTracker(), {}, running_router())
    except (MlflowException, OSError, ServingError) as exc:
        print(f"demo: experiment tracking skipped: {exc}")


def summary(domains: list[str]) -> str:
    wh = Warehouse(paths().warehouse)
    lines = ["", "qlora demo summary", "=================="]
    for domain in domains:
        kept = wh.query("select count(*) n from cleaned_dataset where domain = ?", [domain])
        try:
            version = latest_adapter(wh, domain).version
        except AdapterNotFoundError:
            version = ""
        gate = wh.query(
            "select adapter_version, passed from gate_decisions where domain = ? order by decided_at desc limit 1",
            [domain],
        )
        deployed = wh.query(
            "select version, result from deployments where domain = ? order by started_at desc limit 1", [domain]
        )
        report = wh.query(
            "select model_role, metric, value, measured from eval_reports where domain = ? and adapter_version = ?",
            [domain, version],
        )
        lines.append(f"\n[{domain}]")
        lines.append(f"  rows kept:       {int(kept['n'].iloc[0]) if len(kept) else 'n/a'}")
        lines.append(f"  adapter version: {version or 'none'}")
        if len(gate):
            lines.append(f"  gate decision:   {'PASS' if gate['passed'].iloc[0] else 'BLOCK'}")
        if len(deployed):
            lines.append(f"  deployment:      {deployed['version'].iloc[0]} ({deployed['result'].iloc[0]})")
        if len(report):
            table = report.pivot_table(index="metric", columns="model_role", values="value", aggfunc="first")
            lines.append("  eval report:")
            lines.extend("    " + row for row in table.round(3).to_string().splitlines())
    lines.extend(_serving_lines(domains))
    return "\n".join(lines)


def _serving_lines(domains: list[str]) -> list[str]:
    """Where to send traffic now: the router stays up after the demo (a detached process)."""
    from qlora.serving.daemon import is_serving, read_state

    state = read_state(paths().serving_state)
    if not is_serving(state):
        return ["", "serving: not running (no adapter passed its gate)"]
    example = domains[0] if domains else "<domain>"
    return [
        "",
        f"serving: router at {state['url']} (stop it with `kill {state['pid']}`)",
        f"  qlora chat --domain {example}    # a terminal chat, streamed, greedy",
        "  make mlflow     # MLflow UI: a run per training (loss, learning rate, speed, cost, eval), per domain",
        "  qlora status    # per domain: what serves, the last candidate and its gate, the training cost",
        "  # greedy like the eval and the gate (the API's default temperature 1 samples noise from a small model):",
        f"  curl -s {state['url']}/v1/chat/completions -H 'content-type: application/json' \\",
        f"    -d '{{\"model\": \"{example}\", \"temperature\": 0, \"max_tokens\": 64, "
        f"\"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}]}}'",
    ]
