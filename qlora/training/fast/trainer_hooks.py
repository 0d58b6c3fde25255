"""The fast profile inside the training entrypoint (TRL's SFTTrainer), from a config's `speed:` block.

The entrypoint calls two functions and keeps its seed path when `speed` is null (the block is
validated once, as part of QLoRAConfig): `prepare_base` instead of peft's
`prepare_model_for_kbit_training`, and `sft_overrides` for the SFTConfig arguments. TRL already
computes the loss through a chunked ("fused") LM head, so the `fused_loss` lever is TRL's there;
packing is TRL's best-fit-decreasing packing into rows of `max_length` tokens with positions
restarting per sequence, which the varlen attention of this package reads.
"""

from __future__ import annotations

from torch import nn

from qlora.training.config import SpeedConfig
from qlora.training.fast.levers import prepare_model


def prepare_base(model: nn.Module, speed: SpeedConfig) -> nn.Module:
    """The loaded 4-bit base with the levers applied (CUDA-only kernels skipped on a CPU)."""
    if not next(model.parameters()).is_cuda:
        speed = speed.model_copy(update={"liger_kernels": False, "cudnn_attention": False, "compile": False})
    return prepare_model(model, speed)


def sft_overrides(speed: SpeedConfig | None) -> dict:
    """SFTConfig arguments the levers change; empty for the seed path.

    Under TRL a packed micro-batch holds per_device_train_batch_size x max_length tokens, so
    `max_tokens_per_batch` is the bench's knob; the entrypoint's micro-batch follows those two.
    """
    if speed is None or not speed.packing:
        return {}
    return {"packing": True, "packing_strategy": "bfd", "padding_free": True}
