"""Grouped-query attention without expanding K/V, for the embedded engine's padded batches.

transformers' SDPA path repeats each K/V head for its query heads (``repeat_kv``) whenever an
attention mask is passed, and the engine always passes one (rows are left-padded). torch's own
``enable_gqa`` gives the same result from the grouped K/V, masked or not, on CPU and CUDA.
SmolLM2 (9 query heads over 3 K/V heads), 30 rows decoding: the copies were a quarter of a step.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GQA_SDPA = "qlora_gqa_sdpa"


def gqa_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    if attention_mask is None or getattr(module, "num_key_value_groups", 1) == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    # With a mask transformers never sets is_causal (the mask carries causality), and Llama-family
    # models pass no position bias: the call below is the one transformers makes, K/V grouped.
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


# Registered once, with SDPA's own masks: a model selects it by name.
AttentionInterface.register(GQA_SDPA, gqa_sdpa_forward)
AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)


def use_grouped_attention(model) -> None:
    """Switch a model that runs transformers' SDPA attention to the grouped one (others: unchanged)."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(GQA_SDPA)
