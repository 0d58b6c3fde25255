"""The speed levers of the fast GPU profile, each switchable so that its share can be measured.

`SpeedConfig` (qlora/training/config.py) is the `speed:` block of a `configs/qlora/*.yaml` profile. `prepare_model` replaces
peft's `prepare_model_for_kbit_training` (which upcasts embeddings, norms and `lm_head` to fp32,
so that the whole residual stream runs in fp32) and applies the other levers to a 4-bit base.
"""

from __future__ import annotations

from torch import nn

from qlora.training.config import AUTO, SpeedConfig

__all__ = ["SpeedConfig", "prepare_model", "finish_peft_model", "set_checkpointed_layers", "set_layer_plan",
           "remove_offload", "remove_layer_levers"]


def decoder_layers(causal_lm: nn.Module) -> nn.ModuleList:
    return causal_lm.model.layers


def set_checkpointed_layers(causal_lm: nn.Module, count: int | None) -> int:
    """Recompute only the first `count` decoder layers in backward; the rest keep activations.

    Every layer recomputed costs a forward pass of that layer; every layer kept costs its
    activations in memory. Returns how many layers are checkpointed.
    """
    return set_layer_plan(causal_lm, count, 0)["recomputed"]


def layer_roles(layers: int, recomputed: int, offloaded: int) -> list[str]:
    """Each layer's role: `offload` spread evenly over the stack (fast/offload.py says why), then
    `recompute` for the first of the others, `keep` for the rest."""
    from qlora.training.fast.offload import offloaded_positions

    if recomputed + offloaded > layers:
        raise ValueError(f"speed.checkpoint_layers ({recomputed}) + speed.offload_layers ({offloaded}) "
                         f"exceed the model's {layers} decoder layers")
    roles = ["keep"] * layers
    for index in offloaded_positions(layers, offloaded):
        roles[index] = "offload"
    others = [i for i, role in enumerate(roles) if role == "keep"]
    for index in others[:recomputed]:
        roles[index] = "recompute"
    return roles


def set_layer_plan(causal_lm: nn.Module, recomputed: int | None, offloaded: int, compact_gqa_saves: bool = False,
                   **offload_options) -> dict:
    """Recompute `recomputed` layers (None: all), offload `offloaded` layers' activations to host
    memory, keep the rest; `compact_gqa_saves` marks the layers that are not recomputed for
    fast/gqa_saves.py; returns the counts."""
    for name, value in (("checkpoint_layers", recomputed), ("offload_layers", offloaded)):
        if value == AUTO:
            raise ValueError(f"speed.{name}: auto must be resolved for the model's shape first "
                             "(qlora.training.profile_choice.resolve_speed)")
    layers = decoder_layers(causal_lm)
    remove_offload(causal_lm)
    if recomputed is None:
        recomputed = len(layers) - (offloaded or 0)
    roles = layer_roles(len(layers), min(recomputed, len(layers)), offloaded or 0)
    if "recompute" in roles:
        causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    from qlora.training.fast.gqa_saves import ENABLED_ATTRIBUTE

    for layer, role in zip(layers, roles):
        layer.gradient_checkpointing = role == "recompute"
        if hasattr(layer, "self_attn"):  # a checkpointed layer's own hooks must see every saved tensor
            setattr(layer.self_attn, ENABLED_ATTRIBUTE, compact_gqa_saves and role != "recompute")
    chosen = [i for i, role in enumerate(roles) if role == "offload"]
    if chosen:
        from qlora.training.fast.offload_install import install

        causal_lm._qlora_offloader = install(layers, chosen, causal_lm, **offload_options)
    return {"recomputed": roles.count("recompute"), "offloaded": len(chosen), "roles": roles}


def remove_offload(causal_lm: nn.Module) -> None:
    """Undo `set_layer_plan`'s offload hooks (the bench reuses one base for many variants)."""
    from qlora.training.fast.offload_install import uninstall

    uninstall(decoder_layers(causal_lm))
    causal_lm.__dict__.pop("_qlora_offloader", None)


def remove_layer_levers(causal_lm: nn.Module) -> None:
    """Undo the offload hooks, the host embedding and `finish_peft_model`'s input-recompute marks on a reused base."""
    from qlora.training.fast import input_recompute
    from qlora.training.fast.host_embedding import restore_embedding

    remove_offload(causal_lm)
    input_recompute.uninstall(decoder_layers(causal_lm))
    restore_embedding(causal_lm, next(decoder_layers(causal_lm).parameters()).device)


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
    set_layer_plan(causal_lm, config.checkpoint_layers, config.offload_layers,
                   compact_gqa_saves=config.compact_gqa_saves, eager_release=config.offload_eager_release)
    if config.embedding_on_host:
        from qlora.training.fast.host_embedding import move_embedding_to_host

        move_embedding_to_host(causal_lm)
    if config.compile:
        for layer in decoder_layers(causal_lm):
            layer.compile()
    return causal_lm


def finish_peft_model(peft_model: nn.Module, config: SpeedConfig) -> nn.Module:
    """The levers that act on the LoRA layers themselves; call after `get_peft_model`."""
    if config.fused_lora:
        from qlora.training.fast.fused_lora import fuse_lora_layers

        fuse_lora_layers(peft_model)
    if config.lora_groups:
        from qlora.training.fast.lora_group import group_lora_layers

        group_lora_layers(peft_model)
    if config.recompute_lora_inputs:
        from qlora.training.fast import input_recompute

        input_recompute.install(decoder_layers(peft_model.get_base_model()))
    return peft_model
