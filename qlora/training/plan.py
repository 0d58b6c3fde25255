"""`qlora plan`: trainable parameters, predicted peak, throughput, GPU-hours and cost, without weights or a GPU.

The shape comes from a known Llama 3.x name, a local config.json (or a checkpoint folder holding
one), or the config's base. Peak memory comes from the calibrated memory model
(qlora/training/memory.py), throughput from the calibration file of the GPU: a point measured with
these settings is `measured`; otherwise the fitted MFU curve of this shape is `fitted`, and that
of the nearest measured shape `estimated`.
"""
from __future__ import annotations

import json
from pathlib import Path

from qlora.training.calibration import load_calibration
from qlora.training.config import QLoRAConfig
from qlora.training.memory import KNOWN_SHAPES, PROFILE_SHAPES, Shape, canonical
from qlora.training.profile_choice import BF16_PEAK_FLOPS, predict, recipe_and_loss, resolve_speed

WEEKS_PER_MONTH = 52 / 12


def resolve_shape(config: QLoRAConfig, model: str | None = None) -> Shape:
    """`model` (a known name or a config.json / checkpoint path), else the config's base."""
    candidate = model or config.base_model_path
    if candidate:
        if candidate.lower() in KNOWN_SHAPES:
            return KNOWN_SHAPES[candidate.lower()]
        path = Path(candidate)
        path = path / "config.json" if path.is_dir() else path
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {exc.lineno}: not JSON ({exc.msg})") from None
            return canonical(Shape.from_hf_config(data, str(path)))
        if model:
            raise ValueError(f"--model {model}: neither a known shape ({', '.join(KNOWN_SHAPES)}) nor a config.json")
    if config.base_profile in PROFILE_SHAPES:
        return KNOWN_SHAPES[PROFILE_SHAPES[config.base_profile]]
    from qlora.modeling.base_model import base_model_path

    path = Path(base_model_path(config.base_profile)) / "config.json"
    if not path.is_file():
        raise ValueError(f"base profile {config.base_profile!r}: no {path}; pass --model NAME or a config.json path")
    return canonical(Shape.from_hf_config(json.loads(path.read_text()), str(path)))


def measured_point(calibration: dict | None, shape: Shape, config: QLoRAConfig, tokens: int, recomputed: int,
                   offloaded: int = 0) -> dict | None:
    """The calibration's entrypoint measurement with exactly these settings, if any."""
    recipe, _ = recipe_and_loss(config, under_trl=True)
    for point in (calibration or {}).get("points", []):
        if (point["path"], point["shape"], point["recipe"], point["micro_batch_tokens"], point["recomputed_layers"],
                point.get("offloaded_layers", 0), point.get("r", 64)) == (
                "entrypoint", shape.name, recipe, tokens, recomputed, offloaded, config.r):
            return point
    return None


def throughput(calibration: dict | None, shape: Shape, config: QLoRAConfig, choice, gpu: str) -> tuple[float | None, str]:
    point = measured_point(calibration, shape, config, choice.micro_batch_tokens, choice.recomputed_layers,
                           choice.offloaded_layers)
    if point is not None:
        return point["tokens_per_s"], "measured"
    if choice.predicted_tokens_per_second is None:
        return None, "unknown"
    return choice.predicted_tokens_per_second, "fitted" if choice.basis == "measured" else "estimated"


def plan(config: QLoRAConfig, rows: int, mean_tokens: int, costs_file: Path, config_dir: Path, gpu: str = "h200",
         gpu_memory_gib: float = 141.0, model: str | None = None, tokens_per_second: float | None = None,
         host_memory_gib: float | None = None) -> dict:
    from qlora.training.costs import price_run
    from qlora.training.offload_model import host_memory_gib as this_host

    shape = resolve_shape(config, model)
    calibration = load_calibration(config_dir, gpu)
    host_gib = host_memory_gib if host_memory_gib is not None else this_host()
    resolved, choice = resolve_speed(config, shape, calibration, gpu_memory_gib, gpu, host_memory_gib=host_gib)
    trainable = shape.lora_params(config.r, list(config.target_modules))
    base_params = shape.body_params + shape.embedding_params + (2 * shape.layers + 1) * shape.hidden
    tps, basis = (tokens_per_second, "given") if tokens_per_second else throughput(calibration, shape, resolved, choice, gpu)
    tokens = rows * min(mean_tokens, config.max_length) * config.num_train_epochs
    seconds = tokens / tps if tps else None
    return {
        "shape": shape.name,
        "gpu": gpu,
        "gpu_memory_gib": gpu_memory_gib,
        "host_memory_gib": round(host_gib, 1),
        "calibration": "found" if calibration else "none (analytic memory model, no throughput)",
        "trainable_params": trainable,
        "all_params": base_params + trainable,
        "trainable_pct": round(100 * trainable / (base_params + trainable), 3),
        "choice": choice.as_dict(),
        "micro_batch": {"per_device_train_batch_size": resolved.per_device_train_batch_size,
                        "gradient_accumulation_steps": resolved.gradient_accumulation_steps},
        "peak_memory_gib": predict(shape, resolved, choice.micro_batch_tokens, choice.recomputed_layers, calibration,
                                   offloaded=choice.offloaded_layers),
        "train_tokens": int(tokens),
        "tokens_per_second": tps,
        "throughput_basis": basis,
        "gpu_hours": round(seconds / 3600, 3) if seconds else None,
        "cost": price_run(seconds, config.cost_instance, costs_file) if seconds else None,
    }


# The seed guide's cost table (10,000 rows; AWS on-demand): model, method, GPUs, hours, USD/hour, USD.
SEED_COST_TABLE = [
    ("llama-3.1-8b", "QLoRA 4-bit", "1x A100 40GB", 1, 2.0, 3.06, 6.0),
    ("llama-3.1-8b", "Full FT bf16", "4x A100 80GB", 4, 4.0, 13.0, 52.0),
    ("llama-3.1-70b", "QLoRA 4-bit", "1x A100 80GB", 1, 8.0, 3.67, 29.0),
    ("llama-3.1-70b", "Full FT bf16", "8x A100 80GB", 8, 16.0, 26.0, 416.0),
]
A100_BF16_PEAK = 312e12


def cost_table(calibration: dict | None, rows: int = 10_000, mean_tokens: int = 600, epochs: float = 3.0) -> list[dict]:
    """The seed's table beside the platform's own figures for the same rows.

    QLoRA: the fastest measured fast-profile point of the shape on this GPU (H200); the A100 hours
    scale it by the bf16 peaks (312 vs 989 TFLOP/s) at the same MFU, which is an estimate. Full
    fine-tuning: 6N + 12*L*d*s FLOPs per token at that measured MFU on the seed's A100 GPUs
    (estimated). Monthly: the weekly cadence (52/12 runs a month).
    """
    tokens = rows * mean_tokens * epochs
    table = []
    for shape_name, method, gpus_label, gpus, hours, usd_per_hour, usd in SEED_COST_TABLE:
        shape = KNOWN_SHAPES[shape_name]
        card_gib = 35.0 if "40GB" in gpus_label else 75.0  # the seed's card, less the 5 GiB margin
        points = [p for p in (calibration or {}).get("points", []) if p["shape"] == shape_name and p["recipe"] == "fast"
                  and (method.startswith("Full") or p["peak_allocated_gib"] <= card_gib)]
        best = max(points, key=lambda p: p["tokens_per_s"], default=None)
        row = {"model": shape_name, "method": method, "gpus": gpus_label, "seed_hours": hours, "seed_usd": usd,
               "seed_usd_month": round(usd * WEEKS_PER_MONTH)}
        if best is None:
            table.append({**row, "platform_hours": None, "basis": "no measurement"})
            continue
        if method.startswith("QLoRA"):
            h200_hours = tokens / best["tokens_per_s"] / 3600
            a100_hours = h200_hours * BF16_PEAK_FLOPS["h200"] / A100_BF16_PEAK
            basis = f"measured on H200 ({best['tokens_per_s']:,.0f} tokens/s, {best['variant']}); A100 hours scaled by peak FLOPs"
        else:
            flops = 6 * (shape.body_params + shape.vocab * shape.hidden) + 12 * shape.layers * shape.hidden * mean_tokens
            a100_hours = tokens * flops / (best["mfu"] * A100_BF16_PEAK * gpus) / 3600
            h200_hours = None
            basis = f"estimated: {flops:.3g} FLOPs/token at the measured MFU {100 * best['mfu']:.1f}% on {gpus} A100s"
        cost = a100_hours * usd_per_hour
        table.append({**row, "platform_h200_hours": round(h200_hours, 2) if h200_hours else None,
                      "platform_a100_hours": round(a100_hours, 2), "platform_usd": round(cost, 2),
                      "platform_usd_month": round(cost * WEEKS_PER_MONTH, 1), "basis": basis})
    return table
