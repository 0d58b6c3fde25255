"""Build the embedded default base: a small Llama with a byte-level BPE tokenizer, pretrained briefly.

A random-init base can't generate well after LoRA alone (a measured fact of this project), so the
model is pretrained full-parameter on the sample corpus rendered with the
Llama-3 chat template. Everything is seeded, so the same inputs give the same
model; the builder's cache key is the hash of its inputs and settings.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qlora.core.cpu_threads import limit_threads_when_busy
from qlora.modeling.chat_template import BOS, EOT, LLAMA3_CHAT_TEMPLATE, PAD, SPECIAL_TOKENS


@dataclass(frozen=True)
class TinyBaseSpec:
    """Shapes and pretraining budget of the tiny base (part of the cache key)."""

    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    pretrain_steps: int = 160
    pretrain_block: int = 128
    pretrain_batch: int = 8
    pretrain_lr: float = 3e-3
    seed: int = 0
    builder_version: int = 3  # 3: Llama-3 pre-tokenizer split pattern

    def as_dict(self) -> dict:
        return asdict(self)


LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(strings: list[str], spec: TinyBaseSpec):
    """Byte-level BPE (as Llama 3 uses) with the Llama-3 special tokens and chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    # Llama 3's split pattern: `\s*[\r\n]+` keeps the header's "\n\n" one piece both inside a
    # conversation and at the end of a generation prompt. GPT-2's default splits it differently in
    # the two places, and the adapter then starts every answer with a stray newline.
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    core.train_from_iterator(strings, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOT, pad_token=PAD, model_max_length=spec.max_position_embeddings
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer, spec: TinyBaseSpec):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def pretrain(model, tokenizer, documents: list[str], spec: TinyBaseSpec, log=print) -> list[float]:
    """Full-parameter causal-LM training on packed blocks of the chat-rendered corpus."""
    import torch

    limit_threads_when_busy()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # same recipe; a GPU just builds it faster
    model.to(device)
    generator = torch.Generator().manual_seed(spec.seed)
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"]
    block = spec.pretrain_block
    while len(ids) < (block + 1) * spec.pretrain_batch:  # tiny corpora: repeat so a batch fills
        ids = ids + ids
    stream = torch.tensor(ids, dtype=torch.long)
    n_blocks = (len(stream) - 1) // block
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr, weight_decay=0.01)
    warmup = max(1, spec.pretrain_steps // 10)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, spec.pretrain_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    losses = []
    started = time.monotonic()
    for step in range(spec.pretrain_steps):
        starts = torch.randint(0, n_blocks, (spec.pretrain_batch,), generator=generator) * block
        batch = torch.stack([stream[s : s + block] for s in starts.tolist()]).to(device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 40 == 0 or step == spec.pretrain_steps - 1:
            log(f"tiny base pretrain step {step + 1}/{spec.pretrain_steps} loss {loss:.3f} ({time.monotonic() - started:.0f}s)")
    model.to("cpu").eval()
    return losses


def build_tiny_base(out_dir: Path, strings: list[str], documents: list[str], spec: TinyBaseSpec, log=print) -> dict:
    """Write model + tokenizer to ``out_dir``; returns build facts for fingerprint.json."""
    import torch

    torch.manual_seed(spec.seed)
    tokenizer = train_tokenizer(strings, spec)
    model = build_model(tokenizer, spec)
    losses = pretrain(model, tokenizer, documents, spec, log=log)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"pretrain_loss_first": losses[0], "pretrain_loss_last": sum(losses[-10:]) / len(losses[-10:])}
