"""Activation offload: chosen decoder layers keep their saved activations in pinned host memory.

Between keeping a layer's activations on the GPU (memory) and recomputing them in backward (a whole
extra forward of the layer, the frozen base's cost), an offloaded layer's saved tensors are copied
to host memory during the forward and back before the layer's backward: the same math, bit for
bit, paid for in PCIe bandwidth, which is free while the copies overlap compute.

- pack (forward, inside an offloaded layer): the tensor's whole storage is copied on a side CUDA
  stream into a pinned buffer taken from a pool that lives as long as the model (pinned memory is
  allocated once, not every step). The GPU storage stays referenced until its copy's event has
  completed, then is dropped; if more than `max_pending_layers` layers' copies are still in flight,
  the forward waits for the oldest (backpressure: the in-flight copies bound the GPU memory).
  Views of one storage are copied once. Parameters (the NF4 and LoRA weights) and tensors under
  `min_bytes` (norm weights, rank-r projections) are never copied: they stay as they are.
- prefetch (backward): when a layer's backward starts (the gradient of its output is ready), the
  copies back of the offloaded layers at most `lookahead` layers earlier are started, so that the
  host-to-device copy of layer i-1 overlaps layer i's backward; unpack waits for its copy's event.
- one side stream carries both directions, so a pinned buffer released after its copy back is
  never overwritten by a later forward's copy before that copy back has finished.
- eager release (`speed.offload_eager_release`): the copies are otherwise retired only when the next
  offloaded layer ends, so up to `max_pending_layers` layers whose copies are done stay on the GPU
  through the loss and into the backward, the peak; and the prefetch at the top layer's backward
  start restores a layer while every kept layer is still held. With eager release every layer's
  forward end drops the finished copies' sources, the last layer's waits for the copies still in
  flight (nothing offloaded is on the GPU at the forward's end), and a copy back starts only when
  the backward has freed at least as many layers as are restored and not yet consumed.
On a CPU the same bookkeeping copies into plain host buffers synchronously (what the tests check).
A graph is unpacked once: `retain_graph=True` with a second backward is not supported.
The streams design follows torchtune's `OffloadActivations` (torchtune/training/_activation_offloading.py,
BSD-3: a side stream, a minimum size, parameters left alone); here it is per decoder layer, with
storage-level dedup, a reused pinned pool, backpressure and a prefetch window.
"""
from __future__ import annotations

import weakref
from collections import deque
from contextlib import contextmanager

import torch
from torch import nn

MIN_BYTES = 4 * 2**20  # below this a saved tensor stays put: weights' casts, rank-r projections, kv chunks of tiny models


_ACTIVE: "ActivationOffloader | None" = None  # the offloader whose layer is in its forward now


def active_hooks():
    """(pack, unpack) of the offloaded layer whose forward is running, else identities: what a
    nested saved-tensor hook (fast/gqa_saves.py) hands its tensors on to."""
    if _ACTIVE is None:
        return (lambda tensor: tensor), (lambda packed: packed)
    return _ACTIVE._pack, _ACTIVE._unpack


class PinnedPool:
    """Host buffers by size, reused across micro-batches and steps; refuses to grow past `limit_bytes`."""

    def __init__(self, pinned: bool, limit_bytes: int | None = None):
        self.pinned, self.limit_bytes = pinned, limit_bytes
        self.free: dict[int, list[torch.Tensor]] = {}
        self.allocated_bytes = 0

    def take(self, nbytes: int) -> torch.Tensor:
        size = -(-nbytes // 2**20) * 2**20 if nbytes > 2**20 else nbytes  # MiB classes: equal shapes reuse
        stack = self.free.get(size)
        if stack:
            return stack.pop()
        if self.limit_bytes is not None and self.allocated_bytes + size > self.limit_bytes:
            raise MemoryError(f"activation offload needs more than {self.limit_bytes / 2**30:.1f} GiB of pinned "
                              "host memory; offload fewer layers (speed.offload_layers)")
        self.allocated_bytes += size
        return torch.empty(size, dtype=torch.uint8, pin_memory=self.pinned)

    def give(self, buffer: torch.Tensor) -> None:
        self.free.setdefault(buffer.numel(), []).append(buffer)


class _Stored:
    """One GPU storage's bytes on the host, and (in backward) their way back."""

    __slots__ = ("pool", "nbytes", "device", "host", "source", "event", "restored", "ready", "refs")

    def __init__(self, pool: PinnedPool, nbytes: int, device: torch.device, host: torch.Tensor, source, event):
        self.pool, self.nbytes, self.device, self.host = pool, nbytes, device, host
        self.source, self.event = source, event
        self.restored: torch.Tensor | None = None
        self.ready = None
        self.refs = 0

    def release(self) -> None:
        """The host buffer back to the pool. Safe while a copy into or out of it is in flight: every
        later use of the buffer is a copy queued behind it on the same side stream."""
        if self.host is not None:
            self.pool.give(self.host)
            self.host = None

    def __del__(self):  # a graph dropped without its backward (an OOM, an exception) still returns its buffers
        self.release()


class ActivationOffloader:
    """The saved-tensor hooks and streams for the offloaded layers of one model."""

    def __init__(self, offloaded: list[int], min_bytes: int = MIN_BYTES, max_pending_layers: int = 2,
                 lookahead: int = 2, pinned_limit_bytes: int | None = None, eager_release: bool = False,
                 num_layers: int | None = None):
        self.offloaded = sorted(offloaded)
        self.eager_release = eager_release
        self.top = (num_layers - 1) if num_layers else (self.offloaded[-1] if self.offloaded else 0)
        self.min_bytes, self.max_pending_layers, self.lookahead = min_bytes, max_pending_layers, lookahead
        self.cuda = torch.cuda.is_available()
        if pinned_limit_bytes is None:  # the planner's limit (qlora/training/offload_model.py)
            from qlora.training.offload_model import PINNED_FRACTION, host_memory_gib

            pinned_limit_bytes = int(host_memory_gib() * PINNED_FRACTION * 2**30)
        self.pool = PinnedPool(pinned=self.cuda, limit_bytes=pinned_limit_bytes)
        self.stream = None
        self.model = None
        self.parameter_storages: set[int] | None = None
        self.layer_stores: dict[int, list[_Stored]] = {}
        self.pending: deque[tuple[object, list[_Stored]]] = deque()
        self._open: dict[int, _Stored] | None = None
        self._open_list: list[_Stored] | None = None
        self.stats = {"offloaded_bytes": 0, "backpressure_waits": 0, "unprefetched_unpacks": 0,
                      "forward_end_waits": 0, "deferred_prefetches": 0}

    def watch_parameters(self, model: nn.Module) -> None:
        """Storages of `model`'s parameters are never copied; read at the first forward (after peft
        has added the LoRA weights)."""
        self.model = weakref.ref(model)
        self.parameter_storages = None

    def _parameter_storages(self) -> set[int]:
        if self.parameter_storages is None:
            model = self.model() if self.model is not None else None
            params = model.parameters() if model is not None else ()
            self.parameter_storages = {p.untyped_storage().data_ptr() for p in params}
        return self.parameter_storages

    # ---- forward -------------------------------------------------------------------------------
    @contextmanager
    def layer(self, index: int):
        """Saved tensors of the forward inside this block go to host memory."""
        global _ACTIVE
        self._open, self._open_list = {}, []
        _ACTIVE = self
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield
        finally:
            _ACTIVE = None
            stores = self._open_list
            self._open, self._open_list = None, None
            self.layer_stores[index] = stores
            event = stores[-1].event if stores else None
            self.pending.append((event, stores))
            self._retire(self.max_pending_layers)

    def _keep_as_is(self, tensor: torch.Tensor) -> bool:
        if isinstance(tensor, nn.Parameter) or tensor.untyped_storage().nbytes() < self.min_bytes:
            return True
        return tensor.untyped_storage().data_ptr() in self._parameter_storages()

    def _pack(self, tensor: torch.Tensor):
        if self._open is None or self._keep_as_is(tensor):
            return tensor
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        stored = self._open.get(key)
        if stored is None:
            stored = self._copy_out(tensor, storage)
            self._open[key] = stored
            self._open_list.append(stored)
        stored.refs += 1
        return stored, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype

    def _copy_out(self, tensor: torch.Tensor, storage) -> _Stored:
        nbytes = storage.nbytes()
        source = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage)
        host = self.pool.take(nbytes)
        self.stats["offloaded_bytes"] += nbytes
        if tensor.device.type != "cuda":
            host[:nbytes].copy_(source)
            return _Stored(self.pool, nbytes, tensor.device, host, source, None)  # source held to the layer's end
        stream = self._side_stream(tensor.device)
        stream.wait_stream(torch.cuda.current_stream(tensor.device))
        with torch.cuda.stream(stream):
            host[:nbytes].copy_(source, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        return _Stored(self.pool, nbytes, tensor.device, host, source, event)

    def _side_stream(self, device: torch.device):
        if self.stream is None:
            self.stream = torch.cuda.Stream(device)
        return self.stream

    def _retire(self, keep: int | None) -> None:
        """Drop the GPU sources of finished copies; wait for the oldest while more than `keep` layers
        are in flight (None: never wait)."""
        while self.pending:
            event, stores = self.pending[0]
            if event is not None and not event.query():
                if keep is None or len(self.pending) <= keep:
                    return
                self.stats["backpressure_waits"] += 1
                event.synchronize()
            for stored in stores:
                stored.source = None
            self.pending.popleft()

    def on_forward_end(self, index: int) -> None:
        """Any decoder layer's forward ended (eager release only): drop the sources of finished
        copies; after the last layer, wait for the rest, so none is held through the loss."""
        if not self.eager_release:
            return
        if index >= self.top and self.pending and self.pending[-1][0] is not None \
                and not self.pending[-1][0].query():
            self.stats["forward_end_waits"] += 1
        self._retire(0 if index >= self.top else None)

    # ---- backward ------------------------------------------------------------------------------
    def on_backward_start(self, index: int) -> None:
        """Layer `index`'s backward begins: start the copies back of the next offloaded layers."""
        self._retire(None)
        window = [layer for layer in reversed(self.offloaded) if index - self.lookahead <= layer <= index]
        for layer in window:
            if self.eager_release and layer < index and self._restored_layers(index) >= self.top - index:
                self.stats["deferred_prefetches"] += 1  # no layer freed yet for it: a later start copies it
                break
            for stored in self.layer_stores.get(layer, ()):
                self._copy_in(stored)

    def _restored_layers(self, index: int) -> int:
        """Offloaded layers at or below `index` whose activations are back on the GPU, not yet consumed."""
        return sum(1 for layer in self.offloaded if layer <= index
                   and any(s.restored is not None for s in self.layer_stores.get(layer, ())))

    def _copy_in(self, stored: _Stored) -> None:
        if stored.restored is not None or stored.refs <= 0:
            return
        if stored.source is not None:  # the forward's storage is still alive: no copy needed
            stored.restored = stored.source
            return
        gpu = torch.empty(stored.nbytes, dtype=torch.uint8, device=stored.device)
        if stored.device.type != "cuda":
            gpu.copy_(stored.host[:stored.nbytes])
            stored.restored = gpu
            return
        stream = self._side_stream(stored.device)
        stream.wait_stream(torch.cuda.current_stream(stored.device))
        with torch.cuda.stream(stream):
            gpu.copy_(stored.host[:stored.nbytes], non_blocking=True)
            stored.ready = torch.cuda.Event()
            stored.ready.record(stream)
        gpu.record_stream(stream)
        stored.restored = gpu

    def _unpack(self, packed):
        if isinstance(packed, torch.Tensor):
            return packed
        stored, offset, shape, stride, dtype = packed
        if stored.restored is None:
            self.stats["unprefetched_unpacks"] += 1
            self._copy_in(stored)
        if stored.ready is not None:
            torch.cuda.current_stream(stored.device).wait_event(stored.ready)
            stored.ready = None
        out = torch.empty(0, dtype=dtype, device=stored.device).set_(
            stored.restored.untyped_storage(), offset, shape, stride)
        stored.refs -= 1
        if stored.refs == 0:  # the last view is out: the host buffer can take a later copy
            stored.restored = None
            stored.source = None
            stored.release()
        return out


def offloaded_positions(layers: int, count: int) -> list[int]:
    """`count` layer indices spread evenly over the stack, so that each offloaded layer's copy has
    the following layers' compute to overlap (bunched, the copies would queue behind each other);
    the last layer, whose backward comes first, is offloaded only when all are."""
    count = max(0, min(count, layers))
    return sorted({i * layers // count for i in range(count)}) if count else []
