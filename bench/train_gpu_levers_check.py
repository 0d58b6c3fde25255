"""GPU checks of the memory levers' exactness (the CPU tests cannot reach their CUDA paths):

- speed.embedding_on_host: the Triton gather from pinned host memory equals `table.cuda()[ids]` bit for bit;
- speed.compact_gqa_saves: cuDNN attention on 8B shapes (32 query / 8 KV heads, 2 x 4,096 tokens) gives
  bit-identical outputs and q/k/v gradients with and without it, and what its graph holds for backward
  (allocated memory after the forward) shrinks by the K/V expansion.

Usage: python bench/train_gpu_levers_check.py --out results.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qlora.training.fast import varlen_attention  # noqa: E402
from qlora.training.fast.host_embedding import gather_rows_from_host  # noqa: E402


def check_gather() -> dict:
    torch.manual_seed(0)
    table = torch.randn(128256, 4096, dtype=torch.bfloat16).pin_memory()
    ids = torch.randint(0, 128256, (2, 4096), device="cuda")
    reference = table.cuda()[ids]
    got = gather_rows_from_host(table, ids)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        gather_rows_from_host(table, ids)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / 10
    return {"equal": bool(torch.equal(got, reference)), "ms_per_8192_rows": round(seconds * 1e3, 3),
            "gb_per_s": round(ids.numel() * 4096 * 2 / seconds / 1e9, 1)}


def attention(compact: bool) -> dict:
    torch.manual_seed(1)
    tokens, heads, kv_heads, dim = 8192, 32, 8, 128
    q = torch.randn(tokens, heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(tokens, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(tokens, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    varlen_attention.PREFER_CUDNN = True
    cu = torch.tensor([0, 4096, 8192], device="cuda", dtype=torch.int32)
    qq, kk, vv = q * 1.0, k * 1.0, v * 1.0  # the projections' outputs: not leaves
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = varlen_attention.varlen_attention(qq, kk, vv, cu, 4096, None, compact_saves=compact)
    del qq, kk, vv
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    out.float().pow(2).sum().backward()
    return {"out": out.detach(), "grads": [q.grad, k.grad, v.grad], "held_mib": held / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv)}
    try:
        result["host_gather"] = check_gather()
    except Exception as error:  # noqa: BLE001 - reported, the other check still runs
        result["host_gather"] = {"error": f"{type(error).__name__}: {error}"}
    plain, compact = attention(False), attention(True)
    result["compact_gqa_saves"] = {
        "outputs_equal": bool(torch.equal(plain["out"], compact["out"])),
        "grads_equal": [bool(torch.equal(a, b)) for a, b in zip(plain["grads"], compact["grads"])],
        "held_for_backward_mib": {"expanded": round(plain["held_mib"], 1), "compact": round(compact["held_mib"], 1)},
        "expected_saving_mib": 2 * 8192 * (32 - 8) * 128 * 2 / 2**20,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
