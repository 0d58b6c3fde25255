"""GPU training speed: the seed QLoRA configuration against the fast profile, lever by lever.

One process builds a Llama-3.1-8B-shaped NF4 model once and trains fresh LoRA adapters on it
under each variant, on the same data from the same seed. Per variant: real (non-padding) tokens/s,
peak GPU memory, step time, MFU and the per-step loss. Run on an H200:

    python3 bench/train_gpu.py --out results/            # one GPU, every variant
    accelerate launch --num_processes 2 bench/train_gpu.py --variants fast-full,fast-mix --out results/
    python3 bench/train_gpu.py --shape 70b --variants seed-full,fast-mb4096-ck56-full --steps 3 --warmup-steps 1 --out r/

A variant named `fast-mb<M>-ck<R>-<data>` is the profile with M-token micro-batches and R
recomputed layers (the memory model's calibration points); `seed-chunkedloss-<data>` is the seed
recipe with the loss computed chunk by chunk, as TRL does (the entrypoint's seed memory).

`--shape tiny --device cpu` runs the same code on a 2-layer model (the tests' smoke run).
"""

from __future__ import annotations

import argparse
import gc
import re
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train_gpu_model import (  # noqa: E402
    LLAMA31_8B, LLAMA31_70B, TARGET_MODULES, TINY, build_nf4_llama, flops_per_token, restore_bf16,
)
from bench.train_gpu_runs import (  # noqa: E402
    STEP_TOKENS, adapter_format, label_count, machine_info, make_examples, plan_batches, self_check, summary_row,
)
from qlora.training.fast.levers import SpeedConfig, prepare_model  # noqa: E402
from qlora.training.fast.loss import FusedLossCausalLM  # noqa: E402

H200_BF16_PEAK = 989e12
ROWS = 4  # the seed's per_device_train_batch_size
WARMUP_STEPS = 2  # --warmup-steps
SHAPES = {"8b": LLAMA31_8B, "70b": LLAMA31_70B, "tiny": TINY}
SEED_CHECKPOINT = {"use_reentrant": False}


@dataclass(frozen=True)
class Variant:
    name: str
    data: str  # "full" (4096-token rows), "mix" (100..4096 tokens, mean ~600), "learn" (full, learnable)
    steps: int
    seed_recipe: bool = False  # peft's prepare_model_for_kbit_training + HF loss, padded rows
    chunked_seed_loss: bool = False  # the seed recipe with the loss chunk by chunk (TRL's memory)
    speed: SpeedConfig = SpeedConfig()
    lora_dropout: float = 0.05  # 0 in the deterministic same-math pairs
    dropout_seed: int | None = None  # other dropout draws, same init: the seed's own run-to-run spread


def with_(speed: SpeedConfig, **changes) -> SpeedConfig:
    return speed.model_copy(update=changes)


SWEEP_NAME = re.compile(r"fast-mb(?P<mb>\d+)-ck(?P<ck>\d+)(?:-off(?P<off>\d+))?(?:-(?P<levers>[grehc]+))?"
                        r"(?:-rep\d+)?-(?P<data>full|mix|learn)$")
LEVER_LETTERS = {"g": "lora_groups", "r": "recompute_lora_inputs", "e": "offload_eager_release",
                 "h": "embedding_on_host", "c": "compact_gqa_saves"}


def named_variant(name: str, fast: SpeedConfig, steps: int) -> Variant | None:
    """`fast-mb<M>-ck<R>[-off<O>][-<letters>][-rep<K>]-<data>` (O layers' activations offloaded to host
    memory; letters among g: speed.lora_groups, r: speed.recompute_lora_inputs, e: speed.offload_eager_release,
    h: speed.embedding_on_host, c: speed.compact_gqa_saves; rep<K>: a repeat, same settings)
    and `seed-chunkedloss-<data>`, built from the name."""
    if match := SWEEP_NAME.match(name):
        levers = {LEVER_LETTERS[letter]: True for letter in match["levers"] or ""}
        speed = with_(fast, max_tokens_per_batch=int(match["mb"]), checkpoint_layers=int(match["ck"]),
                      offload_layers=int(match["off"] or 0), **levers)
        return Variant(name, match["data"], steps, speed=speed)
    if match := re.match(r"seed-chunkedloss-(full|mix|learn)$", name):
        return Variant(name, match[1], steps, seed_recipe=True, chunked_seed_loss=True)
    return None


def variants(fast: SpeedConfig, steps: int, lever_steps: int) -> list[Variant]:
    """The ladder adds one lever at a time; Liger patches stay once applied, so order matters."""
    lean = SpeedConfig(fp32_upcast=False)
    fused_ce = with_(lean, fused_loss=True)
    liger = with_(fused_ce, liger_kernels=True)
    packed = with_(liger, packing=True)
    micro = with_(packed, max_tokens_per_batch=4096)
    # The previous default (4096-token micro-batches, cuDNN, no recomputation), spelled out so that
    # these variants keep their meaning whatever the profile file now says.
    unfused = with_(micro, cudnn_attention=True, checkpoint_layers=0)
    fused_lora = with_(unfused, fused_lora=True)
    return [
        Variant("seed-full", "full", steps, seed_recipe=True),
        Variant("seed-mix", "mix", steps, seed_recipe=True),
        Variant("lean-casts-full", "full", lever_steps, speed=lean),
        Variant("fused-ce-full", "full", lever_steps, speed=fused_ce),
        Variant("liger-full", "full", lever_steps, speed=liger),
        Variant("packed-mix", "mix", steps, speed=packed),
        Variant("fast-full", "full", steps, speed=fast),
        Variant("fast-mix", "mix", steps, speed=fast),
        Variant("liger-mix", "mix", lever_steps, speed=liger),
        Variant("packed-full", "full", lever_steps, speed=packed),
        Variant("budget16k-mix", "mix", lever_steps, speed=with_(packed, max_tokens_per_batch=16384)),
        Variant("budget32k-mix", "mix", lever_steps, speed=with_(packed, max_tokens_per_batch=32768)),
        Variant("ckpt16-full", "full", lever_steps, speed=with_(packed, checkpoint_layers=16)),
        Variant("micro4k-ckpt-full", "full", lever_steps, speed=micro),
        Variant("micro4k-nockpt-full", "full", lever_steps, speed=with_(micro, checkpoint_layers=0)),
        Variant("micro4k-ckpt8-full", "full", lever_steps, speed=with_(unfused, checkpoint_layers=8)),
        Variant("compile-full", "full", lever_steps, speed=with_(fast, compile=True)),
        # The fused LoRA lever, against the profile without it, and what recomputing a few layers buys.
        Variant("unfused-full", "full", steps, speed=unfused),
        Variant("fused-full", "full", steps, speed=fused_lora),
        Variant("fused-mix", "mix", steps, speed=fused_lora),
        Variant("unfused-mix", "mix", steps, speed=unfused),
        Variant("fused-8k-full", "full", steps, speed=with_(fused_lora, max_tokens_per_batch=8192)),
        Variant("fused-8k-ckpt8-full", "full", lever_steps, speed=with_(fused_lora, max_tokens_per_batch=8192, checkpoint_layers=8)),
        *[Variant(f"fused-ckpt{n}-full", "full", lever_steps, speed=with_(fused_lora, checkpoint_layers=n)) for n in (2, 4, 6, 8)],
        # Same math on a loss that falls: with the seed's dropout, and without (deterministic).
        Variant("seed-learn", "learn", steps, seed_recipe=True),
        Variant("seed-learn-reseed", "learn", steps, seed_recipe=True, dropout_seed=99),
        Variant("fast-learn", "learn", steps, speed=fast),
        Variant("unfused-learn", "learn", steps, speed=unfused),
        Variant("seed-learn-nodrop", "learn", steps, seed_recipe=True, lora_dropout=0.0),
        Variant("fast-learn-nodrop", "learn", steps, speed=fast, lora_dropout=0.0),
        Variant("unfused-learn-nodrop", "learn", steps, speed=unfused, lora_dropout=0.0),
    ]


def train_variant(base, variant: Variant, examples, shape: dict, accelerator, args) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from qlora.training.fast.levers import finish_peft_model, remove_layer_levers

    peft_model = None
    try:
        if variant.seed_recipe:
            prepare_model_for_kbit_training(base, True, SEED_CHECKPOINT)
        else:
            prepare_model(base, variant.speed)
        torch.manual_seed(1234)
        lora = LoraConfig(r=64, lora_alpha=128, lora_dropout=variant.lora_dropout, bias="none",
                          task_type="CAUSAL_LM", target_modules=TARGET_MODULES)
        peft_model = get_peft_model(base, lora)
        if variant.dropout_seed is not None:
            torch.cuda.manual_seed_all(variant.dropout_seed)
        if not variant.seed_recipe:
            finish_peft_model(peft_model, variant.speed)
        return _train(peft_model, variant, examples, shape, accelerator, args)
    finally:  # leave the shared 4-bit base as it was found, also after a failure
        remove_layer_levers(base)
        if peft_model is not None:
            peft_model.unload()
        base.gradient_checkpointing_disable()
        restore_bf16(base)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train(peft_model, variant: Variant, examples, shape: dict, accelerator, args) -> dict:
    device = accelerator.device
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    lora_params = sum(p.numel() for p in trainable)
    chunked = variant.speed.fused_loss or variant.chunked_seed_loss
    module = FusedLossCausalLM(peft_model, chunked_only=variant.chunked_seed_loss) if chunked else peft_model
    if accelerator.num_processes > 1:
        # Every rank built the same frozen base from the same seed: broadcast only the adapters.
        frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
        module = accelerator.prepare_model(module, device_placement=False)
    optimizer = _optimizer(trainable, device)
    steps = plan_batches(examples, variant, ROWS, accelerator.process_index, accelerator.num_processes,
                         step_tokens=args.step_tokens // (32 if args.shape == "tiny" else 1))
    saved = _saved_report(module, steps[0][0][0], device) if args.saved_report else None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    losses, times, tokens, flops = [], [], [], []
    for step_index, micro_batches in enumerate(steps):
        profiler = _profiler(args, variant, step_index, device)
        labelled = sum(label_count(batch) for batch, _ in micro_batches)
        start = time.perf_counter()
        step_loss, step_tokens, step_flops = 0.0, 0, 0.0
        for index, (batch, lengths) in enumerate(micro_batches):
            # Each micro-batch's mean loss weighted by its share of the step's labelled tokens:
            # the accumulated gradient is exactly that of the whole step's mean loss.
            weight = label_count(batch) / labelled
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            last = index == len(micro_batches) - 1
            with module.no_sync() if accelerator.num_processes > 1 and not last else nullcontext():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    out = module(**batch)
                loss = out if torch.is_tensor(out) else out.loss
                (loss * weight).backward()
            step_loss = step_loss + loss.detach() * weight
            step_tokens += sum(lengths)
            step_flops += sum(n * flops_per_token(shape, n, lora_params) for n in lengths)
        torch.nn.utils.clip_grad_norm_(trainable, 0.3)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if profiler is not None:
            profiler.__exit__(None, None, None)
            _write_profile(profiler, Path(args.out) / f"profile-{variant.name}.txt")
        losses.append(_mean_over_ranks(step_loss, accelerator))
        tokens.append(step_tokens)
        flops.append(step_flops)
    result = _summarise(variant, losses, times, tokens, flops, lora_params, accelerator, device)
    result["micro_batches_per_step"] = sum(len(m) for m in steps) / len(steps)
    result["max_micro_batch_tokens"] = max(sum(lengths) for step in steps for _, lengths in step)
    layers = peft_model.get_base_model().model.layers
    result["checkpointed_layers"] = sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers)
    offloader = getattr(peft_model.get_base_model(), "_qlora_offloader", None)
    result["offloaded_layers"] = len(offloader.offloaded) if offloader else 0
    if offloader:
        micro = sum(len(m) for m in steps)
        result["offload"] = {**offloader.stats, "offloaded_gib_per_micro_batch": offloader.stats["offloaded_bytes"] / micro / 2**30,
                             "pinned_pool_gib": offloader.pool.allocated_bytes / 2**30}
    result["shape"] = args.shape
    if saved is not None:
        result["saved_for_backward"] = saved
    if args.adapter_dir and variant.name == "fast-full" and accelerator.is_main_process:
        target = Path(args.adapter_dir) / f"{variant.name}-{accelerator.num_processes}gpu"
        peft_model.save_pretrained(str(target))
        result["adapter_format"] = adapter_format(target)
    return result


def _saved_report(module, batch, device) -> dict:
    """One micro-batch's forward: the distinct storages saved for backward (parameters excluded) and
    the memory the forward leaves allocated; then its backward, so nothing stays."""
    storages: dict[int, int] = {}
    kinds: dict[str, int] = {}  # first view's shape, dtype and producer -> storages
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters and storage.data_ptr() not in storages:
            storages[storage.data_ptr()] = storage.nbytes()
            key = f"{tuple(tensor.shape)} {str(tensor.dtype)[6:]} {type(tensor.grad_fn).__name__}"
            kinds[key] = kinds.get(key, 0) + 1
        return tensor

    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(device.type, dtype=torch.bfloat16):
        out = module(**batch)
    loss = out if torch.is_tensor(out) else out.loss
    after = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    loss.backward()
    module.zero_grad(set_to_none=True)
    tokens = int(batch["input_ids"].numel())
    return {"tokens": tokens, "saved_gib": sum(storages.values()) / 2**30, "saved_storages": len(storages),
            "forward_allocated_gib": (after - before) / 2**30, "storages_by_kind": kinds}


def _profiler(args, variant, step_index, device):
    """A torch.profiler over the first timed step of the variant named by --profile, else None."""
    if variant.name != f"{args.profile}-profiled" or step_index != WARMUP_STEPS or device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    profiler.__enter__()
    return profiler


def _write_profile(profiler, path: Path) -> None:
    table = profiler.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70)
    path.write_text(table + "\n\n" + _gpu_idle_report(profiler))


def _gpu_idle_report(profiler) -> str:
    """Where the GPU waits: gaps between consecutive kernels, largest first, with their neighbours."""
    from torch.autograd import DeviceType

    kernels = sorted((e for e in profiler.events() if e.device_type == DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    if not kernels:
        return "no CUDA kernels recorded"
    busy, gaps, end = 0.0, [], kernels[0].time_range.start
    for previous, kernel in zip([None, *kernels[:-1]], kernels):
        start, stop = kernel.time_range.start, kernel.time_range.end
        if previous is not None and start > end:
            gaps.append((start - end, previous.name[:60], kernel.name[:60]))
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    span = end - kernels[0].time_range.start
    lines = [f"GPU span {span / 1e3:.1f} ms, kernels busy {busy / 1e3:.1f} ms, idle {(span - busy) / 1e3:.1f} ms "
             f"in {len(gaps)} gaps; gaps over 50 us: {sum(g for g, *_ in gaps if g > 50) / 1e3:.1f} ms"]
    lines += [f"{g:9.0f} us  after {a}  before {b}" for g, a, b in sorted(gaps, reverse=True)[:25]]
    return "\n".join(lines)


def host_bandwidth(device, gib: int = 2, repeats: int = 3) -> dict:
    """Pinned host <-> GPU copy bandwidth (GB/s, 1e9 bytes), what the offload lever spends."""
    if device.type != "cuda":
        return {}
    nbytes = gib * 2**30
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    gpu = torch.empty(nbytes, dtype=torch.uint8, device=device)
    result = {"bytes": nbytes}
    for name, dst, src in (("d2h_gbps", host, gpu), ("h2d_gbps", gpu, host)):
        dst.copy_(src, non_blocking=True)  # warm-up
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            dst.copy_(src, non_blocking=True)
        stop.record()
        stop.synchronize()
        result[name] = round(nbytes * repeats / (start.elapsed_time(stop) / 1e3) / 1e9, 2)
    del host, gpu
    torch.cuda.empty_cache()
    return result


def _optimizer(params, device):
    if device.type == "cuda":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=2e-4, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)  # 8-bit paged states need CUDA


def _mean_over_ranks(value: torch.Tensor, accelerator) -> float:
    if accelerator.num_processes > 1:
        value = accelerator.reduce(value.float(), reduction="mean")
    return float(value)


def _summarise(variant, losses, times, tokens, flops, lora_params, accelerator, device) -> dict:
    timed = slice(WARMUP_STEPS, None) if len(times) > WARMUP_STEPS else slice(None)
    seconds = sum(times[timed])
    world = accelerator.num_processes
    # Every rank runs the same number of steps; tokens and FLOPs are summed over the ranks.
    local = torch.tensor([sum(tokens[timed]), sum(flops[timed])], dtype=torch.float64, device=device)
    total = accelerator.reduce(local, reduction="sum") if world > 1 else local
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
    return {
        "variant": variant.name,
        "data": variant.data,
        "gpus": world,
        "speed": variant.speed.model_dump() if not variant.seed_recipe else "seed",
        "recipe": "seed-chunkedloss" if variant.chunked_seed_loss else "seed" if variant.seed_recipe else "fast",
        "steps": len(times),
        "timed_steps": len(times[timed]),
        "step_time_s": seconds / max(len(times[timed]), 1),
        "real_tokens_per_step": sum(tokens) / max(len(tokens), 1) * world,
        "tokens_per_s": float(total[0]) / seconds,
        "mfu": float(total[1]) / seconds / (H200_BF16_PEAK * world),
        "peak_allocated_gib": peak / 2**30,
        "peak_reserved_gib": reserved / 2**30,
        "trainable_params": lora_params,
        "losses": losses,
    }


def main(argv: list[str] | None = None) -> int:
    global WARMUP_STEPS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    parser.add_argument("--warmup-steps", type=int, default=WARMUP_STEPS, help="untimed steps at each variant's start")
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--config", default="configs/qlora/llama3-8b-fast.yaml", help="profile with the speed: block")
    parser.add_argument("--steps", type=int, default=20, help="steps of the seed/fast variants (loss curve)")
    parser.add_argument("--lever-steps", type=int, default=4, help="steps of the single-lever variants")
    parser.add_argument("--step-tokens", type=int, default=STEP_TOKENS,
                        help="tokens per optimiser step (the profiles' update is 131,072: 32 rows of 4,096)")
    parser.add_argument("--time-budget-s", type=float, default=1e9, help="skip variants once this is spent")
    parser.add_argument("--adapter-dir", default=None, help="save the fast-full adapter here, report its format")
    parser.add_argument("--profile", default=None, help="variant to run once more, 3 steps, its third profiled")
    parser.add_argument("--saved-report", action="store_true",
                        help="per variant, one extra micro-batch: bytes saved for backward, memory after forward")
    parser.add_argument("--out", required=True, help="folder for results JSON")
    args = parser.parse_args(argv)

    import yaml
    from accelerate import Accelerator

    WARMUP_STEPS = args.warmup_steps
    started = time.perf_counter()
    accelerator = Accelerator()
    shape = SHAPES[args.shape]
    with open(args.config, encoding="utf-8") as handle:
        fast = SpeedConfig.from_mapping(yaml.safe_load(handle).get("speed"), source=f"{args.config}: speed")
    if fast.is_auto:  # the bench measures fixed settings; a variant name spells them out
        fast = with_(fast, max_tokens_per_batch=8192, checkpoint_layers=2, offload_layers=0)
    chosen = variants(fast, args.steps, args.lever_steps)
    if args.variants != "all":
        wanted = args.variants.split(",")
        known = {v.name: v for v in chosen}
        chosen = [known.get(name) or named_variant(name, fast, args.steps) for name in wanted]
        unknown = [name for name, v in zip(wanted, chosen) if v is None]
        if unknown:
            parser.error(f"unknown variants: {sorted(unknown)}")
    if args.shape == "tiny":  # rows are 32x shorter, so are the token budgets
        chosen = [replace(v, speed=with_(v.speed, max_tokens_per_batch=v.speed.max_tokens_per_batch // 32))
                  if v.speed.max_tokens_per_batch else v for v in chosen]
    if args.profile:  # an extra short run, so the profiler's overhead stays out of the measured ones
        profiled = next((v for v in variants(fast, args.steps, args.lever_steps) if v.name == args.profile), None)
        profiled = profiled or named_variant(args.profile, fast, args.steps)
        chosen.append(replace(profiled, name=f"{args.profile}-profiled", steps=WARMUP_STEPS + 1))
    if accelerator.device.type != "cuda":  # Liger's kernels are Triton/CUDA: the CPU smoke run goes without
        chosen = [replace(v, speed=with_(v.speed, liger_kernels=False, compile=False)) for v in chosen]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.shape}-{accelerator.num_processes}gpu"
    report = {"machine": machine_info(accelerator), "shape": args.shape, "shape_config": shape, "argv": sys.argv,
              "step_tokens": args.step_tokens,
              "date": time.strftime("%Y-%m-%d"), "warmup_steps": WARMUP_STEPS, "results": []}
    report["self_check"] = self_check(accelerator.device)
    report["host_bandwidth"] = host_bandwidth(accelerator.device)
    print("host bandwidth", report["host_bandwidth"], flush=True)
    base = build_nf4_llama(shape, str(accelerator.device))
    report["build_s"] = time.perf_counter() - started
    if accelerator.device.type == "cuda":  # the NF4 model alone: the memory model's weights term
        report["base_allocated_gib"] = torch.cuda.memory_allocated(accelerator.device) / 2**30
        report["build_peak_gib"] = torch.cuda.max_memory_allocated(accelerator.device) / 2**30
    examples = {kind: make_examples(kind, shape, args.shape == "tiny") for kind in ("full", "mix", "learn")}
    report["mix_mean_tokens"] = sum(len(e["input_ids"]) for e in examples["mix"]) / len(examples["mix"])
    for variant in chosen:
        if time.perf_counter() - started > args.time_budget_s:
            report["results"].append({"variant": variant.name, "skipped": "time budget spent"})
            continue
        try:
            result = train_variant(base, variant, examples[variant.data], shape, accelerator, args)
        except Exception as error:  # one failing lever must not lose the other measurements
            if accelerator.num_processes > 1:
                raise
            result = {"variant": variant.name, "error": f"{type(error).__name__}: {error}"[:2000]}
        report["results"].append(result)
        if accelerator.is_main_process:
            (out / f"train_gpu-{tag}.json").write_text(json.dumps(report, indent=1))
            print(summary_row(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
