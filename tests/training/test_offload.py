"""Activation offload (qlora/training/fast/offload.py) on the CPU: the CPU path copies into host
buffers through the same bookkeeping as the CUDA path, so round trips, parameter exclusion, the
buffer pool and gradient equality are checked here; overlap and bandwidth are the GPU bench's."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qlora.training.fast.levers import layer_roles, remove_offload, set_layer_plan
from qlora.training.fast.offload import ActivationOffloader, PinnedPool, offloaded_positions


class SaveAll(torch.autograd.Function):
    """Saves its inputs and hands them to the test in backward: what autograd gets back."""

    seen: list[torch.Tensor] = []

    @staticmethod
    def forward(ctx, *tensors):
        ctx.save_for_backward(*tensors)
        return tensors[0].sum() * 1.0

    @staticmethod
    def backward(ctx, grad):
        SaveAll.seen = [t.clone() for t in ctx.saved_tensors]
        return tuple(torch.zeros_like(t) if t.requires_grad else None for t in ctx.saved_tensors)


def test_saved_tensors_come_back_bit_identical_and_views_share_one_copy():
    offloader = ActivationOffloader([0], min_bytes=1)
    x = torch.randn(64, 32, requires_grad=True)
    with offloader.layer(0):
        y = x * 3.0  # not a leaf: its storage is offloaded
        view = y.reshape(32, 64)[3:9]  # a view of the same storage: copied once, rebuilt as a view
        half = y.to(torch.bfloat16)
        SaveAll.apply(y, view, half)
        loss = SaveAll.apply(y, view, half)
    expected = [y.detach().clone(), view.detach().clone(), half.detach().clone()]
    assert offloader.stats["offloaded_bytes"] == y.numel() * 4 + half.numel() * 2
    loss.backward()
    assert len(SaveAll.seen) == 3
    for got, want in zip(SaveAll.seen, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got.view(torch.uint8) if got.dtype != torch.bool else got,
                           want.view(torch.uint8) if want.dtype != torch.bool else want)


def test_parameters_and_small_tensors_are_never_copied():
    linear = nn.Linear(256, 256)
    offloader = ActivationOffloader([0], min_bytes=1024)
    offloader.watch_parameters(linear)
    x = torch.randn(8, 256, requires_grad=True)
    with offloader.layer(0):
        out = linear(x * 2.0)  # saves the input (8 KB: offloaded) and the weight (a parameter: kept)
        small = (x[:1, :4] * 2.0).exp()  # 16 bytes: under min_bytes, kept on its device
    assert offloader.stats["offloaded_bytes"] == 8 * 256 * 4
    (out.sum() + small.sum()).backward()
    assert linear.weight.grad is not None


def test_buffer_pool_reuses_buffers_across_steps_and_refuses_past_its_limit():
    offloader = ActivationOffloader([0], min_bytes=1)
    x = torch.randn(128, 128, requires_grad=True)
    for _ in range(3):
        with offloader.layer(0):
            loss = ((x * 2.0).exp() * 3.0).sum()
        loss.backward()
    first = offloader.pool.allocated_bytes
    with offloader.layer(0):
        loss = ((x * 2.0).exp() * 3.0).sum()
    loss.backward()
    assert first > 0 and offloader.pool.allocated_bytes == first
    pool = PinnedPool(pinned=False, limit_bytes=3 * 2**20)
    pool.take(2 * 2**20)
    with pytest.raises(MemoryError, match="offload fewer layers"):
        pool.take(2 * 2**20)


def test_a_graph_dropped_before_backward_returns_its_buffers():
    offloader = ActivationOffloader([0], min_bytes=1)
    x = torch.randn(64, 64, requires_grad=True)
    with offloader.layer(0):
        loss = (x * 2.0).exp().sum()
    assert not offloader.pool.free
    del loss
    offloader.layer_stores.clear()
    offloader.pending.clear()
    assert sum(len(v) for v in offloader.pool.free.values()) >= 1


def test_layer_roles_spread_offload_and_recompute_the_first_others():
    roles = layer_roles(10, 3, 4)
    assert roles.count("offload") == 4 and roles.count("recompute") == 3 and roles.count("keep") == 3
    assert offloaded_positions(80, 45)[-1] < 79 and len(offloaded_positions(80, 45)) == 45
    assert offloaded_positions(8, 8) == list(range(8)) and offloaded_positions(8, 0) == []
    with pytest.raises(ValueError, match="exceed the model's 10 decoder layers"):
        layer_roles(10, 7, 4)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=97, max_position_embeddings=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.train()
    return model


def _gradients(model, ids):
    model.zero_grad(set_to_none=True)
    for _ in range(2):  # two micro-batches: the pool's buffers are reused by the second
        model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradients_with_offload_equal_those_without_on_a_tiny_llama():
    model = _tiny_llama()
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    set_layer_plan(model, 0, 0)
    reference = _gradients(model, ids)
    plan = set_layer_plan(model, 1, 2, min_bytes=1)
    assert plan["offloaded"] == 2 and plan["recomputed"] == 1
    offloader = model._qlora_offloader
    offloaded = _gradients(model, ids)
    assert offloader.stats["offloaded_bytes"] > 0
    assert offloaded.keys() == reference.keys()
    for name in reference:
        assert torch.equal(offloaded[name], reference[name]), name
    remove_offload(model)
    assert "forward" not in model.model.layers[0].__dict__ and not hasattr(model, "_qlora_offloader")
    assert all(torch.equal(g, reference[n]) for n, g in _gradients(model, ids).items())


class _SlowEvent:
    """A copy's event that reports unfinished until waited for: what a GPU copy in flight looks like."""

    def __init__(self):
        self.done = False

    def query(self):
        return self.done

    def synchronize(self):
        self.done = True


def _pending_copy(offloader: ActivationOffloader, layer: int) -> tuple[_SlowEvent, object]:
    class Source:  # stands for the GPU storage a finished copy no longer needs
        pass

    stored = type("S", (), {})()
    stored.source = Source()
    event = _SlowEvent()
    offloader.pending.append((event, [stored]))
    return event, stored


@pytest.mark.parametrize("eager", [False, True])
def test_eager_release_holds_no_copy_source_past_the_last_layers_forward(eager):
    offloader = ActivationOffloader([0, 2], eager_release=eager, num_layers=4)
    event, stored = _pending_copy(offloader, 2)
    offloader.on_forward_end(3 - 1)  # a middle layer: never waits, the copy is still in flight
    assert stored.source is not None and not event.done
    offloader.on_forward_end(3)  # the last layer: eager release waits, so the loss runs without it
    assert (stored.source is None and not offloader.pending) if eager else (stored.source is not None)
    assert offloader.stats["forward_end_waits"] == (1 if eager else 0)


def test_eager_release_drops_finished_copies_at_any_layers_end():
    offloader = ActivationOffloader([0], eager_release=True, num_layers=8)
    event, stored = _pending_copy(offloader, 0)
    event.done = True
    offloader.on_forward_end(1)  # a kept layer's end: the finished copy's source goes at once
    assert stored.source is None and not offloader.pending and offloader.stats["backpressure_waits"] == 0


def _restores_per_backward_start(model, ids):
    """At each decoder layer's backward start: (index, offloaded layers restored and not yet consumed)."""
    offloader = model._qlora_offloader
    seen = []
    start = offloader.on_backward_start

    def recording(index):
        start(index)
        seen.append((index, offloader._restored_layers(index)))
    offloader.on_backward_start = recording
    model(input_ids=ids, labels=ids).loss.backward()
    return seen


@pytest.mark.parametrize("eager", [False, True])
def test_eager_release_restores_only_into_memory_the_backward_has_freed(eager):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=97, max_position_embeddings=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    set_layer_plan(model, 0, 0)
    reference = _gradients(model, ids)
    set_layer_plan(model, 0, 3, min_bytes=1, eager_release=eager)  # offloads layers 0, 2, 4 of 0..5
    assert model._qlora_offloader.offloaded == [0, 2, 4]
    seen = _restores_per_backward_start(model, ids)
    top = config.num_hidden_layers - 1
    over = [(index, restored) for index, restored in seen if restored > top - index]
    if eager:  # never more layers back on the GPU than the backward has released
        assert not over and model._qlora_offloader.stats["deferred_prefetches"] >= 1
    else:  # the lookahead alone restores layer 4 while layer 5 (the top) still holds its activations
        assert over and over[0][0] == top
    offloaded = _gradients(model, ids)
    for name in reference:
        assert torch.equal(offloaded[name], reference[name]), name
