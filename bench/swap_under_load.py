"""Swap adapters under load: a steady request rate to the alias while v2 is deployed (canary) and rolled back.

Checks, on the real embedded server + router on loopback:
  - zero failed requests over the whole run;
  - every answer names legal-ko@v1 or legal-ko@v2;
  - requests sent after the alias reached 100% v2 (until the rollback starts) are all answered by v2,
    and requests sent after the rollback's switch are all answered by v1.
Baseline (same run): latency of the same load while nothing is being swapped.

    .venv/bin/python bench/swap_under_load.py [--rate 16] [--phase-s 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qlora.serving.client import ServingClient  # noqa: E402
from qlora.serving.endpoint import ServingEndpoint  # noqa: E402

DOMAIN, V1, V2 = "legal-ko", "legal-ko@v1", "legal-ko@v2"
PROMPT = [{"role": "user", "content": "The lease may be ended"}]


class SwitchRecordingClient(ServingClient):
    """Notes when each alias move has taken effect (the router applies it before answering)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.switches: list[tuple[float, dict]] = []

    def set_alias(self, public_name, weights):
        super().set_alias(public_name, weights)
        self.switches.append((time.perf_counter(), dict(weights)))


def steady_load(client: ServingEndpoint, rate: float, stop: threading.Event, log: list) -> None:
    """Open loop: one request every 1/rate s whatever the latency (a closed loop would hide stalls)."""
    pool = ThreadPoolExecutor(max_workers=64)

    def one(sent: float):
        try:
            answer = client.chat(DOMAIN, PROMPT, max_tokens=8)
            log.append((sent, time.perf_counter() - sent, answer.model, ""))
        except Exception as exc:  # every failure is counted, whatever its kind
            log.append((sent, time.perf_counter() - sent, "", repr(exc)[:200]))

    next_at = time.perf_counter()
    while not stop.is_set():
        pool.submit(one, time.perf_counter())
        next_at += 1.0 / rate
        stop.wait(max(0.0, next_at - time.perf_counter()))
    pool.shutdown(wait=True)


def stats(rows: list) -> dict:
    latencies = sorted(r[1] for r in rows)
    pick = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None
    return {"requests": len(rows), "failed": sum(1 for r in rows if r[3]), "p50_ms": pick(0.5),
            "p95_ms": pick(0.95), "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
            "answered_by": {m: sum(1 for r in rows if r[2] == m) for m in sorted({r[2] for r in rows if r[2]})}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=16.0, help="requests per second to the alias")
    parser.add_argument("--phase-s", type=float, default=5.0, help="steady seconds before, between and after swaps")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    import os

    home = Path(tempfile.mkdtemp(prefix="swap_bench_"))
    os.environ["QLORA_HOME"] = str(home)
    from qlora.core.adapters import adapter_from_path
    from qlora.deploy.config import load_deploy_config
    from qlora.deploy.deployer import Deployer
    from qlora.deploy.rollback import rollback
    from qlora.deploy.smoke import GoldenPrompt
    from qlora.evaluation.decisions import record_gate_decision
    from qlora.evaluation.gate import GateDecision, GateVerdict
    from qlora.serving.config import EmbeddedConfig
    from qlora.serving.embedded import start_embedded
    from qlora.core.warehouse import Warehouse
    from tests.support.serving import build_adapter, build_tiny_llama

    base = build_tiny_llama(home / "base" / "tiny-llama")
    root = home / "artifacts" / "adapters"
    refs = [adapter_from_path(DOMAIN, build_adapter(base, root / DOMAIN / v, seed=s)) for v, s in (("v1", 1), ("v2", 2))]
    warehouse = Warehouse(home / "warehouse.duckdb")
    for ref in refs:
        record_gate_decision(warehouse, GateDecision(DOMAIN, ref.version, [GateVerdict("rouge_l", 0.9, ">= 0.65", "pass", "")]))
    config = load_deploy_config()  # the repo's configs/deploy.yaml: canary steps, drain, probes
    golden = [GoldenPrompt(PROMPT, None, "bench")]
    handle = start_embedded(base, api_key="bench", state_dir=home / "serving", adapters_root=root,
                            config=EmbeddedConfig(max_lora_rank=16))
    admin = SwitchRecordingClient(handle.url, api_key="bench", timeout_s=60)
    first = Deployer(admin, warehouse, config, golden).deploy(refs[0])
    assert first.result == "deployed", first.reason

    log: list = []
    stop = threading.Event()
    traffic = ServingClient(handle.url, timeout_s=60)
    load = threading.Thread(target=steady_load, args=(traffic, args.rate, stop, log))
    marks = {"start": time.perf_counter()}
    load.start()
    try:
        time.sleep(args.phase_s)
        marks["deploy_start"] = time.perf_counter()
        deployed = Deployer(admin, warehouse, config, golden).deploy(refs[1])
        marks["deploy_end"] = time.perf_counter()
        v2_full = admin.switches[-1][0]
        if deployed.result != "deployed":
            raise RuntimeError(f"v2 deploy {deployed.result}: {deployed.reason} (lower --rate?)")
        time.sleep(args.phase_s)
        marks["rollback_start"] = time.perf_counter()
        rolled = rollback(admin, warehouse, config, golden, DOMAIN)
        marks["rollback_end"] = time.perf_counter()
        v1_full = admin.switches[-1][0]
        time.sleep(args.phase_s)
    finally:
        stop.set()
        load.join()
        traffic.close()
        handle.stop()

    window = lambda a, b: [r for r in log if a <= r[0] < b]
    after_v2 = window(v2_full, marks["rollback_start"])
    after_v1 = window(v1_full, float("inf"))
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
        "rate_rps": args.rate, "phase_s": args.phase_s,
        "canary_steps": list(config.canary_steps), "drain_s": config.drain_s,
        "deploy": {"result": deployed.result, "reason": deployed.reason,
                   "seconds": round(marks["deploy_end"] - marks["deploy_start"], 2)},
        "rollback": {"result": rolled.result, "reason": rolled.reason,
                     "seconds": round(marks["rollback_end"] - marks["rollback_start"], 2)},
        "baseline_no_swap": stats(window(marks["start"], marks["deploy_start"])),
        "during_deploy": stats(window(marks["deploy_start"], marks["deploy_end"])),
        "after_v2_switch": stats(after_v2),
        "during_rollback": stats(window(marks["rollback_start"], marks["rollback_end"])),
        "after_v1_switch": stats(after_v1),
        "total": stats(log),
        "failures_sample": [r[3] for r in log if r[3]][:5],
    }
    checks = {
        "zero_failed_requests": result["total"]["failed"] == 0,
        "every_answer_names_v1_or_v2": all(r[2] in (V1, V2) for r in log if not r[3]),
        "after_deploy_switch_only_v2": bool(after_v2) and all(r[2] == V2 for r in after_v2),
        "after_rollback_switch_only_v1": bool(after_v1) and all(r[2] == V1 for r in after_v1),
        "deploy_and_rollback_succeeded": deployed.result == rolled.result == "deployed",
    }
    result["checks"] = checks
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
