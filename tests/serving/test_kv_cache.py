"""The growing KV cache holds exactly what transformers' concatenating cache holds, step after
step, including after the running batch replaced its tensors (a join, a finished row)."""
from __future__ import annotations

import torch
from hypothesis import given, settings, strategies as st
from transformers.cache_utils import DynamicLayer

from qlora.serving.kv_cache import GrowingLayer, growing_cache, stackable

HEADS, DIM = 2, 4

# An op is ("append", n positions) or ("drop_row", which) or ("trim", columns) or ("stack", rows):
# what RunningBatch does to a layer between two forwards.
ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(1, 70)),
    st.tuples(st.just("drop_row"), st.integers(0, 10)),
    st.tuples(st.just("trim"), st.integers(1, 3)),
    st.tuples(st.just("stack"), st.integers(1, 3)),
), min_size=1, max_size=25)


def _apply(layer, op, arg, rows: int, generator: torch.Generator) -> int:
    if op == "append":
        new = torch.randn(rows, HEADS, arg, DIM, generator=generator)
        layer.update(new, new * 2)
    elif not layer.is_initialized or layer.keys.numel() == 0:
        return rows
    elif op == "drop_row" and rows > 1:
        keep = torch.tensor([i for i in range(rows) if i != arg % rows])
        layer.keys, layer.values = layer.keys[keep], layer.values[keep]
        rows -= 1
    elif op == "trim" and layer.keys.shape[-2] > arg:
        layer.keys, layer.values = layer.keys[:, :, arg:], layer.values[:, :, arg:]
    elif op == "stack":
        extra = torch.randn(arg, HEADS, layer.keys.shape[-2], DIM, generator=generator)
        layer.keys, layer.values = torch.cat([layer.keys, extra]), torch.cat([layer.values, extra * 2])
        rows += arg
    return rows


@settings(max_examples=150, deadline=None)
@given(ops=ops, seed=st.integers(0, 2**16))
def test_growing_layer_sees_what_the_concatenating_layer_sees(ops, seed):
    growing, reference = GrowingLayer(), DynamicLayer()
    rows = {id(growing): 3, id(reference): 3}
    for op, arg in ops:
        for layer in (growing, reference):
            rows[id(layer)] = _apply(layer, op, arg, rows[id(layer)], torch.Generator().manual_seed(seed))
        if reference.is_initialized:
            assert torch.equal(growing.keys, reference.keys)
            assert torch.equal(growing.values, reference.values)
            assert growing.get_seq_length() == reference.get_seq_length()


def test_decode_steps_write_into_the_room_behind_the_cache():
    """One position a step does not re-allocate until the spare room is used up."""
    layer = GrowingLayer()
    layer.update(torch.zeros(2, HEADS, 10, DIM), torch.zeros(2, HEADS, 10, DIM))
    buffer = layer.keys.data_ptr()
    for step in range(20):
        layer.update(torch.full((2, HEADS, 1, DIM), float(step)), torch.zeros(2, HEADS, 1, DIM))
        assert layer.keys.data_ptr() == buffer
    assert layer.keys.shape[-2] == 30 and torch.equal(layer.keys[:, :, -1], torch.full((2, HEADS, DIM), 19.0))


def test_a_cache_of_growing_layers_can_be_stacked():
    cache = growing_cache()
    cache.update(torch.zeros(1, HEADS, 3, DIM), torch.zeros(1, HEADS, 3, DIM), 0)
    assert type(cache.layers[0]) is GrowingLayer and stackable(cache)
