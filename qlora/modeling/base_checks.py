"""Checks on a base model: the chat template matches the tokenizer, and NF4 costs little perplexity.

Seed troubleshooting #2: a template whose special tokens are not single tokens of the
tokenizer trains a model that generates badly while its loss looks fine.
Seed troubleshooting #4: compare perplexity before and after 4-bit quantisation.
"""
from __future__ import annotations

import math
from pathlib import Path

from qlora.modeling.chat_template import TEMPLATE_FAMILIES, template_family

PROBE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi"},
]


def chat_template_check(tokenizer) -> dict:
    """Template present and of a known family (Llama-3, ChatML); each marker is one vocabulary token;
    EOS is the end-of-turn token (where the server stops); the assistant turn is maskable for training."""
    problems = []
    family = template_family(tokenizer.chat_template)
    rendered = tokenizer.apply_chat_template(PROBE, tokenize=False) if tokenizer.chat_template else ""
    if not tokenizer.chat_template:
        problems.append("tokenizer has no chat_template")
    elif family is None:
        problems.append("chat template is neither Llama-3 (<|start_header_id|>, <|eot_id|>) nor ChatML "
                        "(<|im_start|>, <|im_end|>)")
    spec = TEMPLATE_FAMILIES[family or "llama3"]
    vocab = tokenizer.get_vocab()
    for token in spec["markers"]:
        if token not in vocab:
            problems.append(f"special token {token} is not in the tokenizer vocabulary")
        elif len(tokenizer.encode(token, add_special_tokens=False)) != 1:
            problems.append(f"special token {token} does not encode to a single id")
        if rendered and token not in rendered:
            problems.append(f"chat template does not emit {token}")
    end_of_turn = spec["end_of_turn"]
    if tokenizer.eos_token not in spec.get("accepted_eos", [end_of_turn]):
        problems.append(f"eos_token is {tokenizer.eos_token!r}, expected {end_of_turn} (end of turn)")
    if tokenizer.pad_token is not None and tokenizer.pad_token == tokenizer.eos_token:
        problems.append(f"pad_token is the eos_token {tokenizer.eos_token!r}: padding would read as end of turn")
    if rendered and not problems and not _assistant_maskable(tokenizer):
        problems.append("chat template has no {% generation %} markers: training cannot mask the assistant turn")
    return {"passed": not problems, "problems": problems, "rendered_probe": rendered, "family": family or "unknown"}


def _assistant_maskable(tokenizer) -> bool:
    out = tokenizer.apply_chat_template(PROBE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return any(out.get("assistant_masks") or [])


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
