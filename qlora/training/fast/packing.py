"""Padding-free batches: sequences concatenated into one row, positions restarting per sequence.

Built on transformers' `DataCollatorWithFlattening`: labels get -100 at each sequence's first token,
so no token is trained to predict across a boundary, and `cu_seq_lens_*` tell the varlen attention
where each sequence starts. `token_budget_batches` groups consecutive examples into micro-batches
by token count instead of by row count, so short rows fill the GPU instead of padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import DataCollatorWithFlattening


class PaddingFreeCollator:
    """Examples with `input_ids` (and optional `labels`) -> one packed row with varlen kwargs."""

    def __init__(self) -> None:
        self._flatten = DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=True)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor | int]:
        for index, example in enumerate(examples):
            if len(example["input_ids"]) < 2:
                raise ValueError(f"example {index}: a sequence needs at least 2 tokens to train on")
        batch = self._flatten(list(examples), return_tensors="pt")
        batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = torch.as_tensor(batch["cu_seq_lens_q"], dtype=torch.int32)
        return batch


def token_budget_batches(lengths: Iterable[int], max_tokens: int) -> list[list[int]]:
    """Consecutive example indices grouped so that each group holds at most `max_tokens` tokens.

    Order is kept (the same data order as a row-count batcher, so runs stay comparable); an example
    longer than the budget is an error rather than a silent truncation.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index, length in enumerate(lengths):
        if length > max_tokens:
            raise ValueError(f"example {index} has {length} tokens, more than max_tokens={max_tokens}")
        if current and used + length > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(index)
        used += length
    if current:
        batches.append(current)
    return batches


def padded_batch(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """The seed's layout, for comparison: right-padded rows, attention mask, -100 labels on padding."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        ids[row, :n] = torch.as_tensor(example["input_ids"])
        mask[row, :n] = 1
        labels[row, :n] = torch.as_tensor(example.get("labels", example["input_ids"]))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
