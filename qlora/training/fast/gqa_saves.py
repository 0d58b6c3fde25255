"""Grouped-query attention through a kernel that wants every head: keep the K/V heads, not their copies
(`speed.compact_gqa_saves`).

cuDNN's fused attention (varlen_attention.py, equal-length packs) takes no grouped KV heads, so K and
V are expanded to the query heads (`repeat_interleave`) before it, and its backward keeps the
expanded copies: on Llama-3.1-8B (32 query heads, 8 KV heads) 2 x 4,096 values a token instead of
2 x 1,024, 12% of a kept layer with speed.recompute_lora_inputs (and 12% more to copy for an
offloaded one). Here the expanded copies are saved as the unexpanded K and V and expanded again when
the backward unpacks them: the same kernel on bit-identical inputs, so the same gradients, for
one `repeat_interleave` of K and V per layer in backward.

The saved-tensor hooks nest inside the activation offloader's (offload.py): what they keep goes on
through the offloaded layer's hooks, so an offloaded layer copies the small K/V to host memory. They
are not used in recomputed (checkpointed) layers, whose own hooks must see every saved tensor.
"""
from __future__ import annotations

import torch

from qlora.training.fast.offload import active_hooks

ENABLED_ATTRIBUTE = "_qlora_compact_gqa_saves"  # set on an attention module by levers.set_layer_plan
_EXPANDED = object()  # marks a packed expansion in the saved-tensor hooks


def enabled(module) -> bool:
    return bool(getattr(module, ENABLED_ATTRIBUTE, False))


def attend_with_compact_kv(attend, k: torch.Tensor, v: torch.Tensor, groups: int):
    """`attend(k_expanded, v_expanded)` with the expanded K/V saved for backward as `k`/`v`."""
    outer_pack, outer_unpack = active_hooks()
    sources: dict[int, tuple[torch.Tensor, torch.Size, tuple[int, ...]]] = {}

    def pack(tensor: torch.Tensor):
        entry = sources.get(tensor.untyped_storage().data_ptr())
        if entry is not None and tensor.storage_offset() == 0 and tensor.shape == entry[1] \
                and tensor.stride() == entry[2]:
            return _EXPANDED, outer_pack(entry[0]), tensor.shape, tensor.stride()
        return None, outer_pack(tensor)

    def unpack(packed):
        if packed[0] is _EXPANDED:
            _, source, shape, stride = packed
            expanded = outer_unpack(source).repeat_interleave(groups, dim=1)
            if expanded.shape != shape or expanded.stride() != stride:  # the kernel must get what it saved
                raise RuntimeError(f"compact_gqa_saves: re-expanded {tuple(expanded.shape)}/{expanded.stride()}, "
                                   f"saved {tuple(shape)}/{stride}")
            return expanded
        return outer_unpack(packed[1])

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        k_expanded = k.repeat_interleave(groups, dim=1)
        v_expanded = v.repeat_interleave(groups, dim=1)
        for source, expanded in ((k, k_expanded), (v, v_expanded)):
            sources[expanded.untyped_storage().data_ptr()] = (source, expanded.shape, expanded.stride())
        out = attend(k_expanded, v_expanded)
    sources.clear()  # the hooks outlive the forward: they must not keep K/V (or their copies) alive
    return out
