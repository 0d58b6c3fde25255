"""GPU utilisation and memory under NVIDIA DCGM exporter's metric names, for the Grafana GPU panel.

In production the panel reads NVIDIA's dcgm-exporter (a DaemonSet or container beside vLLM),
which exports, per GPU, ``DCGM_FI_DEV_GPU_UTIL`` (percent busy) and ``DCGM_FI_DEV_FB_USED``
(framebuffer memory used, MiB) with labels ``gpu``, ``UUID``, ``device``, ``modelName``,
``Hostname``. Neither vLLM nor the router exports GPU figures.

This small exporter stands in where dcgm-exporter is absent (the embedded server, a laptop,
tests): with CUDA it reads ``torch.cuda`` (utilisation through NVML, device-wide memory in use);
without a GPU it exports one series labelled ``device="cpu"`` with value 0, so the panel shows
"no GPU here" rather than "no data". It never claims CPU figures are GPU figures.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
LABELS = ["gpu", "device", "modelName"]
_MIB = 1 << 20


def gpu_readings() -> list[tuple[list[str], float, float]]:
    """(labels, utilisation %, framebuffer MiB used) per visible GPU; one ``cpu`` row without CUDA."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        return [(["0", "cpu", "none"], 0.0, 0.0)]
    rows = []
    for index in range(torch.cuda.device_count()):
        try:
            utilisation = float(torch.cuda.utilization(index))
        except Exception:  # NVML (nvidia-ml-py) missing: memory is still known, busy % is not
            utilisation = math.nan
        free, total = torch.cuda.mem_get_info(index)
        rows.append(([str(index), f"nvidia{index}", torch.cuda.get_device_name(index)],
                     utilisation, (total - free) / _MIB))
    return rows


class GpuCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        util = GaugeMetricFamily(UTIL, "GPU utilization (in %), DCGM field 203", labels=LABELS)
        used = GaugeMetricFamily(FB_USED, "Framebuffer memory used (in MiB), DCGM field 252", labels=LABELS)
        for labels, utilisation, mib in gpu_readings():
            util.add_metric(labels, utilisation)
            used.add_metric(labels, mib)
        yield util
        yield used


def start_gpu_exporter(port: int = 0, host: str = "127.0.0.1") -> tuple[WSGIServer, threading.Thread, int]:
    """Serve ``/metrics`` with the two DCGM gauges; returns the server, its thread and the port."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GpuCollector())
    server, thread = start_http_server(port, addr=host, registry=registry)
    return server, thread, server.server_port
