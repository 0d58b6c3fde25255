"""The CUDA out-of-memory ladder, and an injectable OOM to test it without a GPU.

Rungs, in order; a rung that would change nothing is skipped and every applied rung is recorded:
1. recompute more layers (`speed.checkpoint_layers` halfway to all the layers not offloaded, or
   gradient checkpointing on for a config without it): same math, slower; offloaded layers
   (`speed.offload_layers`) stay offloaded: they hold next to nothing on the GPU;
2. halve the micro-batch and double the accumulation: same math, same tokens per update;
then the seed's steps (troubleshooting #1), which change what is learned:
3. cap sequences at 2048 tokens; 4. lower r to 32 (alpha scaled to keep alpha/r).
"""
from __future__ import annotations

import os

from transformers import TrainerCallback

INJECT_AT_STEP_ENV = "QLORA_INJECT_OOM_AT_STEP"  # raise a fake OOM when this step ends...
INJECT_TIMES_ENV = "QLORA_INJECT_OOM_TIMES"  # ...in this many attempts (default 1)
# The settings the ladder may change; `checkpoint_layers` is the speed block's (None: all layers).
LADDER_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "r", "lora_alpha",
               "gradient_checkpointing", "checkpoint_layers")


def ladder_settings(config) -> dict:
    settings = {k: getattr(config, k) for k in LADDER_KEYS if k != "checkpoint_layers"}
    settings["checkpoint_layers"] = config.speed.checkpoint_layers if config.speed is not None else None
    offload = config.speed.offload_layers if config.speed is not None else 0
    settings["offload_layers"] = offload if isinstance(offload, int) else 0  # read only: the ladder keeps it
    return settings


def apply_settings(config, settings: dict):
    """The config with the ladder's settings (speed.checkpoint_layers inside the speed block)."""
    flat = {k: v for k, v in settings.items() if k not in ("checkpoint_layers", "offload_layers")}
    if config.speed is not None:
        update = {"checkpoint_layers": settings.get("checkpoint_layers")}
        if isinstance(config.speed.max_tokens_per_batch, int):  # a packed micro-batch: rows x max_length
            update["max_tokens_per_batch"] = settings["per_device_train_batch_size"] * settings["max_length"]
        flat["speed"] = config.speed.model_copy(update=update)
    return config.model_copy(update=flat)


def _recompute_more(settings: dict, has_speed: bool, num_layers: int | None) -> tuple[dict, dict] | None:
    if not has_speed:
        if settings["gradient_checkpointing"]:
            return None
        return ({**settings, "gradient_checkpointing": True},
                {"rung": "recompute_all_layers", "gradient_checkpointing": [False, True], "changes_math": False})
    current = settings["checkpoint_layers"]
    offloaded = settings.get("offload_layers", 0)
    available = None if num_layers is None else num_layers - offloaded  # layers that may be recomputed
    if current is None or (available is not None and current >= available):
        return None
    if available is None:
        new = None  # the layer count is unknown here: recompute all of them (but the offloaded)
    else:
        new = current + max(1, -(-(available - current) // 2))  # halve the layers that keep activations
        new = None if new >= available else new
    return ({**settings, "checkpoint_layers": new},
            {"rung": "recompute_more_layers", "checkpoint_layers": [current, new if new is not None else available],
             "changes_math": False})


def next_rung(settings: dict, has_speed: bool = False, num_layers: int | None = None) -> tuple[dict, dict] | None:
    """Return (new settings, record) for the first rung that changes something, or None when exhausted."""
    found = _recompute_more(settings, has_speed, num_layers)
    if found is not None:
        return found
    batch, accum = settings["per_device_train_batch_size"], settings["gradient_accumulation_steps"]
    if batch > 1:
        new = {**settings, "per_device_train_batch_size": batch // 2, "gradient_accumulation_steps": accum * 2}
        return new, {"rung": "halve_micro_batch", "per_device_train_batch_size": [batch, batch // 2],
                     "gradient_accumulation_steps": [accum, accum * 2], "changes_math": False}
    if settings["max_length"] > 2048:
        return ({**settings, "max_length": 2048},
                {"rung": "max_length_2048", "max_length": [settings["max_length"], 2048], "changes_math": True})
    if settings["r"] > 32:
        alpha = settings["lora_alpha"] * 32 // settings["r"]  # keep alpha/r, the effective LR scale
        return ({**settings, "r": 32, "lora_alpha": alpha},
                {"rung": "rank_32", "r": [settings["r"], 32], "lora_alpha": [settings["lora_alpha"], alpha],
                 "changes_math": True})
    return None


class InjectedOOM(TrainerCallback):
    """Raises torch.OutOfMemoryError at a chosen step, as CUDA would, for the first N attempts."""

    def __init__(self, attempt: int):
        self.at_step = int(os.environ.get(INJECT_AT_STEP_ENV, "0") or 0)
        self.times = int(os.environ.get(INJECT_TIMES_ENV, "1") or 1)
        self.attempt = attempt

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if self.at_step and state.global_step == self.at_step and self.attempt < self.times:
            raise torch.OutOfMemoryError(f"injected CUDA out of memory at step {self.at_step} (attempt {self.attempt})")
