"""Triton row gather that reads a pinned host table from the GPU (host_embedding.py says why).

Triton resolves each pointer argument with cuPointerGetAttribute(DEVICE_POINTER): for pinned host
memory that is its mapped device address, so the kernel reads the rows over PCIe, on the current
stream, and writes them to a GPU tensor. Imported only on CUDA machines (Triton ships with torch's
CUDA builds).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # columns per program: 2 KiB of a bf16 row, contiguous reads


@triton.jit
def _gather(table_ptr, ids_ptr, out_ptr, hidden, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    index = tl.load(ids_ptr + row).to(tl.int64)
    values = tl.load(table_ptr + index * hidden + cols, mask=mask)
    tl.store(out_ptr + row.to(tl.int64) * hidden + cols, values, mask=mask)


def gather(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    if not table.is_pinned() or not table.is_contiguous():
        raise ValueError("the host table must be pinned and contiguous")
    flat = ids.reshape(-1).contiguous()
    hidden = table.shape[1]
    out = torch.empty((flat.numel(), hidden), dtype=table.dtype, device=ids.device)
    if flat.numel():
        _gather[(flat.numel(), triton.cdiv(hidden, BLOCK))](table, flat, out, hidden, BLOCK=BLOCK)
    return out.view(*ids.shape, hidden)
