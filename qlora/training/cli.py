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
    model: str = typer.Option(None, "--model", help="llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, llama-3.1-70b, or a config.json"),
    gpu: str = typer.Option("h200", "--gpu", help="GPU whose configs/calibration/<gpu>.json gives the throughput"),
    gpu_memory_gib: float = typer.Option(140.4, "--gpu-memory-gib", help="memory of the card to fit (80 for an A100-80GB)"),
    tokens_per_second: float = typer.Option(None, "--tokens-per-second", help="override the calibrated throughput"),
    host_memory_gib: float = typer.Option(None, "--host-memory-gib",
                                          help="host memory for activation offload (default: this machine's)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Trainable parameters, the profile's choice and predicted peak, GPU-hours and cost; the seed's cost table."""
    from qlora.core.paths import paths
    from qlora.training.calibration import load_calibration
    from qlora.training.config import load_config
    from qlora.training.plan import cost_table, plan as make_plan

    config_dir = paths().config_dir
    try:
        result = make_plan(load_config(config), rows, mean_tokens, config_dir / "costs.yaml", config_dir, gpu,
                           gpu_memory_gib, model, tokens_per_second, host_memory_gib)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    table = cost_table(load_calibration(config_dir, gpu), rows, mean_tokens)
    if as_json:
        typer.echo(json.dumps({**result, "cost_table": table}, indent=2))
        return
    mem, choice = result["peak_memory_gib"], result["choice"]
    typer.echo(f"model: {result['shape']} on {gpu} ({gpu_memory_gib:g} GiB); calibration {result['calibration']}")
    typer.echo(f"trainable params: {result['trainable_params']:,} || all params: {result['all_params']:,} "
               f"|| trainable%: {result['trainable_pct']}")
    typer.echo(f"choice: micro-batch {choice['micro_batch_tokens']} tokens "
               f"({result['micro_batch']['per_device_train_batch_size']} packed row(s) x "
               f"{result['micro_batch']['gradient_accumulation_steps']} accumulated), "
               f"{choice['recomputed_layers']} layers recomputed; budget {choice['budget_gib']} GiB"
               f"{'' if choice['fits'] else ' -- DOES NOT FIT: the OOM ladder will step down'}")
    typer.echo(f"offload: {choice['offloaded_layers']} layers' activations to pinned host memory, "
               f"{choice['pinned_host_gib']} GiB pinned (host {result['host_memory_gib']:.0f} GiB)")
    typer.echo(f"predicted peak: {mem['total']} GiB ({', '.join(f'{k} {v}' for k, v in mem.items() if k != 'total')})")
    if result["tokens_per_second"]:
        typer.echo(f"train tokens: {result['train_tokens']:,} -> {result['gpu_hours']} GPU-hours at "
                   f"{result['tokens_per_second']:,.0f} tokens/s ({result['throughput_basis']}); "
                   f"cost ${result['cost']['usd']} on {result['cost']['instance']}")
    else:
        typer.echo(f"train tokens: {result['train_tokens']:,}; no throughput for {gpu} (no calibration): "
                   "pass --tokens-per-second")
    typer.echo(f"\ncost for {rows:,} rows x {mean_tokens} tokens x 3 epochs: the seed's table | the platform's")
    typer.echo("| model | method | GPUs | seed h | seed $ | seed $/month | platform h (A100) | platform $ | platform $/month | basis |")
    typer.echo("|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        typer.echo(f"| {row['model']} | {row['method']} | {row['gpus']} | ~{row['seed_hours']:g} | ~${row['seed_usd']:g} | "
                   f"${row['seed_usd_month']:,} | {row.get('platform_a100_hours', '-')} | ${row.get('platform_usd', '-')} | "
                   f"${row.get('platform_usd_month', '-')} | {row['basis']} |")


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
