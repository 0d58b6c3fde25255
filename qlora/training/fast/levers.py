"""The speed levers of the fast GPU profile, each switchable so that its share can be measured.

`SpeedConfig` (qlora/training/config.py) is the `speed:` block of a `configs/qlora/*.yaml` profile. `prepare_model` replaces
peft's `prepare_model_for_kbit_training` (which upcasts embeddings, norms and `lm_head` to fp32,
so that the whole residual stream runs in fp32) and applies the other levers to a 4-bit base.
"""

from __future__ import annotations

from torch import nn

from qlora.training.config import AUTO, SpeedConfig

__all__ = ["SpeedConfig", "prepare_model", "finish_peft_model", "set_checkpointed_layers"]


def decoder_layers(causal_lm: nn.Module) -> nn.ModuleList:
    return causal_lm.model.layers


def set_checkpointed_layers(causal_lm: nn.Module, count: int | None) -> int:
    """Recompute only the first `count` decoder layers in backward; the rest keep activations.

    Every layer recomputed costs a forward pass of that layer; every layer kept costs its
    activations in memory. Returns how many layers are checkpointed.
    """
    if count == AUTO:
        raise ValueError("speed.checkpoint_layers: auto must be resolved for the model's shape first "
                         "(qlora.training.profile_choice.resolve_speed)")
    layers = decoder_layers(causal_lm)
    count = len(layers) if count is None else min(count, len(layers))
    if count:
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = index < count
    return count


def apply_liger_kernels(causal_lm: nn.Module) -> None:
    """Liger's RMSNorm, RoPE and SwiGLU kernels on a Llama model instance (loss is handled by loss.py)."""
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(
        rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=causal_lm
    )


def prepare_model(causal_lm: nn.Module, config: SpeedConfig) -> nn.Module:
    """Freeze the 4-bit base and apply the levers; call before `get_peft_model`."""
    if config.fp32_upcast:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(causal_lm, use_gradient_checkpointing=False)
    for param in causal_lm.parameters():
        param.requires_grad_(False)
    if config.packing:
        from qlora.training.fast.varlen_attention import register

        causal_lm.set_attn_implementation(register(prefer_cudnn=config.cudnn_attention))
    if config.liger_kernels:
        apply_liger_kernels(causal_lm)
    set_checkpointed_layers(causal_lm, config.checkpoint_layers)
    if config.compile:
        for layer in decoder_layers(causal_lm):
            layer.compile()
    return causal_lm


def finish_peft_model(peft_model: nn.Module, config: SpeedConfig) -> nn.Module:
    """The levers that act on the LoRA layers themselves; call after `get_peft_model`."""
    if config.fused_lora:
        from qlora.training.fast.fused_lora import fuse_lora_layers

        fuse_lora_layers(peft_model)
    return peft_model
