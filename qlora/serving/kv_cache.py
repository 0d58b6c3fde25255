"""A KV cache whose layers append into spare room, so a decode step does not re-copy the cache.

transformers' DynamicLayer concatenates every step: each layer's whole K and V are copied to add
one position, so a row's decode costs grow with the square of its length (SmolLM2, 30 rows near
190 positions: a fifth of a step). A GrowingLayer keeps its K/V as the front of a larger buffer
and writes each new position into the room behind it; it re-allocates (with room to spare) only
when the room runs out or when the running batch replaced its tensors (a join stacks new rows,
a finished row is dropped), which it detects because they are no longer views of its buffer.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_POSITIONS = 64  # room added on each re-allocation (at least; half the length for long rows)


def _append(room: torch.Tensor | None, held: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(buffer, held + new as a view of its front); ``held`` is [rows, heads, length, dim] or empty."""
    length = held.shape[-2] if held.numel() else 0
    end = length + new.shape[-2]
    in_place = (room is not None and length and held.data_ptr() == room.data_ptr()
                and held.shape[:-2] == room.shape[:-2] and held.shape[-1] == room.shape[-1]
                and end <= room.shape[-2] and held.stride() == room.stride())
    if not in_place:
        capacity = end + max(SPARE_POSITIONS, end // 2)
        room = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
        if length:
            room[..., :length, :] = held
    room[..., length:end, :] = new
    return room, room[..., :end, :]


class GrowingLayer(DynamicLayer):
    """A DynamicLayer (same mask sizes, same tensors seen by attention) that appends in place."""

    _key_room: torch.Tensor | None = None    # the buffers whose fronts are self.keys / self.values
    _value_room: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._key_room, self.keys = _append(self._key_room, self.keys, key_states)
        self._value_room, self.values = _append(self._value_room, self.values, value_states)
        return self.keys, self.values


def growing_cache() -> DynamicCache:
    """An empty cache of full-attention layers that grow in place (see the module docstring)."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    return cache


def stackable(cache: DynamicCache) -> bool:
    """Only full-attention layers can be stacked and trimmed by the running batch (a sliding
    window keeps its own offsets)."""
    return all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)
