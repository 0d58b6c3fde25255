"""The speed profile's shape-aware choice: micro-batch tokens and recomputed layers for a shape and a GPU.

Every candidate (micro-batch size x recomputed layers) gets a predicted peak from the calibrated
memory model and a predicted tokens/s from the calibrated MFU model; the fastest one whose peak
stays under the budget wins. Same math whatever is chosen: the tokens per optimiser update stay
those of the config (the accumulation absorbs the micro-batch size).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from qlora.training.calibration import predicted_mfu
from qlora.training.config import AUTO, QLoRAConfig
from qlora.training.memory import DEFAULT_COEFFICIENTS, Setup, Shape, predict_peak_gib

MARGIN_GIB = 5.0  # CUDA context, allocator fragmentation: what a card needs beyond PyTorch's peak
BF16_PEAK_FLOPS = {"h200": 989e12, "h100": 989e12, "a100": 312e12}


@dataclass(frozen=True)
class Choice:
    micro_batch_tokens: int
    recomputed_layers: int
    predicted_peak_gib: float
    budget_gib: float
    predicted_tokens_per_second: float | None
    predicted_mfu: float | None
    basis: str  # measured | estimated (throughput); the peak always comes from the memory model
    fits: bool

    def as_dict(self) -> dict:
        return asdict(self)


def recipe_and_loss(config: QLoRAConfig, under_trl: bool) -> tuple[str, str]:
    """Under TRL the seed's loss is computed in chunks and the fast path's through a fused LM head
    (measured: TRL's seed peak is the bench's chunked-loss seed, 23.3 vs 23.6 GiB on 8B)."""
    if config.speed is None or config.speed.fp32_upcast:
        return "seed", "chunked" if under_trl else "full"
    return "fast", "fused" if under_trl or config.speed.fused_loss else "full"


def predict(shape: Shape, config: QLoRAConfig, micro_batch_tokens: int, recomputed: int, calibration: dict | None,
            under_trl: bool = True) -> dict:
    recipe, loss = recipe_and_loss(config, under_trl)
    setup = Setup(recipe=recipe, loss=loss, micro_batch_tokens=micro_batch_tokens, recomputed_layers=recomputed,
                  r=config.r, modules=tuple(config.target_modules), double_quant=config.bnb_4bit_use_double_quant)
    coefficients = (calibration or {}).get("memory_model", {}).get("coefficients") or DEFAULT_COEFFICIENTS
    return predict_peak_gib(shape, setup, coefficients)


def _throughput(shape: Shape, config: QLoRAConfig, tokens: int, recomputed: int, calibration: dict | None, gpu: str):
    if not calibration:
        return None, None, "estimated"
    mfu, basis = predicted_mfu(calibration["throughput_model"], shape.name, tokens, recomputed / shape.layers)
    if mfu is None:
        return None, None, basis
    peak = BF16_PEAK_FLOPS.get(gpu.split("-")[0], 989e12)
    seq = min(config.max_length, tokens)
    return peak * mfu / shape.flops_per_token(config.r, list(config.target_modules), seq), mfu, basis


def fixed_settings(config: QLoRAConfig, shape: Shape) -> tuple[int, int]:
    """(micro-batch tokens, recomputed layers) of a config without `auto` (TRL: rows x max_length)."""
    tokens = config.per_device_train_batch_size * config.max_length
    if config.speed is None:
        return tokens, shape.layers if config.gradient_checkpointing else 0
    speed = config.speed
    recomputed = shape.layers if speed.checkpoint_layers is None else min(int(speed.checkpoint_layers), shape.layers)
    return tokens, recomputed


def choose(config: QLoRAConfig, shape: Shape, calibration: dict | None, gpu_memory_gib: float, gpu: str = "h200",
           micro_batch_options: list[int] | None = None) -> Choice:
    """The fastest predicted (micro-batch, recomputed layers) under the budget; all layers at the
    smallest micro-batch when nothing fits (then `fits` is False and the OOM ladder takes over)."""
    speed = config.speed
    budget = speed.memory_budget_gib if speed is not None and speed.memory_budget_gib else gpu_memory_gib - MARGIN_GIB
    fixed_tokens, fixed_recomputed = fixed_settings(config, shape) if not (speed and speed.is_auto) else (0, 0)
    options, layer_options = [fixed_tokens], [fixed_recomputed]
    if speed is not None and speed.is_auto:
        rows_tokens = config.per_device_train_batch_size * config.max_length
        options = (micro_batch_options or [config.max_length * k for k in (4, 2, 1)]) \
            if speed.max_tokens_per_batch == AUTO else [rows_tokens]
        layer_options = range(shape.layers + 1) if speed.checkpoint_layers == AUTO else \
            [shape.layers if speed.checkpoint_layers is None else min(int(speed.checkpoint_layers), shape.layers)]
    best: Choice | None = None
    fallback: Choice | None = None
    for tokens in options:
        for recomputed in layer_options:
            peak = predict(shape, config, tokens, recomputed, calibration)["total"]
            tps, mfu, basis = _throughput(shape, config, tokens, recomputed, calibration, gpu)
            choice = Choice(tokens, recomputed, round(peak, 2), round(budget, 2),
                            round(tps, 1) if tps else None, round(mfu, 4) if mfu else None, basis, peak <= budget)
            if fallback is None or (peak < fallback.predicted_peak_gib):
                fallback = choice
            if not choice.fits:
                continue
            # Fastest predicted; without a throughput model, fewest recomputed layers, then largest micro-batch.
            rank = (tps or 0.0, -recomputed, tokens)
            if best is None or rank > (best.predicted_tokens_per_second or 0.0, -best.recomputed_layers,
                                       best.micro_batch_tokens):
                best = choice
    return best or fallback


def resolve_speed(config: QLoRAConfig, shape: Shape, calibration: dict | None, gpu_memory_gib: float,
                  gpu: str = "h200") -> tuple[QLoRAConfig, Choice]:
    """The config with `auto` replaced by the choice, the same tokens per optimiser update."""
    choice = choose(config, shape, calibration, gpu_memory_gib, gpu)
    speed = config.speed
    if speed is None or not speed.is_auto:
        return config, choice
    tokens_per_update = config.per_device_train_batch_size * config.gradient_accumulation_steps * config.max_length
    rows = max(1, choice.micro_batch_tokens // config.max_length)
    resolved_speed = speed.model_copy(update={"max_tokens_per_batch": choice.micro_batch_tokens,
                                              "checkpoint_layers": choice.recomputed_layers})
    resolved = config.model_copy(update={
        "speed": resolved_speed,
        "per_device_train_batch_size": rows,
        "gradient_accumulation_steps": max(1, tokens_per_update // (rows * config.max_length)),
    })
    return resolved, choice
