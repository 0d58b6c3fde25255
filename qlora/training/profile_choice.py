"""The speed profile's shape-aware choice: micro-batch tokens, recomputed and offloaded layers for a shape and a GPU.

Every candidate (micro-batch size x recomputed layers x offloaded layers) gets a predicted peak from the calibrated
memory model and a predicted tokens/s from the calibrated MFU model; the fastest one whose peak
stays under the budget wins (an offload needing more pinned host memory than the host can give is
not a candidate). Same math whatever is chosen: the tokens per optimiser update stay those of the
config (the accumulation absorbs the micro-batch size).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from qlora.training import offload_model
from qlora.training.calibration import mfu_fit
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
    offloaded_layers: int = 0
    pinned_host_gib: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def recipe_and_loss(config: QLoRAConfig, under_trl: bool) -> tuple[str, str]:
    """Under TRL the seed's loss is computed in chunks and the fast path's through a fused LM head
    (measured: TRL's seed peak is the bench's chunked-loss seed, 23.3 vs 23.6 GiB on 8B)."""
    if config.speed is None or config.speed.fp32_upcast:
        return "seed", "chunked" if under_trl else "full"
    return "fast", "fused" if under_trl or config.speed.fused_loss else "full"


def _recompute_inputs(config: QLoRAConfig) -> bool:
    return _speed_flag(config, "recompute_lora_inputs")


def _compact_kv(config: QLoRAConfig) -> bool:
    return _speed_flag(config, "compact_gqa_saves") and _speed_flag(config, "cudnn_attention")


def _speed_flag(config: QLoRAConfig, name: str) -> bool:
    return bool(config.speed is not None and getattr(config.speed, name))


def predict(shape: Shape, config: QLoRAConfig, micro_batch_tokens: int, recomputed: int, calibration: dict | None,
            under_trl: bool = True, offloaded: int = 0) -> dict:
    recipe, loss = recipe_and_loss(config, under_trl)
    setup = Setup(recipe=recipe, loss=loss, micro_batch_tokens=micro_batch_tokens, recomputed_layers=recomputed,
                  r=config.r, modules=tuple(config.target_modules), double_quant=config.bnb_4bit_use_double_quant,
                  offloaded_layers=offloaded, recompute_inputs=_recompute_inputs(config),
                  eager_release=_speed_flag(config, "offload_eager_release"),
                  embedding_on_host=_speed_flag(config, "embedding_on_host"),
                  compact_kv=_compact_kv(config))
    coefficients = (calibration or {}).get("memory_model", {}).get("coefficients") or DEFAULT_COEFFICIENTS
    return predict_peak_gib(shape, setup, coefficients)


def _throughput(shape: Shape, config: QLoRAConfig, tokens: int, recomputed: int, calibration: dict | None, gpu: str,
                offloaded: int = 0):
    if not calibration:
        return None, None, "estimated"
    fit, basis = mfu_fit(calibration["throughput_model"], shape.name, tokens)
    if fit is None:
        return None, None, basis
    a, b = fit
    peak = BF16_PEAK_FLOPS.get(gpu.split("-")[0], 989e12)
    seq = min(config.max_length, tokens)
    flops = shape.flops_per_token(config.r, list(config.target_modules), seq)
    work_seconds = tokens * flops / peak  # the micro-batch at 100% MFU
    seconds = work_seconds * (a + b * recomputed / shape.layers)
    if offloaded:
        offload = calibration.get("offload_model")
        seconds += offload_model.extra_seconds(shape, tokens, recomputed, offloaded, a, b, work_seconds, offload,
                                               _recompute_inputs(config), _compact_kv(config))
        if not offload:
            basis = "estimated"
    if _speed_flag(config, "embedding_on_host"):  # the micro-batch's rows read over PCIe before layer 0
        seconds += offload_model.host_embedding_seconds(shape, tokens, calibration.get("offload_model"))
    mfu = work_seconds / seconds
    return peak * mfu / flops, mfu, basis


def fixed_settings(config: QLoRAConfig, shape: Shape) -> tuple[int, int]:
    """(micro-batch tokens, recomputed layers) of a config without `auto` (TRL: rows x max_length)."""
    tokens = config.per_device_train_batch_size * config.max_length
    if config.speed is None:
        return tokens, shape.layers if config.gradient_checkpointing else 0
    speed = config.speed
    offloaded = fixed_offload(config, shape)
    recomputed = shape.layers - offloaded if speed.checkpoint_layers is None else \
        min(int(speed.checkpoint_layers), shape.layers)
    return tokens, recomputed


def fixed_offload(config: QLoRAConfig, shape: Shape) -> int:
    speed = config.speed
    if speed is None or speed.offload_layers == AUTO:
        return 0
    return min(int(speed.offload_layers), shape.layers)


def _rank(choice: Choice) -> tuple:
    """Fastest predicted; without a throughput model, fewest layers recomputed or offloaded, fewest
    recomputed, then the largest micro-batch."""
    moved = choice.recomputed_layers + choice.offloaded_layers
    return (choice.predicted_tokens_per_second or 0.0, -moved, -choice.recomputed_layers, choice.micro_batch_tokens)


def _candidates(config: QLoRAConfig, shape: Shape, micro_batch_options: list[int] | None):
    """(tokens, recomputed, offloaded) for every setting the config leaves open."""
    speed = config.speed
    if speed is None or not speed.is_auto:
        tokens, recomputed = fixed_settings(config, shape)
        yield tokens, recomputed, fixed_offload(config, shape)
        return
    rows_tokens = config.per_device_train_batch_size * config.max_length
    options = (micro_batch_options or [config.max_length * k for k in (4, 2, 1)]) \
        if speed.max_tokens_per_batch == AUTO else [rows_tokens]
    for tokens in options:
        offload_options = [fixed_offload(config, shape)] if speed.offload_layers != AUTO else None
        if speed.checkpoint_layers == AUTO:
            layer_options = range(shape.layers + 1)
        elif speed.checkpoint_layers is None:
            layer_options = [None]
        else:
            layer_options = [min(int(speed.checkpoint_layers), shape.layers)]
        for recomputed in layer_options:
            for offloaded in offload_options or range(shape.layers - (recomputed or 0) + 1):
                if recomputed is None:  # null: every layer not offloaded is recomputed
                    yield tokens, shape.layers - offloaded, offloaded
                elif recomputed + offloaded <= shape.layers:
                    yield tokens, recomputed, offloaded


def choose(config: QLoRAConfig, shape: Shape, calibration: dict | None, gpu_memory_gib: float, gpu: str = "h200",
           micro_batch_options: list[int] | None = None, host_memory_gib: float | None = None) -> Choice:
    """The fastest predicted (micro-batch, recomputed, offloaded layers) under the budget; all layers
    recomputed at the smallest micro-batch when nothing fits (then `fits` is False and the OOM
    ladder takes over). A fixed offload count needing more pinned memory than the host can give is
    refused with a ValueError; under `auto` such counts are not candidates."""
    speed = config.speed
    budget = speed.memory_budget_gib if speed is not None and speed.memory_budget_gib else gpu_memory_gib - MARGIN_GIB
    host_gib = host_memory_gib if host_memory_gib is not None else offload_model.host_memory_gib()
    offload = (calibration or {}).get("offload_model")
    fixed = fixed_offload(config, shape)  # 0 under auto
    if fixed:
        tokens = fixed_settings(config, shape)[0]  # TRL's micro-batch: rows x max_length
        offload_model.check_pinned(offload_model.pinned_host_gib(shape, tokens, fixed, offload, _recompute_inputs(config)), host_gib, fixed)
    best: Choice | None = None
    fallback: Choice | None = None
    for tokens, recomputed, offloaded in _candidates(config, shape, micro_batch_options):
        pinned = offload_model.pinned_host_gib(shape, tokens, offloaded, offload, _recompute_inputs(config))
        if pinned > host_gib * offload_model.PINNED_FRACTION:
            continue
        peak = predict(shape, config, tokens, recomputed, calibration, offloaded=offloaded)["total"]
        tps, mfu, basis = _throughput(shape, config, tokens, recomputed, calibration, gpu, offloaded)
        choice = Choice(tokens, recomputed, round(peak, 2), round(budget, 2), round(tps, 1) if tps else None,
                        round(mfu, 4) if mfu else None, basis, peak <= budget, offloaded, round(pinned, 1))
        if fallback is None or (peak < fallback.predicted_peak_gib):
            fallback = choice
        if choice.fits and (best is None or _rank(choice) > _rank(best)):
            best = choice
    return best or fallback


def resolve_speed(config: QLoRAConfig, shape: Shape, calibration: dict | None, gpu_memory_gib: float,
                  gpu: str = "h200", host_memory_gib: float | None = None) -> tuple[QLoRAConfig, Choice]:
    """The config with `auto` replaced by the choice, the same tokens per optimiser update."""
    choice = choose(config, shape, calibration, gpu_memory_gib, gpu, host_memory_gib=host_memory_gib)
    speed = config.speed
    if speed is None or not speed.is_auto:
        return config, choice
    tokens_per_update = config.per_device_train_batch_size * config.gradient_accumulation_steps * config.max_length
    rows = max(1, choice.micro_batch_tokens // config.max_length)
    resolved_speed = speed.model_copy(update={"max_tokens_per_batch": choice.micro_batch_tokens,
                                              "checkpoint_layers": choice.recomputed_layers,
                                              "offload_layers": choice.offloaded_layers})
    resolved = config.model_copy(update={
        "speed": resolved_speed,
        "per_device_train_batch_size": rows,
        "gradient_accumulation_steps": max(1, tokens_per_update // (rows * config.max_length)),
    })
    return resolved, choice
