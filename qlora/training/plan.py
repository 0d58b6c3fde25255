"""`qlora plan`: trainable parameters, peak memory and GPU-hours for a config, without weights or a GPU.

The model is built on the meta device. Memory is an estimate of the seed's recipe
(4-bit base, bf16 embeddings/lm_head, LoRA in fp32 with 8-bit Adam, gradient
checkpointing, logits); docs/benchmarks.md compares it with a measurement.
"""
from __future__ import annotations

from pathlib import Path

from qlora.training.config import QLoRAConfig

# Llama-3.1-8B's architecture (config.json of meta-llama/Llama-3.1-8B-Instruct), so planning needs no checkpoint.
LLAMA31_8B_SHAPES = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
    rope_theta=500000.0, tie_word_embeddings=False,
)
MEASURED_TOKENS_PER_SECOND = 1920.0  # seed config on one H200 (DESIGN.md anchor)
GIB = 2**30


def model_config_for(config: QLoRAConfig):
    from transformers import AutoConfig, LlamaConfig

    if config.base_model_path and Path(config.base_model_path).is_dir():
        return AutoConfig.from_pretrained(config.base_model_path)
    if config.base_profile == "tiny":
        from qlora.modeling.base_model import base_model_path

        return AutoConfig.from_pretrained(base_model_path("tiny"))
    return LlamaConfig(**LLAMA31_8B_SHAPES)


def lora_model_on_meta(config: QLoRAConfig, model_config):
    import torch
    from qlora.core import bnb_notice  # noqa: F401  (before peft loads bitsandbytes)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
        lora = LoraConfig(r=config.r, lora_alpha=config.lora_alpha, target_modules=list(config.target_modules),
                          lora_dropout=config.lora_dropout, bias=config.bias, task_type="CAUSAL_LM")
        return get_peft_model(model, lora)


def estimate_peak_bytes(config: QLoRAConfig, mc, total_params: int, trainable: int) -> dict:
    embed = mc.vocab_size * mc.hidden_size * (1 if mc.tie_word_embeddings else 2)
    body = total_params - trainable - embed
    bits = 4.127 if config.bnb_4bit_use_double_quant else 4.5  # NF4 + block constants
    weights = body * bits / 8 + embed * 2 if config.load_in_4bit else (body + embed) * 2
    optimizer_bytes = 2 if "8bit" in config.optim else 8
    lora = trainable * (4 + 4 + optimizer_bytes)  # fp32 weight + grad + optimizer state
    tokens = config.per_device_train_batch_size * config.max_length
    h, inter, layers = mc.hidden_size, mc.intermediate_size, mc.num_hidden_layers
    per_layer = tokens * (10 * h + 3 * inter) * 2  # one layer's activations in bf16
    activations = (layers * tokens * h * 2 + per_layer) if config.gradient_checkpointing else layers * per_layer
    # bf16 logits + one fp32 copy for the loss: calibrated on the H200 run in docs/benchmarks.md (23.3 GiB measured)
    logits = tokens * mc.vocab_size * (2 + 4)
    parts = {"weights": weights, "lora_and_optimizer": lora, "activations": activations, "logits": logits}
    return {k: round(v / GIB, 2) for k, v in {**parts, "total": sum(parts.values())}.items()}


def plan(config: QLoRAConfig, rows: int, mean_tokens: int, tokens_per_second: float, costs_file: Path) -> dict:
    from qlora.training.costs import price_run

    mc = model_config_for(config)
    model = lora_model_on_meta(config, mc)
    trainable, total = model.get_nb_trainable_parameters()
    tokens = rows * min(mean_tokens, config.max_length) * config.num_train_epochs
    seconds = tokens / tokens_per_second
    return {
        "trainable_params": trainable,
        "all_params": total,
        "trainable_pct": round(100 * trainable / total, 3),
        "peak_memory_gib": estimate_peak_bytes(config, mc, total, trainable),
        "train_tokens": int(tokens),
        "gpu_hours": round(seconds / 3600, 3),
        "cost": price_run(seconds, config.cost_instance, costs_file),
        "assumed_tokens_per_second": tokens_per_second,
    }
