"""Checks on a base model: the chat template matches the tokenizer, and NF4 costs little perplexity.

Seed troubleshooting #2: a template whose special tokens are not single tokens of the
tokenizer trains a model that generates badly while its loss looks fine.
Seed troubleshooting #4: compare perplexity before and after 4-bit quantisation.
"""
from __future__ import annotations

import math
from pathlib import Path

from qlora.modeling.chat_template import BOS, END_HEADER, EOT, START_HEADER

TEMPLATE_TOKENS = [BOS, START_HEADER, END_HEADER, EOT]
PROBE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi"},
]


def chat_template_check(tokenizer) -> dict:
    """Template present, renders the Llama-3 markers, and each marker is one vocabulary token."""
    problems = []
    if not tokenizer.chat_template:
        problems.append("tokenizer has no chat_template")
        rendered = ""
    else:
        rendered = tokenizer.apply_chat_template(PROBE, tokenize=False)
    vocab = tokenizer.get_vocab()
    for token in TEMPLATE_TOKENS:
        if token not in vocab:
            problems.append(f"special token {token} is not in the tokenizer vocabulary")
        elif len(tokenizer.encode(token, add_special_tokens=False)) != 1:
            problems.append(f"special token {token} does not encode to a single id")
        if rendered and token not in rendered:
            problems.append(f"chat template does not emit {token}")
    if tokenizer.eos_token not in (EOT, "<|end_of_text|>"):
        problems.append(f"eos_token is {tokenizer.eos_token!r}, expected {EOT} (end of turn)")
    return {"passed": not problems, "problems": problems, "rendered_probe": rendered}


def perplexity(model, tokenizer, documents: list[str], max_length: int = 256) -> float:
    import torch

    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for doc in documents:
            ids = tokenizer(doc, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_length]
            if ids.shape[1] < 2:
                continue
            ids = ids.to(model.device)
            loss = model(input_ids=ids, labels=ids).loss.float().item()
            total_nll += loss * (ids.shape[1] - 1)
            total_tokens += ids.shape[1] - 1
    if not total_tokens:
        raise ValueError("no evaluation text long enough to measure perplexity")
    return math.exp(total_nll / total_tokens)


def quantization_gap(model_dir: Path, documents: list[str], max_docs: int = 48) -> dict:
    """Perplexity in bf16 and in NF4 + double quant (bitsandbytes runs on CPU too)."""
    import torch
    from qlora.core import bnb_notice  # noqa: F401  (before bitsandbytes loads)
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    docs = documents[:max_docs]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bf16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map=device_map)
    ppl_bf16 = perplexity(bf16, tokenizer, docs)
    del bf16
    nf4_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    nf4 = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=nf4_config, dtype=torch.bfloat16, device_map=device_map
    )
    ppl_nf4 = perplexity(nf4, tokenizer, docs)
    return {
        "ppl_bf16": round(ppl_bf16, 4),
        "ppl_nf4": round(ppl_nf4, 4),
        "gap_pct": round(100.0 * (ppl_nf4 - ppl_bf16) / ppl_bf16, 3),
        "documents": len(docs),
    }
