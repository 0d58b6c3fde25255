"""Causal-LM loss without materialising full-vocabulary logits.

The seed computes `lm_head` over every position and upcasts the logits to fp32: for a 4 x 4096
batch and Llama-3's 128,256-token vocabulary that is 8.4 GB of logits plus as much again for their
gradient. Here the decoder's hidden states go straight into Liger's fused linear cross-entropy,
which computes logits chunk by chunk and never keeps them; only positions that carry a label are
projected at all. Without CUDA/Liger, the same chunking runs in plain PyTorch (the tests' path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
_CHUNK = 4096


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, reduction="sum")


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T`, one recomputed chunk of logits at a time."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], _CHUNK):
        stop = start + _CHUNK
        total = total + checkpoint(_chunk_loss_sum, hidden[start:stop], weight, labels[start:stop], use_reentrant=False)
    return total / max(labels.numel(), 1)


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunked_only: bool = False
) -> torch.Tensor:
    """Liger's fused kernel on CUDA; the chunked PyTorch version elsewhere or when asked (same value)."""
    if hidden.is_cuda and not chunked_only:
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:  # the gpu extra is not installed: still avoid the full logits
            return chunked_linear_cross_entropy(hidden, weight, labels)
        return LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX)(weight, hidden, labels)
    return chunked_linear_cross_entropy(hidden, weight, labels)


class FusedLossCausalLM(nn.Module):
    """Wraps a (peft-wrapped) *ForCausalLM; `forward(**batch)` returns the mean next-token loss.

    The wrapper is what DDP/accelerate should wrap, so that the loss is computed inside the
    wrapped forward and gradient synchronisation is prepared as usual.
    """

    def __init__(self, model: nn.Module, chunked_only: bool = False) -> None:
        super().__init__()
        self.model = model
        self.chunked_only = chunked_only  # PyTorch chunks even on CUDA (the bench's TRL-like seed loss)
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        # Plain attributes, not submodules: the parameters are already registered through `model`.
        self.__dict__["_decoder"] = causal_lm.model
        self.__dict__["_lm_head"] = causal_lm.lm_head

    def forward(self, input_ids, labels, attention_mask=None, position_ids=None, **varlen_kwargs):
        hidden = self._decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **varlen_kwargs,
        ).last_hidden_state
        hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        targets = labels[:, 1:].reshape(-1)
        keep = targets != IGNORE_INDEX
        return linear_cross_entropy(hidden[keep], self._lm_head.weight, targets[keep], self.chunked_only)
