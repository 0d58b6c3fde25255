"""Wiring the activation offloader (offload.py) into a model's decoder layers, and out again."""
from __future__ import annotations

import torch
from torch import nn

from qlora.training.fast.offload import ActivationOffloader


def install(layers: nn.ModuleList, offloaded: list[int], model: nn.Module, **options) -> ActivationOffloader:
    """Route the offloaded layers' saved tensors through an offloader; every layer reports its backward start."""
    offloader = ActivationOffloader(offloaded, num_layers=len(layers), **options)
    offloader.watch_parameters(model)
    chosen = set(offloaded)
    for index, layer in enumerate(layers):
        handles = [layer.register_forward_hook(_backward_start_hook(offloader, index))]
        if index in chosen:
            layer.forward = _offloaded_forward(offloader, index, layer.forward)
        layer._qlora_offload = (offloader, handles)
    return offloader


def uninstall(layers: nn.ModuleList) -> None:
    for layer in layers:
        entry = layer.__dict__.pop("_qlora_offload", None)
        if entry is None:
            continue
        for handle in entry[1]:
            handle.remove()
        layer.__dict__.pop("forward", None)  # back to the class's forward


def _offloaded_forward(offloader: ActivationOffloader, index: int, forward):
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        with offloader.layer(index):
            return forward(*args, **kwargs)
    return run


def _backward_start_hook(offloader: ActivationOffloader, index: int):
    def hook(_module, _inputs, output):
        offloader.on_forward_end(index)
        hidden = output[0] if isinstance(output, tuple) else output
        if torch.is_tensor(hidden) and hidden.requires_grad:
            hidden.register_hook(lambda grad: (offloader.on_backward_start(index), grad)[1])
    return hook
