"""Recompute the LoRA modules' cheap inputs in backward instead of keeping them (same values, bit for bit).

With a frozen base, bitsandbytes' 4-bit matmul keeps nothing for backward (it needs no weight
gradient), so in a kept decoder layer three tensors stay alive only because LoRA's A gradient
needs its input: the two RMSNorm outputs (the input of q/k/v and of gate/up, `d` values a token
each) and the SwiGLU product (the input of down_proj, `ff` values). Each is one cheap elementwise
kernel away from tensors that stay saved anyway (the norm's input, which its own backward keeps;
gate and up, which SwiGLU's backward keeps). `mark` attaches that recipe to the tensor; the fused
LoRA functions (fused_lora.py, lora_group.py) then save the recipe's inputs and rerun it in
backward. On Llama-3.1-8B that is 2d + ff = 22,528 of a kept layer's 69,632 values a token (32%).

The rerun is the forward's own kernel on the same inputs under the same autocast state, so it
gives the same bits (tests/training/test_lora_group.py checks the gradients on the CPU). Liger's
SwiGLU backward writes its gradients into gate's and up's storage; down_proj's backward, which
reruns the product from them, always runs before it (down_proj comes after SwiGLU in the forward).
"""

from __future__ import annotations

import torch
from torch import nn

ATTRIBUTE = "_qlora_recompute"


class Recipe:
    """fn(*inputs) under the autocast state of the forward that produced the tensor."""

    __slots__ = ("fn", "inputs", "autocast")

    def __init__(self, fn, inputs: tuple[torch.Tensor, ...]):
        self.fn, self.inputs = fn, inputs
        device = inputs[0].device.type
        enabled = torch.is_autocast_enabled(device)
        self.autocast = (device, torch.get_autocast_dtype(device) if enabled else None, enabled)

    def without_inputs(self) -> "Recipe":
        """The same recipe holding no tensors: what an autograd context keeps (the inputs go through
        save_for_backward, so they are freed with the node's saved tensors, not with the node)."""
        copy = Recipe.__new__(Recipe)
        copy.fn, copy.inputs, copy.autocast = self.fn, (), self.autocast
        return copy

    def run(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        device, dtype, enabled = self.autocast
        with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
            return self.fn(*inputs)


def mark(tensor: torch.Tensor, fn, *inputs: torch.Tensor) -> torch.Tensor:
    setattr(tensor, ATTRIBUTE, Recipe(fn, inputs))
    return tensor


def recipe_of(tensor: torch.Tensor) -> Recipe | None:
    return getattr(tensor, ATTRIBUTE, None)


def _mark_norm_output(norm: nn.Module, args, output):
    # `norm.forward` bypasses the module's hooks (this one included) and reruns the same kernel.
    if torch.is_grad_enabled() and torch.is_tensor(output) and args and torch.is_tensor(args[0]):
        mark(output, norm.forward, args[0])
    return output


def _swiglu_forward(mlp: nn.Module):
    """The MLP's own product of gate and up: Liger's kernel where Liger patched the MLP, else act(gate) * up."""
    forward = getattr(mlp.forward, "__func__", None)
    try:
        from liger_kernel.transformers.swiglu import LigerSwiGLUMLP, _swiglu_dispatch

        if forward is LigerSwiGLUMLP.forward:
            return _swiglu_dispatch
    except ImportError:  # the CPU image has no Liger
        pass
    if forward is not type(mlp).forward or not hasattr(mlp, "act_fn"):
        raise ValueError(f"input recompute: unknown MLP forward on {type(mlp).__name__}")
    return lambda gate, up: mlp.act_fn(gate) * up


def _mlp_forward(mlp: nn.Module, product_fn):
    def forward(x):
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        product = product_fn(gate, up)
        if torch.is_grad_enabled():
            mark(product, product_fn, gate, up)
        return mlp.down_proj(product)

    return forward


def install(decoder_layers: nn.ModuleList) -> int:
    """Mark each layer's two norm outputs and its SwiGLU product as recomputable; returns the layers."""
    for layer in decoder_layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm._qlora_recompute_hook = norm.register_forward_hook(_mark_norm_output)
        mlp = layer.mlp
        mlp._qlora_original_forward = mlp.__dict__.get("forward")
        mlp.forward = _mlp_forward(mlp, _swiglu_forward(mlp))
    return len(decoder_layers)


def uninstall(decoder_layers: nn.ModuleList) -> None:
    for layer in decoder_layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            hook = norm.__dict__.pop("_qlora_recompute_hook", None)
            if hook is not None:
                hook.remove()
        mlp = layer.mlp
        if "_qlora_original_forward" in mlp.__dict__:
            original = mlp.__dict__.pop("_qlora_original_forward")
            if original is None:
                mlp.__dict__.pop("forward", None)
            else:
                mlp.forward = original


class SavedInput:
    """What a LoRA function keeps of its input: the input itself, or its recipe's inputs."""

    @staticmethod
    def tensors(x: torch.Tensor, x2d: torch.Tensor) -> tuple[Recipe | None, tuple[torch.Tensor, ...]]:
        recipe = recipe_of(x)
        return (recipe.without_inputs(), recipe.inputs) if recipe is not None else (None, (x2d,))

    @staticmethod
    def restore(recipe: Recipe | None, saved: tuple[torch.Tensor, ...], shape_2d: tuple[int, int],
                dtype: torch.dtype) -> torch.Tensor:
        if recipe is None:
            return saved[0]
        return recipe.run(saved).reshape(shape_2d).to(dtype)
