"""Serving numerics: ``nf4-dequantized`` holds the NF4 base's values in plain linears, so an
adapter sees exactly the weights it was trained on, without bitsandbytes' per-call dequantising."""
from __future__ import annotations

import torch
from transformers import DynamicCache

from qlora.serving.model_store import ModelStore
from qlora.serving.running_batch import left_padded
from tests.support.serving import DOMAINS


def _logits(store: ModelStore, adapters: list[str | None]) -> torch.Tensor:
    prompts = [store.tokenizer.encode(text) for text in ("Your order ships within", "계약서에는", "Take")]
    ids, mask = left_padded(prompts, store.tokenizer.pad_token_id or 0)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return store.forward(ids, mask, positions, DynamicCache(), adapters)


def test_dequantized_nf4_computes_what_training_computed_with_and_without_adapters(serving_base, serving_adapters):
    """Training's path through a 4-bit linear is dequantise-then-matmul; so is ``nf4-dequantized``.
    (Served as ``nf4`` in eval mode on an AVX512-BF16 CPU, bitsandbytes repacks the weights for a
    bf16 kernel whose results differ by ~0.3% per layer.)"""
    import bitsandbytes as bnb

    stores = {mode: ModelStore(serving_base, mode, "float32") for mode in ("nf4", "nf4-dequantized", "none")}
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in stores["nf4-dequantized"].base.modules())
    for store in stores.values():
        store.load_adapter("a", str(serving_adapters[DOMAINS[0]]))
    for module in stores["nf4"].peft.modules():  # bitsandbytes' training-mode path, nothing else in train mode
        if isinstance(module, bnb.nn.Linear4bit):
            module.train()
    for adapters in ([None] * 3, ["a"] * 3, ["a", None, "a"]):
        trained, held, plain = (_logits(stores[mode], adapters) for mode in ("nf4", "nf4-dequantized", "none"))
        assert torch.allclose(held, trained, atol=1e-4), float((held - trained).abs().max())
        # The check has teeth: full-precision weights are measurably different values.
        assert (plain - trained).abs().max() > 100 * (held - trained).abs().max()
