"""The speed levers of the fast GPU profile, each switchable so that its share can be measured.

`SpeedConfig` is the `speed:` block of a `configs/qlora/*.yaml` profile. `prepare_model` replaces
peft's `prepare_model_for_kbit_training` (which upcasts embeddings, norms and `lm_head` to fp32,
so that the whole residual stream runs in fp32) and applies the other levers to a 4-bit base.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn


@dataclass(frozen=True)
class SpeedConfig:
    packing: bool = False  # padding-free rows + varlen attention (no cross-contamination)
    max_tokens_per_batch: int | None = None  # micro-batch by token budget instead of by rows
    cudnn_attention: bool = False  # equal-length packs (full rows) through cuDNN's fused attention
    fused_loss: bool = False  # fused linear cross-entropy, no full fp32 logits
    liger_kernels: bool = False  # Liger RMSNorm, RoPE and SwiGLU kernels
    fused_lora: bool = False  # LoRA + dropout as one function: mask redrawn, no dropped-out copies kept
    fp32_upcast: bool = True  # the seed's prepare_model_for_kbit_training casts
    checkpoint_layers: int | None = None  # decoder layers recomputed in backward; None = all
    compile: bool = False  # torch.compile each decoder layer (regional compilation)

    @classmethod
    def from_mapping(cls, raw: dict | None, source: str = "speed") -> SpeedConfig:
        """Validate a `speed:` mapping, naming the offending field."""
        raw = dict(raw or {})
        known = {f.name: f for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise ValueError(f"{source}.{key}: unknown field (known: {', '.join(sorted(known))})")
            if key in ("max_tokens_per_batch", "checkpoint_layers"):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                    raise ValueError(f"{source}.{key}: expected a non-negative integer or null, got {value!r}")
            elif not isinstance(value, bool):  # every other field is a switch
                raise ValueError(f"{source}.{key}: expected true or false, got {value!r}")
        config = cls(**raw)
        if config.max_tokens_per_batch is not None and not config.packing:
            raise ValueError(f"{source}.max_tokens_per_batch: needs packing: true (a token budget has no padding)")
        if config.cudnn_attention and not config.packing:
            raise ValueError(f"{source}.cudnn_attention: needs packing: true (it is a path of the varlen attention)")
        return config


def decoder_layers(causal_lm: nn.Module) -> nn.ModuleList:
    return causal_lm.model.layers


def set_checkpointed_layers(causal_lm: nn.Module, count: int | None) -> int:
    """Recompute only the first `count` decoder layers in backward; the rest keep activations.

    Every layer recomputed costs a forward pass of that layer; every layer kept costs its
    activations in memory. Returns how many layers are checkpointed.
    """
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
