"""An eval set through the embedded engine, as the eval client sends it: latency, tokens/s, scores.

    .venv/bin/python bench/eval_latency.py --base DIR --adapter DIR --eval-data data/eval/D.jsonl \
        --numerics nf4/float32 --numerics nf4-dequantized/bfloat16 [--concurrency 32] [--max-tokens 160]

Every numerics variant (quantization/compute_dtype) loads the base and the adapter into a
ModelStore and a BatchingEngine of this checkout; the rows are sent with at most
``--concurrency`` in flight (the next one when one is answered), greedy, as `qlora evaluate`
does. Reported per variant: wall time, completion tokens/s, p50/p95 latency per request, mean
ROUGE-L on rows with an expected answer and the refusal rate on should_refuse rows (the eval's
own metrics and phrases). ``PYTHONPATH=<another checkout>`` measures that checkout's engine
with this script (a baseline in the same run); numerics it does not know are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

if not os.environ.get("PYTHONPATH"):  # else: the checkout PYTHONPATH names (a baseline)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_variant(args, quantization: str, compute_dtype: str) -> dict:
    from qlora.evaluation.config import load_eval_settings
    from qlora.evaluation.metrics import is_refusal, rouge_l
    from qlora.serving.engine import BatchingEngine, GenerationRequest
    from qlora.serving.model_store import ModelStore

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
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from qlora.serving.config import EmbeddedConfig

    known = set(EmbeddedConfig.model_fields["quantization"].annotation.__args__)
    results = []
    for variant in args.numerics or ["nf4/float32", "nf4-dequantized/bfloat16"]:
        quantization, compute_dtype = variant.split("/")
        if quantization not in known:
            print(json.dumps({"numerics": variant, "skipped": "this checkout does not know it"}), flush=True)
            continue
        results.append(run_variant(args, quantization, compute_dtype))
        print(json.dumps(results[-1]), flush=True)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
            "torch_threads": torch.get_num_threads(), "argv": sys.argv[1:]}
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
