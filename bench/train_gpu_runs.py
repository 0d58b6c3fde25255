"""Data, batching, kernel self-checks and adapter-format signatures for bench/train_gpu.py."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch

from qlora.training.fast.packing import PaddingFreeCollator, padded_batch, token_budget_batches

FULL_LEN = 4096
MIX_MIN, MIX_MAX, MIX_TARGET_MEAN, MIX_SIGMA = 100, 4096, 600, 0.9
EXAMPLES = {"full": 192, "mix": 2400, "learn": 192}
LEARN_VOCAB = 2000  # "learn" rows draw from a skewed 2,000-token distribution: a loss that falls


def mix_lengths(count: int, seed: int = 7) -> list[int]:
    """Instruction-like lengths: log-normal around ~600 tokens, clipped to 100..4096."""
    rng = random.Random(seed)
    mu = __import__("math").log(MIX_TARGET_MEAN) - MIX_SIGMA**2 / 2
    return [min(MIX_MAX, max(MIX_MIN, round(rng.lognormvariate(mu, MIX_SIGMA)))) for _ in range(count)]


def make_examples(kind: str, shape: dict, tiny: bool) -> list[dict]:
    """Random token rows (speed depends on lengths only); the same rows for every variant."""
    lengths = mix_lengths(EXAMPLES["mix"]) if kind == "mix" else [FULL_LEN] * EXAMPLES[kind]
    if tiny:  # 32x shorter rows for the CPU smoke run
        lengths = [max(8, n // 32) for n in lengths[:400]]
    generator = torch.Generator().manual_seed({"full": 11, "mix": 13, "learn": 17}[kind])
    if kind == "learn":
        # Uniform random tokens keep the loss flat at ~ln(vocab), where no two loss curves can
        # differ; a Zipf-like choice among a few tokens gives adapters something to learn, so the
        # same-math comparison runs on a curve that moves.
        vocab = min(LEARN_VOCAB, shape["vocab_size"])
        weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
        chosen = torch.multinomial(weights, sum(lengths), replacement=True, generator=generator)
        ids = (chosen * (shape["vocab_size"] // vocab)).tolist()
    else:
        ids = torch.randint(0, shape["vocab_size"], (sum(lengths),), generator=generator).tolist()
    examples, offset = [], 0
    for n in lengths:
        examples.append({"input_ids": ids[offset : offset + n]})
        offset += n
    return examples


STEP_TOKENS = 4 * FULL_LEN  # one optimiser step sees what one seed micro-batch of 4 full rows holds


def plan_batches(
    examples: list[dict], variant, rows: int, rank: int, world: int, step_tokens: int = STEP_TOKENS
) -> list[list[tuple[dict, list[int]]]]:
    """`variant.steps` optimiser steps for this rank, each a list of micro-batches.

    Without a token budget a step is one micro-batch of `rows` examples (the seed's layout). With
    one, a step takes consecutive examples up to `step_tokens` and splits them into micro-batches of
    at most `max_tokens_per_batch` tokens, accumulated into one update: the same data per update,
    in smaller pieces. Step i*world + rank goes to this rank, so ranks see disjoint data.
    """
    speed = variant.speed
    lengths = [len(e["input_ids"]) for e in examples]
    if speed.max_tokens_per_batch:
        steps = token_budget_batches(lengths, max(step_tokens, speed.max_tokens_per_batch))
        split = [token_budget_batches([lengths[i] for i in step], speed.max_tokens_per_batch) for step in steps]
        steps = [[[step[j] for j in micro] for micro in parts] for step, parts in zip(steps, split)]
    else:
        steps = [[list(range(i, min(i + rows, len(examples))))] for i in range(0, len(examples), rows)]
    needed = variant.steps * world
    if len(steps) < needed:
        raise ValueError(f"{variant.name}: {len(steps)} steps of data, {needed} needed")
    collate = PaddingFreeCollator() if speed.packing else None
    planned = []
    for step in range(variant.steps):
        micro_batches = []
        for indices in steps[step * world + rank]:
            chosen = [examples[i] for i in indices]
            batch = collate(chosen) if collate else padded_batch(chosen, pad_id=0)
            micro_batches.append((batch, [len(e["input_ids"]) for e in chosen]))
        planned.append(micro_batches)
    return planned


def label_count(batch: dict) -> int:
    """Tokens that carry a next-token label: what the step's mean loss divides by."""
    return int((batch["labels"][:, 1:] != -100).sum())


def adapter_format(folder: Path) -> dict:
    """What a server needs to agree on: files, tensor names/shapes/dtypes, adapter config."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
        for key in sorted(handle.keys()):
            piece = handle.get_slice(key)
            tensors[key] = [list(piece.get_shape()), piece.get_dtype()]
    config = json.loads((folder / "adapter_config.json").read_text())
    # peft writes target_modules from a set: its order changes with the process's hash seed.
    config = {k: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
              for k, v in config.items() if k not in ("base_model_name_or_path", "revision")}

    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

    files = sorted(p.name for p in folder.iterdir())
    return {"tensors_sha256": digest(tensors), "config_sha256": digest(config), "files": files,
            "tensor_count": len(tensors), "dtypes": sorted({v[1] for v in tensors.values()}), "r": config.get("r"),
            "config": config}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def self_check(device: torch.device) -> dict:
    """On the GPU: the varlen kernel and the fused loss against their plain-PyTorch references."""
    from qlora.training.fast import loss as fused
    from qlora.training.fast import varlen_attention as va

    report: dict = {}
    if device.type != "cuda":
        return {"skipped": "no CUDA"}
    torch.manual_seed(3)
    try:
        cu = torch.tensor([0, 100, 250, 300, 812], dtype=torch.int32, device=device)
        q = torch.randn(812, 8, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(812, 2, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(812, 2, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
        grad = torch.randn(812, 8, 64, device=device, dtype=torch.bfloat16)
        fast = va.varlen_attention(q, k, v, cu, 512, 0.125)
        fast_grads = torch.autograd.grad(fast, (q, k, v), grad)
        ref = va._per_sequence_sdpa(q.double(), k.double(), v.double(), cu, 0.125)
        ref_grads = torch.autograd.grad(ref, (q, k, v), grad.double())
        report["varlen_fwd_rel_err"] = _rel(fast, ref)
        report["varlen_grad_rel_err"] = max(_rel(a, b) for a, b in zip(fast_grads, ref_grads))
        report["varlen_kernel_failed"] = va._KERNEL_FAILED
    except Exception as error:  # recorded, not fatal: the packed variants will show the failure
        report["varlen_error"] = f"{type(error).__name__}: {error}"[:500]
    try:  # equal-length pack: the cuDNN-first dense path
        cu = torch.tensor([0, 1024, 2048], dtype=torch.int32, device=device)
        q, k, v = (torch.randn(2048, h, 128, device=device, dtype=torch.bfloat16, requires_grad=True) for h in (32, 8, 8))
        grad = torch.randn(2048, 32, 128, device=device, dtype=torch.bfloat16)
        va.PREFER_CUDNN = True
        fast = va.varlen_attention(q, k, v, cu, 1024, 128**-0.5)
        fast_grads = torch.autograd.grad(fast, (q, k, v), grad)
        va.PREFER_CUDNN = False
        ref = va._per_sequence_sdpa(q.double(), k.double(), v.double(), cu, 128**-0.5)
        ref_grads = torch.autograd.grad(ref, (q, k, v), grad.double())
        report["dense_fwd_rel_err"] = _rel(fast, ref)
        report["dense_grad_rel_err"] = max(_rel(a, b) for a, b in zip(fast_grads, ref_grads))
    except Exception as error:
        report["dense_error"] = f"{type(error).__name__}: {error}"[:500]
    finally:
        va.PREFER_CUDNN = False
    try:
        hidden = torch.randn(3000, 512, device=device, dtype=torch.bfloat16, requires_grad=True)
        weight = (torch.randn(5000, 512, device=device) * 0.05).to(torch.bfloat16).requires_grad_()
        labels = torch.randint(0, 5000, (3000,), device=device)
        value = fused.linear_cross_entropy(hidden, weight, labels)
        grads = torch.autograd.grad(value, (hidden, weight))
        ref = fused.chunked_linear_cross_entropy(hidden.double(), weight.double(), labels)
        ref_grads = torch.autograd.grad(ref, (hidden, weight))
        report["fused_ce_rel_err"] = _rel(value, ref)
        report["fused_ce_grad_rel_err"] = max(_rel(a, b) for a, b in zip(grads, ref_grads))
    except Exception as error:
        report["fused_ce_error"] = f"{type(error).__name__}: {error}"[:500]
    try:
        report.update(_fused_lora_check(device))
    except Exception as error:
        report["fused_lora_error"] = f"{type(error).__name__}: {error}"[:500]
    return report


def _fused_lora_check(device: torch.device) -> dict:
    """peft's LoRA forward against the fused one on an NF4 base, bf16 autocast, same dropout draws."""
    import copy

    from peft import LoraConfig, get_peft_model

    from bench.train_gpu_model import to_nf4
    from qlora.training.fast.fused_lora import fuse_lora_layers

    torch.manual_seed(5)
    dense = [torch.nn.Linear(1024, 2048, bias=False), torch.nn.Linear(2048, 1024, bias=False)]
    block = torch.nn.Sequential(*[to_nf4(layer.to(torch.bfloat16), device) for layer in dense])  # as the bench's base
    block.is_loaded_in_4bit = True  # what transformers sets; peft then picks its 4-bit LoRA layer, as in training
    reference = get_peft_model(block, LoraConfig(r=64, lora_alpha=128, lora_dropout=0.05, target_modules=["0", "1"]))
    with torch.no_grad():
        for name, param in reference.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    fused = copy.deepcopy(reference)
    fuse_lora_layers(fused)
    x = torch.randn(4096, 1024, device=device, dtype=torch.bfloat16)
    results = []
    for model in (reference, fused):
        torch.cuda.manual_seed(9)
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(xi)
        out.float().pow(2).mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        results.append((out, xi.grad, grads))
    (out_r, gx_r, g_r), (out_f, gx_f, g_f) = results
    return {"fused_lora_fwd_rel_err": _rel(out_f, out_r), "fused_lora_dx_rel_err": _rel(gx_f, gx_r),
            "fused_lora_grad_rel_err": max(_rel(a, b) for a, b in zip(g_f, g_r))}


def machine_info(accelerator) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    info = {"torch": torch.__version__, "processes": accelerator.num_processes}
    for package in ("transformers", "peft", "bitsandbytes", "liger-kernel", "accelerate"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(accelerator.device)
    return info


def summary_row(r: dict) -> str:
    if "tokens_per_s" not in r:
        return f"{r['variant']:<16} {r.get('error') or r.get('skipped')}"
    first, last = r["losses"][0], r["losses"][-1]
    return (f"{r['variant']:<16} {r['gpus']}gpu {r['tokens_per_s']:>9.0f} tok/s  {r['step_time_s']:6.2f} s/step  "
            f"MFU {100 * r['mfu']:5.1f}%  peak {r['peak_allocated_gib']:6.1f} GiB  loss {first:.4f}->{last:.4f}"
            + (f"  offload {r['offloaded_layers']}: {r['offload']['offloaded_gib_per_micro_batch']:.2f} GiB/mb, "
               f"pool {r['offload']['pinned_pool_gib']:.1f} GiB, waits {r['offload']['backpressure_waits']}, "
               f"unprefetched {r['offload']['unprefetched_unpacks']}" if r.get("offload") else "")
            + (f"  saved {r['saved_for_backward']['saved_gib']:.2f} GiB, after forward "
               f"{r['saved_for_backward']['forward_allocated_gib']:.2f} GiB" if r.get("saved_for_backward") else ""))
