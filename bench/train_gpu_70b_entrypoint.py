"""Llama-3.1-70B through the training entrypoint's own code (run_training: TRL's SFTTrainer, the
shape-aware choice, the OOM ladder) on a GPU capped at the memory of an 80 GB card.

A 70B checkpoint is 141 GB in bf16, more than the lent machine's disk, so the base is the bench's
random-weight NF4 model built layer by layer (`bench/train_gpu_model.build_nf4_llama`) and handed
to run_training in place of `from_pretrained`; everything after the load is the production path.
`torch.cuda.set_per_process_memory_fraction` caps PyTorch's allocator at `--memory-gib`, so a
profile that does not fit an 80 GB card meets a real CUDA OOM and the ladder's rungs are real.

    python3 bench/train_gpu_70b_entrypoint.py --out results.json --steps 3 --configs llama3-70b llama3-70b-fast
    python bench/train_gpu_70b_entrypoint.py --shape tiny --out r.json --steps 2   # the CPU smoke run
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/train_gpu_70b"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--memory-gib", type=float, default=80.0, help="cap on PyTorch's allocator (an 80 GB card)")
    parser.add_argument("--shape", choices=["70b", "tiny"], default="70b")
    parser.add_argument("--configs", nargs="+", default=["llama3-70b", "llama3-70b-fast"])
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QLORA_HOME", str(args.work / "home"))

    import torch
    from transformers import LlamaConfig

    from bench.train_gpu_model import LLAMA31_70B, TINY, build_nf4_llama
    from bench.train_gpu_smoke import long_rows, summary
    from qlora.modeling.base_model import materialize_base
    from qlora.training import sft
    from qlora.training.config import validate_config
    from qlora.training.runner import run_training

    shape = LLAMA31_70B if args.shape == "70b" else dict(TINY, num_hidden_layers=2, vocab_size=8192)
    cuda = torch.cuda.is_available()
    results: dict = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "memory_cap_gib": args.memory_gib,
                     "gpu": torch.cuda.get_device_name() if cuda else "cpu"}

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2))

    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_gib * 2**30 / total))
    record, _ = materialize_base("tiny")  # its tokenizer: token ids stay below 4096, speed needs shapes only
    base = args.work / f"base-{args.shape}"
    base.mkdir(exist_ok=True)
    LlamaConfig(**shape).to_json_file(str(base / "config.json"))  # what the shape-aware choice reads
    sft.load_tokenizer(Path(record["model_path"])).save_pretrained(base)
    (base / "fingerprint.json").write_text(json.dumps({"profile": "llama3-70b-random", "fingerprint": "random-seed0"}))
    device = "cuda" if cuda else "cpu"
    sft.load_quantized_base = lambda base_path, config: build_nf4_llama(shape, device)  # layer by layer, NF4
    data = long_rows(args.work / "long.jsonl", n=args.steps * 4)
    for profile in args.configs:
        settings = yaml.safe_load((REPO / "configs" / "qlora" / f"{profile}.yaml").read_text())
        accum = 4 // settings["per_device_train_batch_size"]  # every profile: 16,384 tokens an update, as the seed's 4 rows
        settings.update({"max_steps": args.steps, "gradient_accumulation_steps": accum, "logging_steps": 1,
                         "save_steps": 10_000, "warmup_ratio": 0.0})
        if args.shape == "tiny":
            settings.update({"max_length": 128, "bf16": False})
        config = validate_config(settings, profile)
        output = args.work / f"{profile}-run"
        started = time.monotonic()
        try:
            manifest = run_training(config, data, output, base, log=lambda message: print(message, flush=True))
            results[profile] = {**summary(manifest), "oom_ladder": manifest["oom_ladder"],
                                "final_config": {k: manifest["config"][k] for k in
                                                 ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                  "max_length", "r", "gradient_checkpointing")}}
        except Exception as error:  # one profile failing must not lose the other's figures
            results[profile] = {"error": f"{type(error).__name__}: {error}"[:1500]}
        results[profile]["seconds"] = round(time.monotonic() - started, 1)
        save()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
