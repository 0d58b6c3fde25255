"""The grouped LoRA function and the input recompute against the per-module fused path, on a tiny Llama."""

from __future__ import annotations

import copy

import pytest
import torch

from qlora.training.fast import input_recompute
from qlora.training.fast.fused_lora import fuse_lora_layers
from qlora.training.fast.lora_group import group_lora_layers

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_peft_llama(dropout: float):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    for param in model.parameters():
        param.requires_grad_(False)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=MODULES))
    with torch.no_grad():  # peft starts B at zero; a non-zero B makes the A gradients testable
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return peft_model


def _variant(reference, groups: bool, recompute: bool):
    model = copy.deepcopy(reference)
    fuse_lora_layers(model)
    if groups:
        assert group_lora_layers(model) == 2 * len(model.get_base_model().model.layers)  # q/k/v, gate/up
    if recompute:
        input_recompute.install(model.get_base_model().model.layers)
    return model


def _step(model, ids, seed: int = 7):
    torch.manual_seed(seed)  # the same dropout draws for every variant
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("groups,recompute", [(True, False), (False, True), (True, True)])
def test_grouped_and_recomputed_match_the_per_module_path(dropout, groups, recompute):
    reference = _variant(_tiny_peft_llama(dropout), groups=False, recompute=False)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(3))
    loss_ref, grads_ref = _step(reference, ids)
    loss, grads = _step(_variant(reference, groups, recompute), ids)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
    assert grads.keys() == grads_ref.keys() and len(grads) == 2 * 7 * 2
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_dropout_actually_differs_from_no_dropout():
    """The dropout comparison above is not vacuous: with p = 0.3 the gradients move."""
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(3))
    _, with_dropout = _step(_variant(_tiny_peft_llama(0.3), True, True), ids)
    _, without = _step(_variant(_tiny_peft_llama(0.0), True, True), ids)
    name = next(n for n in with_dropout if "q_proj.lora_A" in n)
    assert not torch.allclose(with_dropout[name], without[name], rtol=1e-3, atol=1e-6)


def _assert_both_levers_match(reference, ids) -> None:
    """Groups and input recompute on ``reference``: the same loss and every LoRA gradient."""
    loss_ref, grads_ref = _step(reference, ids)
    loss, grads = _step(_variant(reference, True, True), ids)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_no_dropout_grouped_matches_peft_itself():
    reference = _tiny_peft_llama(0.0)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(4))
    _assert_both_levers_match(reference, ids)


def _saved_bytes(model, ids) -> int:
    """Bytes of distinct storages saved for backward in one forward."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    torch.manual_seed(7)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(storages.values())


def test_recompute_saves_less_and_uninstall_restores():
    reference = _variant(_tiny_peft_llama(0.1), True, False)
    ids = torch.randint(0, 101, (4, 32), generator=torch.Generator().manual_seed(5))
    kept = _saved_bytes(reference, ids)
    recomputing = _variant(reference, True, True)
    assert _saved_bytes(recomputing, ids) < kept
    input_recompute.uninstall(recomputing.get_base_model().model.layers)
    assert _saved_bytes(recomputing, ids) == kept


def test_group_leaves_the_generator_where_forward_left_it():
    model = _variant(_tiny_peft_llama(0.2), True, True)
    ids = torch.randint(0, 101, (2, 12))
    loss = model(input_ids=ids, labels=ids).loss
    after_forward = torch.get_rng_state()
    loss.backward()
    assert torch.equal(torch.get_rng_state(), after_forward)


def test_eval_without_grad_matches():
    reference = _variant(_tiny_peft_llama(0.2), False, False)
    grouped = _variant(reference, True, True)
    ids = torch.randint(0, 101, (2, 12))
    reference.eval(), grouped.eval()
    with torch.no_grad():
        torch.testing.assert_close(grouped(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_four_bit_base_on_cpu():
    """The group dequantises the NF4 base itself in backward: same gradients as bitsandbytes' own matmul."""
    import bitsandbytes as bnb  # a pinned dependency: quantises NF4 on the CPU too
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=101)
    model = LlamaForCausalLM(config)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in [(n, c) for n, c in parent.named_children() if isinstance(c, torch.nn.Linear)]:
                nf4 = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                        compute_dtype=torch.float32, quant_type="nf4")
                nf4.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False,
                                               quant_type="nf4", module=nf4).to("cpu")
                setattr(parent, name, nf4)
    for param in model.parameters():
        param.requires_grad_(False)
    reference = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=MODULES))
    fuse_lora_layers(reference)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(3))
    _assert_both_levers_match(reference, ids)
