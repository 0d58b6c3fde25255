"""The fast profile inside the training entrypoint (TRL's SFTTrainer), from a config's `speed:` block.

The entrypoint calls three functions and keeps its seed path when `speed` is null:
`check_speed` when the config is validated, `prepare_base` instead of peft's
`prepare_model_for_kbit_training`, and `sft_overrides` for the SFTConfig arguments. TRL already
computes the loss through a chunked ("fused") LM head, so the `fused_loss` lever is TRL's there;
packing is TRL's best-fit-decreasing packing into rows of `max_length` tokens with positions
restarting per sequence, which the varlen attention of this package reads.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from qlora.training.fast.levers import SpeedConfig, prepare_model


def check_speed(raw: dict | None, gradient_checkpointing: bool) -> SpeedConfig | None:
    """Validate a `speed:` block and its fit with the Trainer's settings; errors name the field.

    Under TRL a packed micro-batch holds per_device_train_batch_size x max_length tokens, so
    `max_tokens_per_batch` is the bench's knob; the entrypoint's micro-batch follows those two.
    """
    if raw is None:
        return None
    speed = SpeedConfig.from_mapping(raw)
    if speed.checkpoint_layers is not None and gradient_checkpointing:
        raise ValueError(
            f"speed.checkpoint_layers: {speed.checkpoint_layers} chosen layers, but gradient_checkpointing: true "
            "makes the Trainer recompute every layer; set gradient_checkpointing: false"
        )
    return speed


def prepare_base(model: nn.Module, raw: dict) -> nn.Module:
    """The loaded 4-bit base with the levers applied (CUDA-only kernels skipped on a CPU)."""
    speed = SpeedConfig.from_mapping(raw)
    if not next(model.parameters()).is_cuda:
        speed = replace(speed, liger_kernels=False, cudnn_attention=False, compile=False)
    return prepare_model(model, speed)


def sft_overrides(raw: dict | None) -> dict:
    """SFTConfig arguments the levers change; empty for the seed path."""
    if raw is None:
        return {}
    speed = SpeedConfig.from_mapping(raw)
    overrides: dict = {}
    if speed.packing:
        overrides.update(packing=True, packing_strategy="bfd", padding_free=True)
    return overrides
