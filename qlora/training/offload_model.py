"""What activation offload (qlora/training/fast/offload.py) holds and costs, for the planner. No torch.

- GPU memory: an offloaded layer holds nothing on the GPU once its copies are done; what is in
  flight is bounded by the offloader (2 layers' copies pending in forward, plus the layer being
  saved; in backward the prefetch window of the same size): INFLIGHT_LAYERS kept layers' worth.
- Pinned host memory: every offloaded layer's saved activations of one micro-batch, times the
  measured ratio of the pool to that analytic size (the host allocator rounds buffers up).
- Time: the copies run on a side stream. Device-to-host copies overlap the forward and cost extra
  only for what exceeds it; host-to-device prefetches overlap the backward likewise; each
  offloaded layer also costs kappa of its own copy time (measured: hooks, stream waits, the copy
  engines' share of memory bandwidth), and the copies run at `efficiency` of the idle probe's
  bandwidth (both fitted per shape on the bench's offload points). With 1/MFU = a + b*f (calibration.py), a frozen base's
  forward of all layers takes b * W / peak seconds (W the micro-batch's FLOPs), the rest of the
  step (a - b) * W / peak plus the recomputed layers' forwards.
"""
from __future__ import annotations

import os

from qlora.training.memory import INFLIGHT_LAYERS, Shape, compact_kv_factor, kept_layer_bytes_per_token

__all__ = ["INFLIGHT_LAYERS", "extra_seconds", "pinned_host_gib", "check_pinned", "host_memory_gib"]
PINNED_FRACTION = 0.8  # of the host's memory: the rest stays for the process, the data and the paged optimizer
DEFAULT_GBPS = 25.0  # no measurement on this GPU: a conservative PCIe figure
DEFAULT_KAPPA = 0.15


def kept_layer_bytes(shape: Shape, tokens: int, recompute_inputs: bool = False) -> float:
    """Saved activations of one kept layer of the fast recipe: what an offloaded layer copies."""
    return kept_layer_bytes_per_token(shape, "fast", recompute_inputs) * tokens


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1


def host_memory_gib(cgroup_files: tuple[str, ...] = CGROUP_LIMITS) -> float:
    """The memory this process may use: the machine's, or its container's limit when lower (a
    Kubernetes pod's `memory` limit: pinning past it gets the pod killed)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = []
    for name in cgroup_files:
        try:
            text = open(name, encoding="ascii").read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min([physical, *limits]) / 2**30


def pinned_host_gib(shape: Shape, tokens: int, offloaded: int, model: dict | None = None,
                    recompute_inputs: bool = False) -> float:
    factor = (model or {}).get("pinned_factor", 1.1)
    return offloaded * kept_layer_bytes(shape, tokens, recompute_inputs) * factor / 2**30


def check_pinned(needed_gib: float, host_gib: float, offloaded: int) -> None:
    """Refuse a fixed offload count the host cannot pin."""
    limit = host_gib * PINNED_FRACTION
    if needed_gib > limit:
        raise ValueError(f"speed.offload_layers: {offloaded} layers need {needed_gib:.1f} GiB of pinned host memory; "
                         f"this host has {host_gib:.1f} GiB, of which at most {limit:.1f} may be pinned; "
                         "offload fewer layers (or recompute them: speed.checkpoint_layers)")


def copy_seconds(shape: Shape, tokens: int, offloaded: int, model: dict | None, direction: str,
                 recompute_inputs: bool = False, compact_kv: bool = False) -> float:
    """Seconds the offloaded layers' copies take one way ("d2h" or "h2d") at the bandwidth under compute
    (the efficiency, fitted on copies that held cuDNN's expanded K/V, scaled down with compact_kv)."""
    model = model or {}
    efficiency = model.get("efficiency", {}).get(shape.name, 1.0)  # the probe's bandwidth, under compute
    gbps = model.get(f"{direction}_gbps", DEFAULT_GBPS)
    share = compact_kv_factor(shape, recompute_inputs) if compact_kv else 1.0
    return offloaded * kept_layer_bytes(shape, tokens, recompute_inputs) * share / (gbps * 1e9 * efficiency)


def host_embedding_seconds(shape: Shape, tokens: int, model: dict | None) -> float:
    """The host-embedding gather (fast/host_embedding.py): the micro-batch's bf16 rows over PCIe,
    before the first layer can start, so not overlapped."""
    return tokens * shape.hidden * 2 / ((model or {}).get("h2d_gbps", DEFAULT_GBPS) * 1e9)


def extra_seconds(shape: Shape, tokens: int, recomputed: int, offloaded: int, a: float, b: float,
                  work_seconds: float, model: dict | None, recompute_inputs: bool = False,
                  compact_kv: bool = False) -> float:
    """Seconds an offload of `offloaded` layers adds to one micro-batch of `tokens` tokens."""
    if offloaded <= 0:
        return 0.0
    model = model or {}
    d2h = copy_seconds(shape, tokens, offloaded, model, "d2h", recompute_inputs, compact_kv)
    h2d = copy_seconds(shape, tokens, offloaded, model, "h2d", recompute_inputs, compact_kv)
    forward = b * work_seconds
    backward = (a - b) * work_seconds + b * work_seconds * recomputed / shape.layers
    kappa = model.get("kappa", {}).get(shape.name, model.get("kappa_default", DEFAULT_KAPPA))
    return max(0.0, d2h - forward) + max(0.0, h2d - backward) + kappa * d2h


def stall_seconds(shape: Shape, tokens: int, recomputed: int, offloaded: int, a: float, b: float,
                  work_seconds: float, model: dict | None) -> tuple[float, float]:
    """(the copies' excess over the overlapping compute, the copy time kappa multiplies): the fit's columns."""
    no_kappa = {**(model or {}), "kappa": {}, "kappa_default": 0.0}
    excess = extra_seconds(shape, tokens, recomputed, offloaded, a, b, work_seconds, no_kappa)
    return excess, copy_seconds(shape, tokens, offloaded, model, "d2h")
