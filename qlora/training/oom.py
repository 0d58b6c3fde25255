"""The seed's CUDA out-of-memory ladder, and an injectable OOM to test it without a GPU.

Rungs, in the seed's order (troubleshooting #1): halve the batch and double the
accumulation (same effective batch), cap sequences at 2048 tokens, lower r to 32.
A rung that would change nothing is skipped. Every applied rung is recorded.
"""
from __future__ import annotations

import os

from transformers import TrainerCallback

INJECT_AT_STEP_ENV = "QLORA_INJECT_OOM_AT_STEP"  # raise a fake OOM when this step ends...
INJECT_TIMES_ENV = "QLORA_INJECT_OOM_TIMES"  # ...in this many attempts (default 1)


def next_rung(settings: dict) -> tuple[dict, dict] | None:
    """Return (new settings, record) for the first rung that changes something, or None when exhausted."""
    batch, accum = settings["per_device_train_batch_size"], settings["gradient_accumulation_steps"]
    if batch > 1:
        new = {**settings, "per_device_train_batch_size": batch // 2, "gradient_accumulation_steps": accum * 2}
        return new, {"rung": "halve_batch", "per_device_train_batch_size": [batch, batch // 2],
                     "gradient_accumulation_steps": [accum, accum * 2]}
    if settings["max_length"] > 2048:
        return {**settings, "max_length": 2048}, {"rung": "max_length_2048", "max_length": [settings["max_length"], 2048]}
    if settings["r"] > 32:
        alpha = settings["lora_alpha"] * 32 // settings["r"]  # keep alpha/r, the effective LR scale
        return {**settings, "r": 32, "lora_alpha": alpha}, {"rung": "rank_32", "r": [settings["r"], 32]}
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
