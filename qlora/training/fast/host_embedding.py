"""The frozen input embedding table in pinned host memory (`speed.embedding_on_host`).

With a frozen base the input embedding is a lookup: a micro-batch of T tokens reads T rows of a
vocab x hidden table (Llama-3.1-8B: 128,256 x 4,096 bf16 = 0.98 GiB on the GPU for 8,192 x 4,096 x 2
bytes = 64 MiB read per micro-batch). The table moves to pinned host memory and the rows are
gathered there, so the GPU keeps only the gathered rows: the same values, bit for bit (a gather
copies), and no gradient is lost (the table is frozen; LoRA does not touch it).

On CUDA the gather is one Triton kernel that reads the pinned table through its mapped device
address (pinned host memory is addressable from the GPU under unified virtual addressing), on the
current stream: no synchronisation, the ids never leave the GPU. If that launch fails (a driver or
Triton that refuses host pointers), the ids are copied to the host, gathered there and sent back:
the same rows, one synchronisation per micro-batch. On a CPU the table is used where it is.

The table is no parameter or buffer of the model any more: `model.device` (the first parameter's)
stays the GPU, and `state_dict()` no longer carries it (the adapter never did; a merge loads the
base afresh).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class HostEmbedding(nn.Module):
    """Drop-in for a frozen nn.Embedding whose table lives in (pinned) host memory."""

    def __init__(self, embedding: nn.Embedding, pinned: bool):
        super().__init__()
        table = embedding.weight.detach().to("cpu")
        self.__dict__["table"] = table.pin_memory() if pinned else table  # not a parameter: stays on the host
        self.num_embeddings, self.embedding_dim = table.shape
        self.padding_idx = embedding.padding_idx
        self.gpu_gather = pinned  # False after a refused launch: the synchronising path from then on

    @property
    def weight(self) -> torch.Tensor:  # what callers of get_input_embeddings().weight read (shape, dtype)
        return self.table

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.device.type != "cuda":
            return F.embedding(input_ids, self.table)
        if self.gpu_gather:
            try:
                return gather_rows_from_host(self.table, input_ids)
            except Exception as error:  # noqa: BLE001 - any refusal: fall back to the host gather
                log.warning("embedding_on_host: GPU gather from pinned memory refused (%s); gathering on the host", error)
                self.gpu_gather = False
        rows = F.embedding(input_ids.to("cpu"), self.table)
        return rows.pin_memory().to(input_ids.device, non_blocking=True)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, on host"


def gather_rows_from_host(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """`table[ids]` on the GPU, `table` a pinned host tensor read through its mapped address."""
    from qlora.training.fast import host_gather_kernel

    return host_gather_kernel.gather(table, ids)


def move_embedding_to_host(causal_lm: nn.Module) -> HostEmbedding:
    """Replace the decoder's input embedding by a HostEmbedding and free its GPU table."""
    decoder = causal_lm.model
    embedding = decoder.embed_tokens
    if isinstance(embedding, HostEmbedding):
        return embedding
    if embedding.weight.requires_grad:
        raise ValueError("speed.embedding_on_host needs a frozen input embedding (it is trained here)")
    tied = getattr(causal_lm, "lm_head", None) is not None and causal_lm.lm_head.weight is embedding.weight
    if tied:  # one table is both the lookup and the LM head: the head needs it on the GPU anyway
        raise ValueError("speed.embedding_on_host: this model ties its input embedding to the LM head; "
                         "the table must stay on the GPU for the head (turn the lever off)")
    host = HostEmbedding(embedding, pinned=embedding.weight.is_cuda)
    host.__dict__["original"] = embedding.to("meta") if embedding.weight.is_cuda else embedding
    decoder.embed_tokens = host
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return host


def restore_embedding(causal_lm: nn.Module, device: torch.device | str) -> None:
    """Undo `move_embedding_to_host` (the bench reuses one base for many variants)."""
    decoder = causal_lm.model
    host = decoder.embed_tokens
    if not isinstance(host, HostEmbedding):
        return
    embedding = host.__dict__["original"]
    if embedding.weight.is_meta:
        embedding = embedding.to_empty(device=device)
        with torch.no_grad():
            embedding.weight.copy_(host.table)
    embedding.weight.requires_grad_(False)
    decoder.embed_tokens = embedding
