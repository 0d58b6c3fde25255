"""GPU smoke benchmark of the training entrypoint (issue 3): run on an H200 machine.

1. tiny profile: build the tiny base, train it on CUDA through the entrypoint (one GPU,
   then `accelerate launch` on every visible GPU when there are several);
2. a Llama-3.1-8B-shaped model with random weights (no download), NF4 + double quant,
   each `--configs` profile (default: the seed, configs/qlora/llama3-8b.yaml) for a few steps on the
   same rows; every profile gets the seed's tokens per step (4 x 4096 x grad-accum): a profile with
   a smaller micro-batch accumulates more of them.
Prints and writes JSON (after every run): tokens/s (whole run and steady state), s/step, peak
memory, and the adapter files written.

    python bench/train_gpu_smoke.py --out results.json [--steps 6] [--grad-accum 1] \
        [--configs llama3-8b llama3-8b-fast] [--skip-tiny-runs]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qlora.modeling.corpus import as_messages, collect_corpus, _records, data_files  # noqa: E402


def entrypoint(config: Path, data: Path, output: Path, base: Path, gpus: int = 1) -> dict:
    launcher = [sys.executable, "-m", "qlora.training.entrypoint"]
    if gpus > 1:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus),
                    "--module", "qlora.training.entrypoint"]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    subprocess.run([*launcher, "--config", str(config), "--data", str(data), "--output", str(output),
                    "--base", str(base)], cwd=REPO, env=env, check=True)
    return json.loads((output / "manifest.json").read_text())


def summary(manifest: dict) -> dict:
    m = manifest["metrics"]
    keys = ("device", "world_size", "global_step", "train_tokens", "tokens_per_second", "steady_tokens_per_second",
            "seconds_per_step", "peak_memory_gib", "peak_reserved_gib", "trainable_params", "wall_seconds")
    config = manifest.get("config") or {}
    return {**{k: m.get(k) for k in keys}, "loss_first": m["loss_curve"][0][1], "loss_last": m["loss_curve"][-1][1],
            "loss_curve": m["loss_curve"], "predicted_peak_gib": m.get("predicted_peak_gib"),
            "profile_choice": manifest.get("profile_choice"), "speed": config.get("speed"),
            "resolved_batch": config.get("per_device_train_batch_size"),
            "resolved_grad_accum": config.get("gradient_accumulation_steps")}


def adapter_files(output: Path) -> dict:
    """What a served adapter needs: adapter_config.json and the safetensors weights."""
    names = sorted(p.name for p in output.iterdir() if p.is_file())
    return {"files": names, "adapter_ok": "adapter_config.json" in names and any(n.endswith(".safetensors") for n in names)}


def sample_rows(out: Path) -> Path:
    rows = []
    for path in data_files([REPO / "data" / "training"]):
        rows += [{"messages": m} for r in _records(path) if (m := as_messages(r)) and all(x["content"].strip() for x in m)
                 and any(x["role"] == "assistant" for x in m)]
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


def run_tiny(work: Path, results: dict, train: bool = True) -> Path:
    from qlora.modeling.base_model import materialize_base

    started = time.monotonic()
    record, _ = materialize_base("tiny")
    results["tiny_base_build_seconds"] = round(time.monotonic() - started, 1)
    if not train:  # the 8B runs only borrow its tokenizer
        return Path(record["model_path"])
    data = sample_rows(work / "tiny-train.jsonl")
    config = REPO / "configs" / "qlora" / "tiny-cpu.yaml"
    results["tiny_cuda_1gpu"] = summary(entrypoint(config, data, work / "tiny-1gpu", Path(record["model_path"])))
    import torch

    if torch.cuda.device_count() > 1:
        n = torch.cuda.device_count()
        results[f"tiny_cuda_{n}gpu_accelerate"] = summary(
            entrypoint(config, data, work / f"tiny-{n}gpu", Path(record["model_path"]), gpus=n))
    return Path(record["model_path"])


def build_random_8b(target: Path, tokenizer_from: Path) -> float:
    """Llama-3.1-8B shapes, random bf16 weights initialised on the GPU, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from bench.train_gpu_model import LLAMA31_8B as LLAMA31_8B_SHAPES

    started = time.monotonic()
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMA31_8B_SHAPES, dtype="bfloat16")
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target, max_shard_size="5GB")
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(target)  # ids stay below 4096: speed needs shapes only
    (target / "fingerprint.json").write_text(json.dumps({"profile": "llama3-8b-random", "fingerprint": "random-seed0"}))
    del model
    torch.cuda.empty_cache()
    return round(time.monotonic() - started, 1)


def long_rows(path: Path, n: int) -> Path:
    """Rows whose assistant turn fills the 4096-token window (truncated there): full-length sequences."""
    text = " ".join(f"문장 {i}: 계약 해지는 서면 통지 후 30일 뒤 효력이 발생한다 ({i} 번째 조항)." for i in range(1200))
    rows = [{"messages": [{"role": "user", "content": f"요약 {i}"}, {"role": "assistant", "content": text}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def run_8b(work: Path, tiny_base: Path, steps: int, grad_accum: int, results: dict, profiles: list[str], save,
           gpus: int = 1) -> None:
    base = work / "random-8b"
    if not (base / "config.json").exists():  # --keep-work: a second call reuses the saved model
        results["random_8b_build_seconds"] = build_random_8b(base, tiny_base)
    seed_batch = yaml.safe_load((REPO / "configs" / "qlora" / "llama3-8b.yaml").read_text())["per_device_train_batch_size"]
    data = long_rows(work / "long.jsonl", n=steps * grad_accum * seed_batch)
    for spec in profiles:  # NAME[:key=value,...][#K]: #K names a repeat of the same settings
        spec, _, repeat = spec.partition("#")
        profile, _, overrides = spec.partition(":")
        settings = yaml.safe_load((REPO / "configs" / "qlora" / f"{profile}.yaml").read_text())
        for item in filter(None, overrides.split(",")):  # e.g. llama3-8b-fast:checkpoint_layers=4
            key, _, value = item.partition("=")
            target = settings if key in settings else settings["speed"]  # a top-level field, else a lever
            target[key] = yaml.safe_load(value)
        accum = grad_accum * seed_batch // settings["per_device_train_batch_size"]  # the seed's tokens per step
        settings.update({"base_model_path": str(base), "max_steps": steps, "gradient_accumulation_steps": accum,
                         "logging_steps": 1, "save_steps": 10_000, "cost_instance": "a100-80gb-x1"})
        name = spec.replace(":", "_").replace(",", "_").replace("=", "-") + (f"_{gpus}gpu" if gpus > 1 else "") \
            + (f"_rep{repeat}" if repeat else "")
        config = work / f"{name}-8b.json"
        config.write_text(json.dumps(settings))
        output = work / f"{name}-8b"
        key = "seed_config_random_8b" if name == "llama3-8b" else f"{name}_config_random_8b"
        try:
            run = summary(entrypoint(config, data, output, base, gpus))
        except subprocess.CalledProcessError as error:  # one failed setting must not cost the others' runs
            results[key] = {"error": f"entrypoint exited {error.returncode}"}
            save()
            continue
        results[key] = {**run, **adapter_files(output), "grad_accum": run["resolved_grad_accum"] or accum,
                        "batch": run["resolved_batch"] or settings["per_device_train_batch_size"],
                        "max_length": settings["max_length"]}
        save()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/train_gpu_smoke"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--skip-8b", action="store_true")
    parser.add_argument("--gpus", type=int, default=1, help="processes (GPUs) for the 8B runs, via accelerate launch")
    parser.add_argument("--keep-work", action="store_true", help="reuse --work (its saved random 8B model)")
    parser.add_argument("--skip-tiny-runs", action="store_true", help="build the tiny base (its tokenizer) but train nothing on it")
    parser.add_argument("--configs", nargs="+", default=["llama3-8b"], help="profiles of configs/qlora/ run on the 8B shapes; NAME:key=value,... overrides its speed: block; a #K suffix names a repeat")
    args = parser.parse_args()
    if not args.keep_work:
        shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QLORA_HOME", str(args.work / "home"))
    import torch

    results = {"gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}

    def save() -> None:  # after every run, so a run cut off at the time limit keeps what finished
        args.out.write_text(json.dumps(results, indent=2))

    try:
        tiny = run_tiny(args.work, results, train=not args.skip_tiny_runs)
        save()
        if not args.skip_8b:
            run_8b(args.work, tiny, args.steps, args.grad_accum, results, args.configs, save, args.gpus)
    finally:
        save()
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
