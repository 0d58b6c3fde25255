"""`qlora train`, `qlora plan`, `qlora merge`: the training library without Dagster."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def train(
    config: Path = typer.Option(..., "--config", help="configs/qlora/<profile>.yaml"),
    data: Path = typer.Option(..., "--data", help="train.jsonl, one {'messages': [...]} per line"),
    output: Path = typer.Option(..., "--output", help="adapter folder; re-running resumes from its checkpoints"),
    base: Path = typer.Option(None, "--base", help="base model folder (default: the config's profile)"),
    eval_data: Path = typer.Option(None, "--eval-data", help="optional eval rows"),
) -> None:
    """Train a QLoRA adapter (the seed's CI training step)."""
    from qlora.training.entrypoint import main

    args = ["--config", str(config), "--data", str(data), "--output", str(output)]
    args += ["--base", str(base)] if base else []
    args += ["--eval-data", str(eval_data)] if eval_data else []
    raise typer.Exit(main(args))


def plan(
    config: Path = typer.Option(..., "--config", help="configs/qlora/<profile>.yaml"),
    rows: int = typer.Option(10_000, "--rows", help="training rows"),
    mean_tokens: int = typer.Option(600, "--mean-tokens", help="mean tokens per row"),
    tokens_per_second: float = typer.Option(1920.0, "--tokens-per-second", help="throughput to assume (H200 seed measure)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Trainable parameters, peak memory estimate, GPU-hours and cost, on the meta device."""
    from qlora.core.paths import paths
    from qlora.training.config import load_config
    from qlora.training.plan import plan as make_plan

    result = make_plan(load_config(config), rows, mean_tokens, tokens_per_second, paths().config_dir / "costs.yaml")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    mem = result["peak_memory_gib"]
    typer.echo(f"trainable params: {result['trainable_params']:,} || all params: {result['all_params']:,} "
               f"|| trainable%: {result['trainable_pct']}")
    typer.echo(f"peak memory estimate: {mem['total']} GiB ({', '.join(f'{k} {v}' for k, v in mem.items() if k != 'total')})")
    typer.echo(f"train tokens: {result['train_tokens']:,} -> {result['gpu_hours']} GPU-hours at "
               f"{tokens_per_second:,.0f} tokens/s; cost ${result['cost']['usd']} on {result['cost']['instance']}")


def merge(
    adapter: Path = typer.Option(..., "--adapter", help="adapter folder"),
    output: Path = typer.Option(..., "--output", help="new folder for the merged bf16 model"),
    base: Path = typer.Option(None, "--base", help="base model (default: from the manifest)"),
) -> None:
    """Merge an adapter into its base reloaded in bf16."""
    from qlora.training.merge import merge_adapter

    typer.echo(f"merged model written to {merge_adapter(adapter, output, base)}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("plan")(plan)
    app.command("merge")(merge)
