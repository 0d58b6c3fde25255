"""Variable-length (padding-free) attention for packed sequences, registered with transformers.

Several sequences are concatenated into one row; each keeps its own causal attention, so no token
attends across a sequence boundary (no cross-contamination). On CUDA this calls PyTorch's flash
kernel for variable-length batches (`torch.nn.attention.varlen`); elsewhere, and as the reference
in tests, it runs SDPA once per sequence. No flash-attn wheel is needed.
"""

from __future__ import annotations

import inspect
import warnings

import torch
import torch.nn.functional as F

ATTN_IMPLEMENTATION = "varlen_sdpa"
_KERNEL_FAILED: str | None = None  # set once the varlen kernel raised; later calls skip it
PREFER_CUDNN = False  # set by register(): equal-length packs go to cuDNN's dense attention


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sequence starts of a packed row, from positions that restart at 0 for every sequence."""
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    if starts.numel() == 0 or int(starts[0]) != 0:
        raise ValueError("packed position_ids must start every sequence at 0")
    total = torch.tensor([flat.numel()], device=flat.device)
    cu = torch.cat([starts, total]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def _torch_varlen():
    """PyTorch's varlen flash attention and how this torch version spells causal and GQA."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, set()
    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


def _per_sequence_sdpa(q, k, v, cu: torch.Tensor, scaling) -> torch.Tensor:
    """Reference path: SDPA per sequence; q,k,v are (tokens, heads, dim)."""
    outs = []
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            qs, ks, vs, is_causal=True, scale=scaling, enable_gqa=qs.shape[0] != ks.shape[0]
        )
        outs.append(out.transpose(0, 1))
    return torch.cat(outs, dim=0)


def _uniform_dense_sdpa(q, k, v, count: int, scaling, compact_saves: bool = False) -> torch.Tensor:
    """Packs of equal-length sequences are a plain batch: dense causal SDPA, cuDNN first.

    On Hopper cuDNN's fused attention is faster than the FlashAttention-2 kernel PyTorch ships;
    KV heads are expanded because cuDNN's SDPA path does not take grouped-query attention
    (`compact_saves`: the backward keeps the unexpanded heads instead, fast/gqa_saves.py).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    length = q.shape[0] // count
    q, k, v = (t.reshape(count, length, t.shape[1], t.shape[2]).transpose(1, 2) for t in (q, k, v))
    backends = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    try:
        context = sdpa_kernel(backends, set_priority=True)
    except TypeError:  # torch without backend priorities: let it choose among these
        context = sdpa_kernel(backends)

    def attend(keys, values):
        with context:
            return F.scaled_dot_product_attention(q, keys, values, is_causal=True, scale=scaling)

    if q.shape[1] == k.shape[1]:
        out = attend(k, v)
    elif compact_saves and torch.is_grad_enabled():
        from qlora.training.fast.gqa_saves import attend_with_compact_kv

        out = attend_with_compact_kv(attend, k, v, q.shape[1] // k.shape[1])
    else:
        groups = q.shape[1] // k.shape[1]
        out = attend(k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1))
    return out.transpose(1, 2).reshape(count * length, out.shape[1], out.shape[3])


def varlen_attention(q, k, v, cu: torch.Tensor, max_len: int, scaling=None, compact_saves: bool = False) -> torch.Tensor:
    """Causal attention over packed sequences; q (T, Hq, D), k/v (T, Hkv, D) -> (T, Hq, D)."""
    global _KERNEL_FAILED
    count = cu.numel() - 1
    if PREFER_CUDNN and q.is_cuda and q.shape[0] == count * max_len:
        return _uniform_dense_sdpa(q, k, v, count, scaling, compact_saves)
    fn, params = _torch_varlen()
    if fn is None or not q.is_cuda or _KERNEL_FAILED:
        return _per_sequence_sdpa(q, k, v, cu, scaling)
    kwargs = {"scale": scaling}
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0)
    else:
        kwargs["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:  # older torch: expand the shared KV heads explicitly
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    try:
        return fn(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, max_len, max_len, **kwargs)
    except RuntimeError as error:  # e.g. a torch build without the varlen flash kernel
        _KERNEL_FAILED = f"{type(error).__name__}: {error}"
        warnings.warn(f"varlen flash kernel unavailable, using per-sequence SDPA: {_KERNEL_FAILED}", stacklevel=2)
        return _per_sequence_sdpa(q, k, v, cu, scaling)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: (B, H, S, D) in, (B, S, H, D) out.

    Packed batches (B == 1 with `cu_seq_lens_q`, or position_ids that restart) go through the varlen
    kernel; anything else (padded rows with a mask, unpacked rows) falls back to plain SDPA.
    """
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    if cu is None and attention_mask is None and kwargs.get("position_ids") is not None and query.shape[0] == 1:
        cu, max_len = cu_seqlens_from_position_ids(kwargs["position_ids"])
    if cu is None or query.shape[0] != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    if dropout:
        raise ValueError("varlen_sdpa attention does not implement attention dropout")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    from qlora.training.fast.gqa_saves import enabled

    out = varlen_attention(q, k, v, cu.to(device=q.device, dtype=torch.int32), int(max_len), scaling, enabled(module))
    return out.unsqueeze(0), None


def register(prefer_cudnn: bool = False) -> str:
    """Make `attn_implementation="varlen_sdpa"` available to every transformers model; returns the name.

    `prefer_cudnn` sends packs of equal-length sequences (e.g. full 4096-token rows) to cuDNN's
    dense attention instead of the varlen FlashAttention-2 kernel.
    """
    from transformers import AttentionInterface

    global PREFER_CUDNN
    PREFER_CUDNN = prefer_cudnn
    AttentionInterface.register(ATTN_IMPLEMENTATION, varlen_attention_forward)
    return ATTN_IMPLEMENTATION
