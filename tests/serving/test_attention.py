"""Grouped-query attention from the grouped K/V equals transformers' SDPA over repeated K/V."""
from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from qlora.serving.attention import GQA_SDPA, gqa_sdpa_forward
from qlora.serving.model_store import ModelStore


class _Attention(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), kv_heads=st.integers(1, 3), groups=st.integers(1, 4), query=st.integers(1, 5),
       past=st.integers(0, 12), seed=st.integers(0, 2**16), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_grouped_attention_equals_repeated_kv(rows, kv_heads, groups, query, past, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    length = past + query
    q = torch.randn(rows, kv_heads * groups, query, 8, generator=generator).to(dtype)
    k, v = (torch.randn(rows, kv_heads, length, 8, generator=generator).to(dtype) for _ in range(2))
    # A left-padded causal mask, as the engine's batches have: each row starts somewhere.
    starts = torch.randint(0, max(1, past), (rows,), generator=generator) if past else torch.zeros(rows, dtype=torch.long)
    columns = torch.arange(length)
    causal = columns[None, :] <= (past + torch.arange(query))[:, None]
    mask = (causal[None] & (columns[None, None, :] >= starts[:, None, None]))[:, None]
    module = _Attention(groups)
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.35)
    got, _ = gqa_sdpa_forward(module, q, k, v, mask, scaling=0.35)
    assert got.shape == expected.shape
    tolerance = 1e-2 if dtype is torch.bfloat16 else 1e-5  # bf16: one unit in the last place, at any size
    assert torch.allclose(got.float(), expected.float(), atol=tolerance, rtol=tolerance)


def test_the_served_base_runs_grouped_attention_and_a_contiguous_head(serving_base, serving_adapters):
    from tests.support.serving import DOMAINS

    store = ModelStore(serving_base, "nf4-dequantized", "bfloat16")
    assert store.base.config._attn_implementation == GQA_SDPA
    store.load_adapter("a", str(serving_adapters[DOMAINS[0]]))
    seen = []
    store.base.get_output_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    ids = torch.tensor([[1, 2, 3, 4], [0, 0, 5, 6]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    from transformers import DynamicCache

    store.forward(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), DynamicCache(), ["a", "a"])
    assert seen and seen[0].is_contiguous()
