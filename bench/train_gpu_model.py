"""A Llama-3.1-8B-shaped model with random weights, quantised to NF4 in place, for the GPU bench.

Speed depends on shapes, not on weight values, so no checkpoint is needed. The model is created
directly on the GPU in bf16 (seconds, not the minutes of a CPU init) and each decoder linear is
swapped for a bitsandbytes `Linear4bit` holding NF4 + double-quant weights, exactly the modules
`from_pretrained(..., BitsAndBytesConfig(load_in_4bit=True, ...))` converts (lm_head stays bf16).
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


def build_nf4_llama(shape: dict, device: str, seed: int = 0) -> LlamaForCausalLM:
    """Random-weight Llama with NF4 double-quant decoder linears, bf16 embeddings/norms/lm_head."""
    torch.manual_seed(seed)
    config = LlamaConfig(**shape)
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    dev = torch.device(device)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in TARGET_MODULES:
                if hasattr(parent, name):
                    setattr(parent, name, to_nf4(getattr(parent, name), dev))
    # What transformers' bnb quantizer sets, and what peft checks to pick its 4-bit LoRA layers.
    model.is_loaded_in_4bit = True
    model.requires_grad_(False)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
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
