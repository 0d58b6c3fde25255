"""A Llama-shaped model with random weights, quantised to NF4 layer by layer, for the GPU bench.

Speed depends on shapes, not on weight values, so no checkpoint is needed. The model's skeleton
is made on the meta device; then each decoder layer is created on the GPU in bf16 and its linears
are swapped for bitsandbytes `Linear4bit` modules holding NF4 + double-quant weights (exactly the
modules `from_pretrained(..., BitsAndBytesConfig(load_in_4bit=True, ...))` converts; lm_head stays
bf16) before the next layer exists. So the bf16 model never exists whole: Llama-3.1-70B (141 GB in
bf16, more than one H200 holds) is built in its 36.9 GiB quantised form.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

LLAMA31_8B = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    intermediate_size=14336,
    vocab_size=128256,
    max_position_embeddings=131072,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
LLAMA31_70B = dict(LLAMA31_8B, hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                   intermediate_size=28672)
TINY = dict(LLAMA31_8B, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=256, vocab_size=512, max_position_embeddings=4096)
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def to_nf4(linear: nn.Linear, device: torch.device) -> nn.Module:
    import bitsandbytes as bnb

    quantized = bnb.nn.Linear4bit(
        linear.in_features, linear.out_features, bias=False, compute_dtype=torch.bfloat16,
        compress_statistics=True, quant_type="nf4", device="meta",
    )
    quantized.weight = bnb.nn.Params4bit(
        linear.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4", module=quantized
    ).to(device)
    return quantized


def _random_bf16_(module: nn.Module) -> None:
    """Llama's init (normal, std 0.02; norms 1) in place on freshly materialised weights."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.normal_(sub.weight, std=0.02)
        elif hasattr(sub, "weight") and isinstance(sub.weight, nn.Parameter) and sub.weight.dim() == 1:
            nn.init.ones_(sub.weight)


def quantize_layer(layer: nn.Module, device: torch.device) -> None:
    for parent in (layer.self_attn, layer.mlp):
        for name in TARGET_MODULES:
            if hasattr(parent, name):
                setattr(parent, name, to_nf4(getattr(parent, name), device))


def build_nf4_llama(shape: dict, device: str, seed: int = 0, on_layer=None) -> LlamaForCausalLM:
    """Random-weight Llama with NF4 double-quant decoder linears, bf16 embeddings/norms/lm_head.

    Built one decoder layer at a time: a layer is materialised in bf16 on `device`, quantised, and
    only then is the next one made, so the peak is the NF4 model plus one bf16 layer.
    `on_layer(index, model)` is called after each layer is quantised (the tests watch the order).
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    torch.manual_seed(seed)
    config = LlamaConfig(**shape)
    config._attn_implementation = "sdpa"
    dev = torch.device(device)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
        for name in ("embed_tokens", "norm"):
            module = getattr(model.model, name).to_empty(device=dev)
            _random_bf16_(module)
        model.lm_head.to_empty(device=dev)
        _random_bf16_(model.lm_head)
        with torch.device(dev):
            model.model.rotary_emb = LlamaRotaryEmbedding(config)
        for index, layer in enumerate(model.model.layers):
            layer.to_empty(device=dev)
            _random_bf16_(layer)
            quantize_layer(layer, dev)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            if on_layer is not None:
                on_layer(index, model)
    finally:
        torch.set_default_dtype(previous)
    # What transformers' bnb quantizer sets, and what peft checks to pick its 4-bit LoRA layers.
    model.is_loaded_in_4bit = True
    model.requires_grad_(False)
    return model


def restore_bf16(model: nn.Module) -> None:
    """Undo the seed's fp32 upcast (exact: the frozen bf16 values round-trip through fp32)."""
    for param in model.parameters():
        if param.dtype == torch.float32 and param.__class__.__name__ != "Params4bit":
            param.data = param.data.to(torch.bfloat16)


def flops_per_token(shape: dict, seq_len: int, lora_params: int) -> float:
    """Model FLOPs per token with a frozen base: 4*N_mm + 6*N_lora + 12*L*d*s (the issue's formula)."""
    d, layers, ff, vocab = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"], shape["vocab_size"]
    kv = d * shape["num_key_value_heads"] // shape["num_attention_heads"]
    n_mm = layers * (2 * d * d + 2 * d * kv + 3 * d * ff) + d * vocab
    return 4 * n_mm + 6 * lora_params + 12 * layers * d * seq_len
