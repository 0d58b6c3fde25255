"""Eval benchmark: the eval set sent one request at a time (as the seed) vs concurrently, same server, one run.

    .venv/bin/python bench/eval.py [--eval-data data/eval/legal-ko.jsonl] [--concurrency 16] [--max-tokens 32]

One embedded server (tiny NF4 Llama, one LoRA adapter loaded under a staging name).
The same eval cases go through the evaluation runner twice: concurrency 1 (the seed's
loop) and the configured concurrency (``chat_many``; the server batches the requests),
alternating for a few rounds; the median round of each is reported.
Both runs are scored, and the answers must be the same (greedy decoding), so the speed-up
is not bought with different work. Floor (exit 1 when missed): wall-clock speed-up >= 5x.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qlora.evaluation.config import load_eval_settings  # noqa: E402
from qlora.evaluation.eval_set import load_eval_cases  # noqa: E402
from qlora.evaluation.runner import run_eval_set, score_run, staging_name  # noqa: E402
from qlora.serving.client import ServingClient  # noqa: E402
from qlora.serving.config import EmbeddedConfig  # noqa: E402
from qlora.serving.embedded import start_embedded  # noqa: E402
from tests.serving_fixtures import build_adapter, build_tiny_llama  # noqa: E402

FLOOR = 5.0


def eval_cases(paths: list[str], repeat_to: int):
    files = [Path(p) for p in paths] or sorted((REPO / "data" / "eval").glob("*.jsonl"))
    if not files:
        raise SystemExit("no eval set: pass --eval-data or run `qlora sample-data` first")
    cases = [case for f in files for case in load_eval_cases(f)]
    while len(cases) < repeat_to:  # a small set is repeated, so both runs are long enough to time
        cases += cases[: repeat_to - len(cases)]
    return cases, [str(f.relative_to(REPO) if f.is_relative_to(REPO) else f) for f in files]


def median_run(runs):
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


def summary(report, run) -> dict:
    m = report.metrics
    return {
        "wall_s": round(run.wall_s, 3),
        "rows_per_s": round(report.rows / run.wall_s, 2),
        "tokens_per_s": round(m["throughput_tokens_per_sec"], 1),
        "latency_p50_ms": round(m["latency_p50_ms"], 1),
        "latency_p95_ms": round(m["latency_p95_ms"], 1),
        "request_error_rate": m["request_error_rate"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-data", action="append", default=[], help="eval JSONL (default: every data/eval/*.jsonl)")
    parser.add_argument("--min-rows", type=int, default=64, help="repeat the set up to this many rows")
    parser.add_argument("--concurrency", type=int, default=0, help="0: configs/eval.yaml")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median of each is reported")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--base", default="", help="base model folder (default: a random tiny Llama built here)")
    parser.add_argument("--adapter", default="", help="adapter folder for --base (default: a random LoRA)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    cases, sources = eval_cases(args.eval_data, args.min_rows)
    settings = load_eval_settings().model_copy(update={"max_tokens": args.max_tokens})
    concurrent = settings.model_copy(update={"concurrency": args.concurrency or settings.concurrency})
    sequential = settings.model_copy(update={"concurrency": 1})

    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    base = Path(args.base) if args.base else build_tiny_llama(work / "tiny-llama", max_positions=1024)
    adapter = Path(args.adapter) if args.adapter else build_adapter(base, work / "adapters" / "bench" / "v1", seed=11)
    config = EmbeddedConfig(max_batch_size=32, torch_threads=args.torch_threads)
    handle = start_embedded(base, api_key="bench", state_dir=work / "state", adapters_root=adapter.parent, config=config)
    try:
        with ServingClient(handle.url, api_key="bench", timeout_s=600) as client:
            name = staging_name("bench", "v1")
            client.load_adapter(name, str(adapter))
            run_eval_set(client, name, cases[:4], concurrent)  # warm-up
            # Alternate the seed's way and the concurrent way, so load from elsewhere hits both alike.
            seq_runs, conc_runs = [], []
            for _ in range(args.rounds):
                seq_runs.append(run_eval_set(client, name, cases, sequential))
                conc_runs.append(run_eval_set(client, name, cases, concurrent))
            client.unload_adapter(name)
    finally:
        handle.stop()

    seq_run, conc_run = median_run(seq_runs), median_run(conc_runs)
    seq_report, seq_rows = score_run("candidate", seq_run, cases, sequential)
    conc_report, conc_rows = score_run("candidate", conc_run, cases, concurrent)
    same_answers = sum(a.answer == b.answer for a, b in zip(seq_rows, conc_rows))
    speedup = round(seq_run.wall_s / conc_run.wall_s, 2)
    result = {
        "command": "python bench/eval.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "base": str(base) if args.base else "random tiny Llama (tests/serving_fixtures.py)",
        "eval_sets": sources,
        "rows": len(cases),
        "max_tokens": args.max_tokens,
        "sequential": {"concurrency": 1, **summary(seq_report, seq_run)},
        "concurrent": {"concurrency": concurrent.concurrency, **summary(conc_report, conc_run)},
        "rounds": args.rounds,
        "all_wall_s": {"sequential": [round(r.wall_s, 2) for r in seq_runs],
                       "concurrent": [round(r.wall_s, 2) for r in conc_runs]},
        "identical_answers": f"{same_answers}/{len(cases)}",
        "speedup_x": speedup,
        "floor_x": FLOOR,
        "passed": speedup >= FLOOR,
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
