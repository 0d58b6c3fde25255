"""An eval set through the embedded engine, as the eval client sends it: latency, tokens/s, scores.

    .venv/bin/python bench/eval_latency.py --base DIR --adapter DIR --eval-data data/eval/D.jsonl \
        --numerics nf4/float32 --numerics nf4-dequantized/bfloat16 [--concurrency 32] [--max-tokens 160]
    .venv/bin/python bench/eval_latency.py ... --numerics nf4-dequantized/bfloat16 \
        --numerics nf4-dequantized/bfloat16:seed-engine --rounds 3

Every numerics variant (quantization/compute_dtype) loads the base and the adapter into a
ModelStore and a BatchingEngine of this checkout; the rows are sent with at most
``--concurrency`` in flight (the next one when one is answered), greedy, as `qlora evaluate`
does. Reported per variant: wall time, completion tokens/s, p50/p95 latency per request, mean
ROUGE-L on rows with an expected answer and the refusal rate on should_refuse rows (the eval's
own metrics and phrases). ``PYTHONPATH=<another checkout>`` measures that checkout's engine
with this script (a baseline in the same run); numerics it does not know are skipped.

A variant ending in ``:seed-engine`` runs this checkout's engine with its three decode measures
undone, as transformers does by default (K/V repeated per query head, a cache that concatenates,
a strided head input): the baseline in the same process. With
``--rounds N`` the variants alternate N times, so a noisy machine slows them alike; the medians
are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from contextlib import ExitStack
from unittest import mock
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

if not os.environ.get("PYTHONPATH"):  # else: the checkout PYTHONPATH names (a baseline)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


SEED_ENGINE = "seed-engine"


def seed_engine(enabled: bool) -> ExitStack:
    """Undo the engine's decode measures (qlora/serving: attention.py, kv_cache.py, model_store.py)."""
    stack = ExitStack()
    if enabled:
        from transformers import DynamicCache

        from qlora.serving import model_store, running_batch

        for module, name, replacement in ((model_store, "contiguous_head_input", lambda _model: None),
                                          (model_store, "use_grouped_attention", lambda _model: None),
                                          (running_batch, "growing_cache", DynamicCache)):
            stack.enter_context(mock.patch.object(module, name, replacement))
    return stack


def run_variant(args, quantization: str, compute_dtype: str, undone: bool = False) -> dict:
    from qlora.evaluation.config import load_eval_settings
    from qlora.evaluation.metrics import is_refusal, rouge_l
    from qlora.serving.engine import BatchingEngine, GenerationRequest
    from qlora.serving.model_store import ModelStore

    with seed_engine(undone):  # the measures act while the base loads and while the batches run
        store = ModelStore(args.base, quantization, compute_dtype)
        store.load_adapter("candidate", str(args.adapter))
        engine = BatchingEngine(store, args.max_batch_size, 5.0)
        rows = load_rows(args.eval_data)
        tokenizer = store.tokenizer
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["instruction"]}],
                                                 add_generation_prompt=True, tokenize=False) for r in rows]
        requests = [GenerationRequest(tokenizer.encode(p, add_special_tokens=False), "candidate", args.max_tokens)
                    for p in prompts]
        in_flight = threading.Semaphore(args.concurrency)
        sent, answered = {}, {}
        started = time.monotonic()
        for i, request in enumerate(requests):
            in_flight.acquire()
            sent[i] = time.monotonic()
            request.future.add_done_callback(lambda _f, i=i: (answered.__setitem__(i, time.monotonic()),
                                                              in_flight.release()))
            engine.submit(request)
        results = [r.future.result(timeout=3600) for r in requests]
        wall = max(answered.values()) - started
        engine.stop()
    latency = [answered[i] - sent[i] for i in range(len(requests))]
    phrases = load_eval_settings().all_refusal_phrases
    scored = [rouge_l(r["expected_output"], x.text) for r, x in zip(rows, results)
              if r.get("expected_output") and not r.get("should_refuse")]
    refused = [is_refusal(x.text, phrases) for r, x in zip(rows, results) if r.get("should_refuse")]
    tokens = sum(x.completion_tokens for x in results)
    return {"numerics": f"{quantization}/{compute_dtype}", "rows": len(rows), "wall_s": round(wall, 1),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "latency_p50_s": round(float(np.percentile(latency, 50)), 1),
            "latency_p95_s": round(float(np.percentile(latency, 95)), 1),
            "rouge_l": round(float(np.mean(scored)), 3) if scored else None,
            "refusal_rate": round(float(np.mean(refused)), 3) if refused else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--eval-data", type=Path, required=True)
    parser.add_argument("--numerics", action="append", default=None, help="quantization/compute_dtype (repeatable)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=1, help="alternate the variants this many times")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from qlora.serving.config import EmbeddedConfig

    known = set(EmbeddedConfig.model_fields["quantization"].annotation.__args__)
    results = []
    for round_ in range(1, args.rounds + 1):
        for variant in args.numerics or ["nf4/float32", "nf4-dequantized/bfloat16"]:
            numerics, _, engine = variant.partition(":")
            quantization, compute_dtype = numerics.split("/")
            if quantization not in known or engine not in ("", SEED_ENGINE):
                print(json.dumps({"numerics": variant, "skipped": "this checkout does not know it"}), flush=True)
                continue
            result = run_variant(args, quantization, compute_dtype, undone=engine == SEED_ENGINE)
            results.append({**result, "numerics": variant, "round": round_})
            print(json.dumps(results[-1]), flush=True)
    medians = {}
    for variant in dict.fromkeys(r["numerics"] for r in results):
        runs = [r for r in results if r["numerics"] == variant]
        medians[variant] = {key: float(np.median([r[key] for r in runs]))
                            for key in ("wall_s", "tokens_per_s", "latency_p50_s", "latency_p95_s")}
    print(json.dumps({"medians": medians}), flush=True)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "torch_threads": torch.get_num_threads(), "argv": sys.argv[1:]}
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
