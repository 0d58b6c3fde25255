"""`qlora evaluate` and `qlora quality-gate`: the seed's CI steps over the evaluation library."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def quality_gate(
    results: Path = typer.Option(..., "--results", help="Eval results JSON written by `qlora evaluate`."),
    gates: Optional[Path] = typer.Option(
        None, "--gates", help="Quality gate YAML (default: $QLORA_QUALITY_GATE, else quality_gate.yaml; a relative "
        "name that is not a file here is read under QLORA_CONFIG_DIR)."),
    as_json: bool = typer.Option(False, "--json", help="Print the decision as JSON."),
) -> None:
    """Decide pass/block for an adapter's eval results; exit 1 on block, 2 on unusable input."""
    from qlora.evaluation.config import ConfigError, gate_config_path, load_gate_config
    from qlora.evaluation.gate import decide
    from qlora.evaluation.results import EvalResults

    try:
        gates_file = gates if gates and gates.is_file() else gate_config_path(gates)
        decision = decide(EvalResults.read(results), load_gate_config(gates_file))
    except (ConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(decision.to_dict(), ensure_ascii=False, indent=2))
    else:
        typer.echo(decision.markdown_table())
        typer.echo(decision.summary())
    raise typer.Exit(0 if decision.passed else 1)


def evaluate(
    model: Path = typer.Option(..., "--model", help="Adapter folder (adapter_config.json, manifest.json)."),
    eval_data: Path = typer.Option(..., "--eval-data", help="Eval set JSONL (data/eval/<domain>.jsonl)."),
    output: Path = typer.Option(..., "--output", help="Where to write the results JSON."),
    server: Optional[str] = typer.Option(None, "--server", help="Serving URL; omitted: start an embedded server."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="QLORA_API_KEY", help="Bearer key for load/unload."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="Base model folder for the embedded server."),
    domain: Optional[str] = typer.Option(None, "--domain", help="Domain (default: the adapter's parent folder name)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Eval settings YAML (default configs/eval.yaml)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Override the config's concurrency."),
) -> None:
    """Run the eval set on the candidate adapter, the base model and the deployed adapter; write results."""
    from qlora.evaluation.runner import evaluate_adapter_cli
    from qlora.serving.client import ServingError

    try:
        results = evaluate_adapter_cli(
            model, eval_data, server=server, api_key=api_key, base_model=base_model,
            domain=domain, config_path=config, concurrency=concurrency,
        )
    except (FileNotFoundError, ValueError, TimeoutError, ServingError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    results.write(output)
    typer.echo(results.markdown_table())
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    app.command("quality-gate")(quality_gate)
