"""The fused LoRA-with-dropout function against peft's own LoRA forward and a hand-written reference."""

from __future__ import annotations

import copy

import torch
from torch import nn

from qlora.training.fast.fused_lora import fuse_lora_layers


class TwoLinears(nn.Module):
    """q and k read the same input, as in an attention block; down reads another."""

    def __init__(self, base_factory=nn.Linear):
        super().__init__()
        self.q_proj = base_factory(64, 48, bias=False)
        self.k_proj = base_factory(64, 32, bias=False)
        self.down_proj = base_factory(48, 64, bias=False)

    def forward(self, x):
        return self.down_proj(self.q_proj(x)).sum() + (self.k_proj(x) ** 2).sum()


def _peft(module: nn.Module, dropout: float):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=["q_proj", "k_proj", "down_proj"])
    model = get_peft_model(module, config)
    with torch.no_grad():  # peft starts B at zero; a non-zero B makes the A gradient testable
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return model


def _run(model, x):
    x = x.clone().requires_grad_()
    loss = model(x)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), x.grad.clone(), grads


def _assert_fused_matches_peft(reference, tolerance: float, loss_atol: float) -> None:
    """A fused copy of a dropout-free peft model gives its loss, input gradient and weight gradients."""
    fused = copy.deepcopy(reference)
    assert fuse_lora_layers(fused) == 3
    x = torch.randn(2, 5, 64)
    loss_ref, gx_ref, grads_ref = _run(reference, x)
    loss, gx, grads = _run(fused, x)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=loss_atol)
    torch.testing.assert_close(gx, gx_ref, rtol=tolerance, atol=tolerance)
    assert grads.keys() == grads_ref.keys() and len(grads) == 6
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=tolerance, atol=tolerance, msg=name)


def test_without_dropout_matches_peft_exactly_enough():
    torch.manual_seed(1)
    _assert_fused_matches_peft(_peft(TwoLinears(), dropout=0.0), tolerance=1e-5, loss_atol=1e-4)


def _reference_with_mask(model, x, masks, p):
    """base(x) + scaling * B(A(x * mask / (1-p))) with given masks, by plain autograd."""
    layers = {n.split(".")[-1]: m for n, m in model.named_modules() if hasattr(m, "lora_A")}

    def lora(name, inp):
        layer = layers[name]
        dropped = inp * masks[name] / (1 - p)
        return layer.base_layer(inp) + layer.lora_B["default"](layer.lora_A["default"](dropped)) * layer.scaling["default"]

    q = lora("q_proj", x)
    return lora("down_proj", q).sum() + (lora("k_proj", x) ** 2).sum()


def test_dropout_masks_are_redrawn_identically_in_backward():
    p = 0.3  # large, so that a wrong mask in backward could not pass unnoticed
    torch.manual_seed(1)
    fused = _peft(TwoLinears(), dropout=p)
    reference_model = copy.deepcopy(fused)
    fuse_lora_layers(fused)
    x = torch.randn(3, 4, 64)

    # The masks the forward draws: a mask depends only on the generator and the shape, and the
    # forward runs q, down, k in that order.
    torch.manual_seed(42)
    masks = {name: torch.native_dropout(torch.ones(12, width), p, True)[1].reshape(3, 4, width)
             for name, width in (("q_proj", 64), ("down_proj", 48), ("k_proj", 64))}

    xr = x.clone().requires_grad_()
    loss_ref = _reference_with_mask(reference_model, xr, masks, p)
    loss_ref.backward()

    torch.manual_seed(42)
    loss, gx, grads = _run(fused, x)

    torch.testing.assert_close(loss, loss_ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gx, xr.grad, rtol=1e-5, atol=1e-5)
    reference_grads = {n: p_.grad for n, p_ in reference_model.named_parameters() if p_.requires_grad}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_backward_leaves_the_generator_where_forward_left_it():
    torch.manual_seed(5)
    fused = _peft(TwoLinears(), dropout=0.1)
    fuse_lora_layers(fused)
    x = torch.randn(2, 3, 64, requires_grad=True)
    loss = fused(x)
    after_forward = torch.get_rng_state()
    loss.backward()
    assert torch.equal(torch.get_rng_state(), after_forward)


def test_eval_merged_and_disabled_adapters_take_peft_path():
    torch.manual_seed(1)
    reference = _peft(TwoLinears(), dropout=0.2)
    fused = copy.deepcopy(reference)
    fuse_lora_layers(fused)
    x = torch.randn(2, 5, 64)
    reference.eval(), fused.eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference(x))
        with fused.disable_adapter(), reference.disable_adapter():
            torch.testing.assert_close(fused(x), reference(x))


def test_four_bit_base_on_cpu():
    import bitsandbytes as bnb  # a pinned dependency: quantises NF4 on the CPU too

    def nf4(inp, out, bias=False):
        layer = bnb.nn.Linear4bit(inp, out, bias=bias, compute_dtype=torch.float32, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(torch.randn(out, inp) * 0.1, requires_grad=False, quant_type="nf4", module=layer)
        return layer

    torch.manual_seed(1)
    module = TwoLinears(nf4)
    for m in module.modules():  # quantise on the CPU
        if isinstance(m, bnb.nn.Linear4bit):
            m.weight = m.weight.to("cpu")
    _assert_fused_matches_peft(_peft(module, dropout=0.0), tolerance=1e-4, loss_atol=1e-3)
