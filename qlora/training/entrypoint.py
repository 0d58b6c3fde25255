"""Training entrypoint: the same script under Dagster Pipes, `accelerate launch`, a pod, or by hand.

    python -m qlora.training.entrypoint --config C.yaml --data train.jsonl --output DIR --base BASE_DIR

Imports only torch/transformers/peft/trl/bitsandbytes/datasets/dagster-pipes/pyyaml/pydantic and
the repo's dagster-free modules. Only the main process talks to Dagster.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _metadata(manifest: dict, output_dir: Path) -> dict:
    m = manifest["metrics"]
    curve = "\n".join(f"| {step} | {loss} |" for step, loss in m["loss_curve"])
    return {
        "run_dir": {"raw_value": str(output_dir), "type": "path"},
        "trainable_params": {"raw_value": manifest["trainable_params"], "type": "int"},
        "loss_first": {"raw_value": m["loss_curve"][0][1] if m["loss_curve"] else None, "type": "float"},
        "loss_last": {"raw_value": m["loss_curve"][-1][1] if m["loss_curve"] else None, "type": "float"},
        "loss_curve": {"raw_value": "| step | loss |\n|---|---|\n" + curve, "type": "md"},
        "tokens_per_second": {"raw_value": m["tokens_per_second"], "type": "float"},
        "peak_memory_gib": {"raw_value": m["peak_memory_gib"], "type": "float"},
        "wall_seconds": {"raw_value": m["wall_seconds"], "type": "float"},
        "gpu_seconds": {"raw_value": manifest["cost"]["gpu_seconds"], "type": "float"},
        "cost_usd": {"raw_value": manifest["cost"]["usd"], "type": "float"},
        "resumed_from_step": {"raw_value": m["resumed_from_step"], "type": "int"},
        "oom_ladder_rungs": {"raw_value": json.dumps(manifest["oom_ladder"]), "type": "text"},
        "config_hash": {"raw_value": manifest["config_hash"], "type": "text"},
        "device": {"raw_value": m["device"], "type": "text"},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="QLoRA YAML config (validated) or a .json of validated settings")
    parser.add_argument("--data", required=True, type=Path, help="train.jsonl with one {'messages': [...]} per line")
    parser.add_argument("--output", required=True, type=Path, help="adapter folder (resumes if it holds checkpoints)")
    parser.add_argument("--base", type=Path, help="base model folder (default: the config's profile under QLORA_HOME)")
    parser.add_argument("--eval-data", type=Path, help="optional eval rows in the same format")
    parser.add_argument("--extras", default="{}", help="JSON merged into manifest.json (domain, version, ...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if "WORLD_SIZE" not in os.environ:
        # One process trains on one GPU (TRL refuses nn.DataParallel); several GPUs go through accelerate launch.
        # Set before torch initialises CUDA, which happens when the runner is imported.
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    from qlora.core.io import read_json
    from qlora.training.config import load_config, validate_config
    from qlora.training.runner import run_training

    args = parse_args(argv)
    if args.config.endswith(".json"):
        config = validate_config(read_json(args.config, "training config"), args.config)
    else:
        config = load_config(args.config)
    base = args.base
    if base is None:
        from qlora.modeling.base_model import base_model_path

        base = Path(config.base_model_path) if config.base_model_path else base_model_path(config.base_profile)
    extras = json.loads(args.extras)

    if _is_main_process() and os.environ.get("DAGSTER_PIPES_CONTEXT"):
        from dagster_pipes import open_dagster_pipes

        with open_dagster_pipes() as pipes:
            manifest = run_training(config, args.data, args.output, base, args.eval_data, extras, log=pipes.log.info)
            pipes.report_asset_materialization(metadata=_metadata(manifest, args.output))
        return 0
    def log(message: str) -> None:
        if _is_main_process():
            print(message, flush=True)

    run_training(config, args.data, args.output, base, args.eval_data, extras, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
