"""The LoRA modules that share an input, as one autograd function: q/k/v, and gate/up.

Per module (fused_lora.py) each of q, k and v keeps its own autograd node for the 4-bit base and
one for LoRA, so backward computes six input gradients of the same tensor and autograd adds them
(five full-size adds), and with dropout each module swaps the generator state in and out. Here one
function computes the group's outputs and, in backward, accumulates the whole input gradient in one
buffer: the base terms through `addmm_` (the add happens in the matmul's epilogue), the LoRA terms
through dropout's backward and one in-place add each (no out-of-place adds).

Same math: the forward calls each base layer as before, and draws each module's dropout mask in
the order the model calls the modules (q, k, v; gate, up) from the same generator state, so the
masks are the very ones the per-module path draws; backward redraws them from the saved state.
Without dropout the A matrices are concatenated: one matmul projects the input to all ranks and
one gives all A gradients (the fused LoRA-A matmul). The input is saved once, or not at all where
input_recompute.py can rerun it.
"""

from __future__ import annotations

import torch
from torch import nn

from qlora.training.fast.fused_lora import _generator, plain_adapter
from qlora.training.fast.input_recompute import SavedInput

GROUPS = {"self_attn": ("q_proj", "k_proj", "v_proj"), "mlp": ("gate_proj", "up_proj")}


def dequantized_weight(base: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The base layer's (out, in) weight in `dtype`: bitsandbytes' own dequantisation for 4-bit."""
    weight = base.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight, quant_state).to(dtype)
    return weight.to(dtype)


class SharedInputLora(torch.autograd.Function):
    """outputs_i = base_i(x) + scaling_i * dropout_i(x) @ A_i^T @ B_i^T for every member i."""

    @staticmethod
    def forward(ctx, x, bases, p: float, scalings, dtype: torch.dtype, *weights):
        a_list, b_list = list(weights[0::2]), list(weights[1::2])
        x2d = x.reshape(-1, x.shape[-1]).to(dtype)
        a = [w.to(dtype) for w in a_list]
        b = [w.to(dtype) for w in b_list]
        ranks = [w.shape[0] for w in a]
        ctx.state = None
        if p > 0:
            ctx.state = _generator(x2d.device).get_state()
            projected = [torch.native_dropout(x2d, p, True)[0] @ a_i.t() for a_i in a]
        else:
            projected = list((x2d @ torch.cat(a).t()).split(ranks, dim=1))
        outputs = []
        for base, p_i, b_i, s in zip(bases, projected, b, scalings):
            base_out = base(x)
            out = torch.addmm(base_out.reshape(-1, base_out.shape[-1]).to(dtype), p_i, b_i.t(), alpha=s)
            outputs.append(out.reshape(*base_out.shape[:-1], out.shape[-1]).to(base_out.dtype))
        ctx.recipe, kept = SavedInput.tensors(x, x2d)
        ctx.save_for_backward(*projected, *a, *b, *kept)
        ctx.bases, ctx.p, ctx.scalings, ctx.members = bases, p, scalings, len(bases)
        ctx.x2d_shape, ctx.compute_dtype, ctx.x_shape, ctx.x_dtype = tuple(x2d.shape), x2d.dtype, x.shape, x.dtype
        ctx.weight_dtypes = [(w_a.dtype, w_b.dtype) for w_a, w_b in zip(a_list, b_list)]
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        n = ctx.members
        saved = ctx.saved_tensors
        projected, a, b, kept = saved[:n], saved[n:2 * n], saved[2 * n:3 * n], saved[3 * n:]
        x2d = SavedInput.restore(ctx.recipe, tuple(kept), ctx.x2d_shape, ctx.compute_dtype)
        grad_x = None
        grad_weights: list[torch.Tensor | None] = [None] * (2 * n)
        generator = _generator(x2d.device) if ctx.p > 0 else None
        current = generator.get_state() if generator is not None else None
        if generator is not None:
            generator.set_state(ctx.state)
        try:
            grad_projected = []
            for i, (grad, base) in enumerate(zip(grads, ctx.bases)):
                # The mask is drawn even for an unused output, so the next member's is the forward's.
                dropped, mask = torch.native_dropout(x2d, ctx.p, True) if generator is not None else (x2d, None)
                if grad is None:
                    grad_projected.append(None)
                    continue
                g = grad.reshape(-1, grad.shape[-1]).to(ctx.x_dtype)
                weight = dequantized_weight(base, ctx.x_dtype)
                grad_x = torch.mm(g, weight) if grad_x is None else grad_x.addmm_(g, weight)
                del weight
                g_lora = g.to(a[i].dtype)
                grad_weights[2 * i + 1] = torch.mm(g_lora.t(), projected[i]).mul_(ctx.scalings[i])
                grad_p = torch.mm(g_lora, b[i]).mul_(ctx.scalings[i])
                if mask is not None:
                    grad_weights[2 * i] = torch.mm(grad_p.t(), dropped)
                    # dropout's own backward kernel, then an in-place add: an addcmul_ with the bool
                    # mask runs unvectorised (measured 3x slower on the H200).
                    grad_x.add_(torch.ops.aten.native_dropout_backward(torch.mm(grad_p, a[i]), mask,
                                                                       1.0 / (1.0 - ctx.p)))
                grad_projected.append(grad_p)
                del dropped, mask
        finally:
            if generator is not None:
                generator.set_state(current)
        if generator is None:  # no dropout: the A gradients and the LoRA input gradient in one matmul each
            used = [i for i, g in enumerate(grad_projected) if g is not None]
            if used:
                grad_cat = torch.cat([grad_projected[i] for i in used], dim=1)
                a_cat = torch.cat([a[i] for i in used])
                grad_x.addmm_(grad_cat.to(grad_x.dtype), a_cat.to(grad_x.dtype))
                for i, grad_a in zip(used, torch.mm(grad_cat.t(), x2d).split([a[i].shape[0] for i in used])):
                    grad_weights[2 * i] = grad_a
        for i, (dtype_a, dtype_b) in enumerate(ctx.weight_dtypes):
            for j, dtype in ((2 * i, dtype_a), (2 * i + 1, dtype_b)):
                if grad_weights[j] is not None:
                    grad_weights[j] = grad_weights[j].to(dtype)
        grad_x = None if grad_x is None else grad_x.reshape(ctx.x_shape)
        return (grad_x, None, None, None, None, *grad_weights)


class _Group:
    """One group's members; the first member called computes all outputs, the others take theirs."""

    def __init__(self, members: list[nn.Module]):
        self.members = members
        self.pending: dict[int, torch.Tensor] = {}
        self.pending_input: torch.Tensor | None = None

    def take(self, member: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        if self.pending_input is x and id(member) in self.pending:
            out = self.pending.pop(id(member))
            if not self.pending:
                self.pending_input = None
            return out
        return None

    def run(self, caller: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        adapters = [plain_adapter(member) for member in self.members]
        if any(a is None for a in adapters) or len({a[0] for a in adapters}) != 1:
            return None
        name, p, dtype = adapters[0][0], adapters[0][1], adapters[0][2]
        if any((a[1], a[2]) != (p, dtype) for a in adapters):
            return None
        weights = []
        for member in self.members:
            weights += [member.lora_A[name].weight, member.lora_B[name].weight]
        outputs = SharedInputLora.apply(x, [m.base_layer for m in self.members], p,
                                        [float(m.scaling[name]) for m in self.members], dtype, *weights)
        self.pending = {id(m): out for m, out in zip(self.members, outputs) if m is not caller}
        self.pending_input = x
        return outputs[self.members.index(caller)]


def _group_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    from qlora.training.fast.fused_lora import _fused_forward

    if args or kwargs:
        return _fused_forward(layer, x, *args, **kwargs)
    group = layer._qlora_group
    out = group.take(layer, x)
    if out is None:
        out = group.run(layer, x)
    return out if out is not None else _fused_forward(layer, x)


def group_lora_layers(peft_model: nn.Module) -> int:
    """Route each decoder layer's q/k/v and gate/up LoRA modules through `SharedInputLora`; returns the groups."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in peft_model.modules():
        for child_name, names in GROUPS.items():
            parent = getattr(module, child_name, None)
            if parent is None or not isinstance(parent, nn.Module):
                continue
            members = [getattr(parent, name, None) for name in names]
            if not all(isinstance(m, LoraLayer) and isinstance(m.get_base_layer(), nn.Linear) for m in members):
                continue
            if any(m.get_base_layer().bias is not None for m in members):
                continue
            group = _Group(members)
            for member in members:
                member._qlora_group = group
                member.forward = _group_forward.__get__(member)
            count += 1
    return count
