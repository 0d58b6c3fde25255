"""The rows decoding together, with iteration-level scheduling as vLLM does it.

A row leaves the batch the step it finishes (its request is answered then, not when the
longest row of its batch ends), and waiting requests join between two decode steps: they are
prefilled in a pass of their own and their KV cache is left-padded to the running rows' length
and stacked under it. Every row keeps its own positions, so padding never shifts RoPE.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from qlora.serving.decoding import RowDecoder
from qlora.serving.kv_cache import growing_cache, stackable


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, every prompt ending at the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        mask[i, width - len(prompt):] = 1
    return ids, mask


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class RunningBatch:
    def __init__(self, store, pad_id: int, stop_token_ids: set[int]):
        self.store = store
        self.pad_id = pad_id
        self.stop_token_ids = stop_token_ids
        self.requests: list = []
        self.rows: list[RowDecoder] = []
        self.cache: DynamicCache | None = None
        self.mask = self.positions = self.logits = None  # [rows, length], [rows, 1], [rows, vocab]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def can_join(self) -> bool:
        return self.cache is None or stackable(self.cache)

    def join(self, requests: list) -> None:
        """Prefill ``requests`` in one pass and add them to the running rows."""
        ids, mask = left_padded([r.prompt_ids for r in requests], self.pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = growing_cache()
        logits = self.store.forward(ids, mask, positions, cache, [r.adapter for r in requests])
        rows = [RowDecoder(self.store.tokenizer, r, self.stop_token_ids) for r in requests]
        if self.cache is None:
            self.cache, self.mask, self.positions, self.logits = cache, mask, positions[:, -1:], logits
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            for running, joining in zip(self.cache.layers, cache.layers):
                running.keys = torch.cat([_pad_left(running.keys, length, 2), _pad_left(joining.keys, length, 2)])
                running.values = torch.cat([_pad_left(running.values, length, 2),
                                            _pad_left(joining.values, length, 2)])
            self.mask = torch.cat([_pad_left(self.mask, length, 1), _pad_left(mask, length, 1)])
            self.positions = torch.cat([self.positions, positions[:, -1:]])
            self.logits = torch.cat([self.logits, logits])
        self.requests += requests
        self.rows += rows

    def step(self) -> list[tuple[object, RowDecoder]]:
        """Choose each row's next token; returns the rows that finished (now out of the batch)."""
        greedy = self.logits.argmax(dim=-1).tolist()
        chosen = [row.choose(self.logits[i]) if row.samples else greedy[i] for i, row in enumerate(self.rows)]
        for row, token in zip(self.rows, chosen):
            row.accept(int(token))  # a row whose sampling failed has ended itself with an error
        keep = [i for i, row in enumerate(self.rows) if not row.finished]
        finished = [(self.requests[i], self.rows[i]) for i, row in enumerate(self.rows) if row.finished]
        if len(keep) < len(self.rows):
            self._select(keep)
        if keep:
            next_ids = torch.tensor([chosen[i] for i in keep])[:, None]
            self.mask = torch.cat([self.mask, torch.ones((len(keep), 1), dtype=torch.long)], dim=1)
            self.positions = self.positions + 1
            self.logits = self.store.forward(next_ids, self.mask, self.positions, self.cache,
                                             [r.adapter for r in self.requests])
        return finished

    def _select(self, keep: list[int]) -> None:
        self.requests = [self.requests[i] for i in keep]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.positions = self.logits = None
            return
        index = torch.tensor(keep)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        # Columns that are padding for every row left (the longest prompt finished): drop them.
        start = int(self.mask.any(dim=0).nonzero()[0])
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]
