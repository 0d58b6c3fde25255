"""speed.compact_gqa_saves (qlora/training/fast/gqa_saves.py) on the CPU: attention over expanded K/V
heads gives the same output and gradients when its backward keeps the grouped heads, and what it keeps
(here: what an offloaded layer copies) is the grouped size, not the expanded one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qlora.training.fast.gqa_saves import attend_with_compact_kv
from qlora.training.fast.offload import ActivationOffloader

HEADS, KV_HEADS, LENGTH, DIM = 8, 2, 32, 16


def _inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, HEADS, LENGTH, DIM, generator=g, requires_grad=True)
    k = torch.randn(2, KV_HEADS, LENGTH, DIM, generator=g, requires_grad=True)
    v = torch.randn(2, KV_HEADS, LENGTH, DIM, generator=g, requires_grad=True)
    return q, k, v


def _run(compact: bool, offloader: ActivationOffloader | None = None):
    q, k, v = _inputs()
    groups = HEADS // KV_HEADS

    def attend(keys, values):
        return F.scaled_dot_product_attention(q, keys, values, is_causal=True)

    def forward():
        kk, vv = k * 1.0, v * 1.0  # not leaves: the expanded copies are what attention saves
        if compact:
            return attend_with_compact_kv(attend, kk, vv, groups)
        return attend(kk.repeat_interleave(groups, dim=1), vv.repeat_interleave(groups, dim=1))

    if offloader is None:
        out = forward()
    else:
        with offloader.layer(0):
            out = forward()
    (out * torch.linspace(-1, 1, DIM)).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def test_compact_saves_give_the_same_output_and_gradients():
    for plain, compact in zip(_run(False), _run(True)):
        assert torch.equal(plain, compact)


def test_an_offloaded_layer_copies_the_grouped_heads_not_their_expansion():
    plain, compact = ActivationOffloader([0], min_bytes=1), ActivationOffloader([0], min_bytes=1)
    results = [_run(False, plain), _run(True, compact)]
    for a, b in zip(*results):
        assert torch.equal(a, b)
    expanded_kv = 2 * 2 * HEADS * LENGTH * DIM * 4  # k and v, fp32, every query head
    grouped_kv = expanded_kv * KV_HEADS // HEADS
    assert plain.stats["offloaded_bytes"] - compact.stats["offloaded_bytes"] == pytest.approx(expanded_kv - grouped_kv, rel=0.2)


def test_the_lever_marks_only_layers_that_are_not_recomputed():
    from transformers import LlamaConfig, LlamaForCausalLM

    from qlora.training.fast.gqa_saves import enabled
    from qlora.training.fast.levers import set_layer_plan

    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=50))
    set_layer_plan(model, 2, 0, compact_gqa_saves=True)
    assert [enabled(layer.self_attn) for layer in model.model.layers] == [False, False, True, True]
    set_layer_plan(model, 0, 0)
    assert not any(enabled(layer.self_attn) for layer in model.model.layers)
