"""Serving benchmark: batched vs one-request-at-a-time, and the router's overhead, in one run.

    .venv/bin/python bench/serving.py [--requests 64] [--max-tokens 32] [--out bench-serving.json]

Two embedded servers (each in its own process, as `qlora serve` runs) on the same tiny NF4
base with three adapters: one batches up to 32 requests per forward pass, the other takes
one request at a time (max_batch_size=1, the baseline); levels alternate between the two,
each run --rounds times, median reported. Requests cycle over the three adapters, so batches are mixed. For concurrency
1, 4, 16, 32: completion tokens/s and p50/p95 latency. Router overhead: p50/p95 of a
1-token request through the router minus straight to the server, on loopback.
Floor (exit 1 when missed): batched tokens/s at concurrency 16 >= 4x one-at-a-time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from qlora.serving import daemon  # noqa: E402
from qlora.serving.client import ServingClient  # noqa: E402
from qlora.serving.endpoint import ServingEndpoint  # noqa: E402
from tests.support.serving import DOMAINS, build_adapter, build_tiny_llama  # noqa: E402

CONCURRENCY = (1, 4, 16, 32)
FLOOR = 4.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def conversations(n: int) -> list[list[dict]]:
    topics = ["the lease", "the medicine", "my order", "the refund", "the contract", "a fever"]
    return [[{"role": "user", "content": f"Question {i} about {topics[i % len(topics)]}?"}] for i in range(n)]


def run_level(client: ServingEndpoint, names: list[str], concurrency: int, requests: int, max_tokens: int) -> dict:
    convs = conversations(requests)
    # One adapter per request, cycling: every batch mixes the three domains.
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return client.chat(names[i % len(names)], convs[i], max_tokens=max_tokens)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    tokens = sum(a.completion_tokens for a in answers)
    latencies = [a.latency_s for a in answers]
    return {"concurrency": concurrency, "requests": requests, "tokens": tokens, "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 1), "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
            "p95_ms": round(1000 * percentile(latencies, 0.95), 1)}


def router_overhead(state: dict, base_name: str, rounds: int) -> dict:
    # The backend wants the admin key on every /v1 route (as vLLM's --api-key); the router's inference is open.
    routed, direct = ServingClient(state["url"]), ServingClient(state["backend_url"], api_key=state["api_key"])
    msgs = [{"role": "user", "content": "hi"}]
    for client in (routed, direct):  # warm connections
        client.chat(base_name, msgs, max_tokens=1)
    lat = {"router": [], "direct": []}
    for _ in range(rounds):  # interleaved, so load changes hit both sides alike
        lat["router"].append(routed.chat(base_name, msgs, max_tokens=1).latency_s)
        lat["direct"].append(direct.chat(base_name, msgs, max_tokens=1).latency_s)
    out = {}
    for side, values in lat.items():
        out[f"{side}_p50_ms"] = round(1000 * percentile(values, 0.5), 2)
        out[f"{side}_p95_ms"] = round(1000 * percentile(values, 0.95), 2)
    out["overhead_p50_ms"] = round(out["router_p50_ms"] - out["direct_p50_ms"], 2)
    out["overhead_p95_ms"] = round(out["router_p95_ms"] - out["direct_p95_ms"], 2)
    return out


def start(base: Path, work: Path, max_batch_size: int, adapters: dict, torch_threads: int):
    """A server in its own process (as in production), so the bench's client threads don't share its GIL."""
    state_dir = work / f"state-{max_batch_size}"
    config = work / f"serving-{max_batch_size}.yaml"
    config.write_text(yaml.safe_dump({
        "backend": "embedded", "max_batch_size": max_batch_size, "batch_window_ms": 5.0, "max_lora_rank": 16,
        "torch_threads": torch_threads}))
    state = daemon.ensure_running(base, state_dir=state_dir, adapters_root=work / "adapters", config_path=config)
    client = ServingClient(state["url"], api_key=state["api_key"], timeout_s=600)
    names = []
    for domain in DOMAINS:
        client.load_adapter(f"{domain}@bench", str(adapters[domain]))
        names.append(f"{domain}@bench")
    run_level(client, names, 4, 8, 4)  # warm-up
    return state, client, names


def median_level(runs: list[dict]) -> dict:
    """The run with the median tokens/s (noise from other work on the machine hits single runs)."""
    chosen = sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]
    return {**chosen, "tokens_per_s_runs": [r["tokens_per_s"] for r in runs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--router-rounds", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="runs per level and server; the median is reported")
    parser.add_argument("--torch-threads", type=int, default=1, help="per server (0: torch's default)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    base = build_tiny_llama(work / "tiny-llama", max_positions=512)
    adapters = {d: build_adapter(base, work / "adapters" / d / "v1", seed=10 + i) for i, d in enumerate(DOMAINS)}

    batched_server = start(base, work, 32, adapters, args.torch_threads)
    single_server = start(base, work, 1, adapters, args.torch_threads)
    batched, single = [], []
    try:
        for c in CONCURRENCY:
            n = max(args.requests, c)
            runs = {"batched": [], "single": []}
            for _ in range(args.rounds):  # alternate the two servers, so load from elsewhere hits both alike
                runs["batched"].append(run_level(batched_server[1], batched_server[2], c, n, args.max_tokens))
                runs["single"].append(run_level(single_server[1], single_server[2], c, n, args.max_tokens))
            batched.append(median_level(runs["batched"]))
            single.append(median_level(runs["single"]))
        overhead = router_overhead(batched_server[0], base.name, args.router_rounds)
    finally:
        daemon.stop(work / "state-32")
        daemon.stop(work / "state-1")

    ratio = {b["concurrency"]: round(b["tokens_per_s"] / s["tokens_per_s"], 2) for b, s in zip(batched, single)}
    report = {
        "command": "python bench/serving.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "model": "random Llama, hidden 64, 2 layers, NF4 base, 3 LoRA adapters r=8 mixed per batch",
        "max_tokens": args.max_tokens, "torch_threads": args.torch_threads, "rounds": args.rounds,
        "load_average": os.getloadavg(), "batched": batched, "one_at_a_time": single,
        "speedup_by_concurrency": ratio, "router": overhead,
        "floor": {"rule": f"batched tokens/s at concurrency 16 >= {FLOOR}x one-at-a-time",
                  "speedup": ratio[16], "met": ratio[16] >= FLOOR},
    }
    print(json.dumps(report, indent=2))
    print("\n| concurrency | batched tok/s | p50 ms | p95 ms | one-at-a-time tok/s | p50 ms | p95 ms | speedup |")
    print("|---|---|---|---|---|---|---|---|")
    for b, s in zip(batched, single):
        print(f"| {b['concurrency']} | {b['tokens_per_s']} | {b['p50_ms']} | {b['p95_ms']} | {s['tokens_per_s']} | "
              f"{s['p50_ms']} | {s['p95_ms']} | {ratio[b['concurrency']]}x |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if report["floor"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
