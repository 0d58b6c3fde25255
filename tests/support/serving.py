"""Fast, self-contained models for the serving tests and bench: a tiny random Llama and LoRA adapters.

The serving tests do not wait for the real tiny base (modeling area): a random 2-layer Llama with a
byte-level tokenizer that carries the Llama-3 special tokens and chat template is enough to check
routing, batching and the vLLM API. Adapters use ``init_lora_weights=False`` so each one visibly
changes the output.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from qlora.modeling.base_identity import base_folder_fingerprint
from qlora.modeling.chat_template import (
    BOS,
    EOS,
    EOT,
    LLAMA3_CHAT_TEMPLATE,
    PAD,
    SPECIAL_TOKENS,
)

CORPUS = [
    "The lease may be ended with one month of notice.",
    "Take the medicine twice a day after meals.",
    "Your order ships within three business days.",
    "임대차 계약 해지 통보 기간은 한 달입니다.",
    "Answer in JSON with the keys answer and source.",
]
DOMAINS = ("legal-ko", "medical-ko", "cs-support")


def build_tokenizer(out_dir: Path):
    """A byte-level BPE (never an unknown character, Korean included) with the Llama-3 specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=BOS, eos_token=EOT, pad_token=PAD, unk_token=None
    )
    tok.add_special_tokens({"additional_special_tokens": [EOS]})
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    return tok


def build_tiny_llama(out_dir: Path, seed: int = 0, max_positions: int = 256) -> Path:
    """Save a random LlamaForCausalLM (hidden 64, 2 layers) with its tokenizer to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.convert_tokens_to_ids(EOT), tok.convert_tokens_to_ids(EOS)],
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init with std 0.02 gives near-uniform logits; a larger scale gives decisive, non-tied
    # greedy choices so outputs compare exactly across batch shapes.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 2.0 / p.shape[1] ** 0.5)
    model.save_pretrained(out_dir)
    return out_dir


def build_adapter(
    base_dir: Path, out_dir: Path, seed: int, r: int = 8, modules_to_save: list[str] | None = None
) -> Path:
    """Save a random LoRA adapter for ``base_dir`` (non-zero B, so it changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(out_dir)
    (out_dir / "manifest.json").write_text(
        json.dumps({"version": out_dir.name, "train_date": "2026-01-05", "r": r,
                    "base": {"path": str(base_dir), "fingerprint": base_folder_fingerprint(base_dir)}})
    )
    return out_dir


@pytest.fixture(scope="session")
def serving_base(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("serving_base") / "tiny-llama")


@pytest.fixture(scope="session")
def serving_adapters(serving_base, qlora_home) -> dict[str, Path]:
    """Three domain adapters under the adapters root, plus two vLLM cannot serve."""
    root = qlora_home / "artifacts" / "adapters"
    made = {}
    for i, domain in enumerate(DOMAINS):
        made[domain] = build_adapter(serving_base, root / domain / "v1", seed=100 + i)
    made["rank-too-big"] = build_adapter(serving_base, root / "big" / "v1", seed=7, r=64)
    made["with-lm-head"] = build_adapter(
        serving_base, root / "head" / "v1", seed=8, modules_to_save=["lm_head"]
    )
    return made


@pytest.fixture(scope="session")
def embedded(serving_base, serving_adapters, qlora_home):
    """One embedded server + router for the serving tests: NF4 base, max_lora_rank 16.

    Its router re-syncs only at start (an hour between re-syncs): tests here drop adapters under the
    router on purpose; the re-sync itself is tested on servers of their own."""
    from qlora.serving.config import EmbeddedConfig, RouterConfig
    from qlora.serving.embedded import start_embedded

    config = EmbeddedConfig(max_lora_rank=16, max_batch_size=32, batch_window_ms=5.0,
                            router=RouterConfig(resync_interval_s=3600))
    handle = start_embedded(serving_base, api_key="test-admin-key", state_dir=qlora_home / "serving-fixture",
                            adapters_root=qlora_home / "artifacts" / "adapters", config=config)
    yield handle
    handle.stop()
