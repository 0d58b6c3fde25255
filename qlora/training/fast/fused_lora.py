"""LoRA with dropout as one autograd function: the seed's math, a third of its saved memory.

peft computes ``base(x).clone() + lora_B(lora_A(dropout(x))) * scaling`` as separate ops. Each
LoRA module then keeps its own dropped-out copy of ``x`` (2 bytes an element) and the dropout mask
(1 byte) until backward, writes the clone, the product and the scaled product, and reads them back.
On Llama-3-8B shapes that is ~480 MB per decoder layer for a 4096-token micro-batch.

Here the forward draws the very same mask (``torch.native_dropout``, the kernel ``nn.Dropout``
calls, from the same generator state), projects to rank r, and adds ``scaling * (x_d A^T) B^T``
to the base output in one ``addmm``. It saves only ``x`` (shared by the q/k/v and gate/up modules,
which receive the same tensor), the rank-r projection and the generator state; backward redraws
the mask from that state, as activation checkpointing does.
"""

from __future__ import annotations

import torch
from torch import nn

from qlora.training.fast.input_recompute import SavedInput


def _generator(device: torch.device) -> torch.Generator:
    """The generator `native_dropout` draws from on this device."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def _redraw_dropout(x2d: torch.Tensor, p: float, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward's (dropped-out x, mask), redrawn from the generator state saved then.

    Swaps the generator state in and out directly: `torch.random.fork_rng` does the same with
    enough Python around it to show in a profile at 224 LoRA modules per micro-batch.
    """
    generator = _generator(x2d.device)
    current = generator.get_state()
    generator.set_state(state)
    try:
        return torch.native_dropout(x2d, p, True)
    finally:
        generator.set_state(current)


class LoraDropoutAddmm(torch.autograd.Function):
    """out = base_out + scaling * dropout(x) @ A^T @ B^T, computed in `dtype`."""

    @staticmethod
    def forward(ctx, x, base_out, weight_a, weight_b, p: float, scaling: float, dtype: torch.dtype):
        x2d = x.reshape(-1, x.shape[-1]).to(dtype)
        a, b = weight_a.to(dtype), weight_b.to(dtype)
        ctx.state = None
        if p > 0:
            ctx.state = _generator(x2d.device).get_state()
            dropped, _mask = torch.native_dropout(x2d, p, True)
        else:
            dropped = x2d
        projected = dropped @ a.t()
        del dropped
        out = torch.addmm(base_out.reshape(-1, base_out.shape[-1]).to(dtype), projected, b.t(), alpha=scaling)
        # The rank-r weights in compute dtype are small (0.5 MB each on 8B shapes): keeping them saves
        # backward two casts a module. The input itself, or what recomputes it (input_recompute.py).
        ctx.recipe, kept = SavedInput.tensors(x, x2d)
        ctx.x2d_shape, ctx.compute_dtype = tuple(x2d.shape), x2d.dtype
        ctx.save_for_backward(projected, a, b, *kept)
        ctx.p, ctx.scaling, ctx.weight_dtypes = p, scaling, (weight_a.dtype, weight_b.dtype)
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        return out.reshape(*base_out.shape[:-1], out.shape[-1]).to(base_out.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        projected, a, b, *kept = ctx.saved_tensors
        x2d = SavedInput.restore(ctx.recipe, tuple(kept), ctx.x2d_shape, ctx.compute_dtype)
        scaling = ctx.scaling
        g_lora = grad_out.reshape(-1, grad_out.shape[-1]).to(a.dtype)
        grad_b = torch.mm(g_lora.t(), projected).mul_(scaling)
        grad_projected = torch.mm(g_lora, b).mul_(scaling)
        if ctx.p > 0:
            dropped, mask = _redraw_dropout(x2d, ctx.p, ctx.state)
            grad_a = torch.mm(grad_projected.t(), dropped)
            del dropped
            grad_x = torch.ops.aten.native_dropout_backward(torch.mm(grad_projected, a), mask, 1.0 / (1.0 - ctx.p))
        else:
            grad_a = torch.mm(grad_projected.t(), x2d)
            grad_x = torch.mm(grad_projected, a)
        grad_x = grad_x.to(ctx.x_dtype).reshape(ctx.x_shape)
        dtype_a, dtype_b = ctx.weight_dtypes
        return grad_x, grad_out, grad_a.to(dtype_a), grad_b.to(dtype_b), None, None, None


def plain_adapter(layer) -> tuple[str, float, torch.dtype] | None:
    """(adapter name, dropout p, compute dtype) when the layer runs one plain LoRA adapter, else None."""
    adapters = [name for name in layer.active_adapters if name in layer.lora_A]
    plain = (
        not layer.disable_adapters
        and not layer.merged
        and len(adapters) == 1
        and adapters[0] not in getattr(layer, "lora_variant", {})
        and (layer.training or not torch.is_grad_enabled())
    )
    if not plain:
        return None
    name = adapters[0]
    dropout = layer.lora_dropout[name]
    p = float(dropout.p) if isinstance(dropout, nn.Dropout) and layer.training else 0.0
    # peft's dtype rule: under autocast the autocast dtype, otherwise the LoRA weights' dtype.
    device = layer.lora_A[name].weight.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else layer.lora_A[name].weight.dtype
    return name, p, dtype


def _fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft LoRA layer's forward through `LoraDropoutAddmm`; peft's own path for anything else."""
    adapter = None if "adapter_names" in kwargs else plain_adapter(layer)
    if adapter is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    name, p, dtype = adapter
    weight_a, weight_b = layer.lora_A[name].weight, layer.lora_B[name].weight
    base_out = layer.base_layer(x, *args, **kwargs)
    return LoraDropoutAddmm.apply(x, base_out, weight_a, weight_b, p, float(layer.scaling[name]), dtype)


def fuse_lora_layers(peft_model: nn.Module) -> int:
    """Route every peft LoRA Linear (4-bit or plain) through the fused function; returns how many."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in peft_model.modules():
        # bitsandbytes' Linear4bit is an nn.Linear subclass, so 4-bit and plain bases both match.
        if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), nn.Linear):
            module.forward = _fused_forward.__get__(module)
            count += 1
    return count
