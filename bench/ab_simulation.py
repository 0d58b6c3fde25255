"""Benchmark: the online A/B end to end with simulated users whose true preference is known.

Three cases: the candidate is better (users prefer it 60/40), equal (50/50), worse (40/60).
Each simulated experiment runs through the real router (its own process: sticky arms, the
response journal, POST /v1/feedback) and the real decision code (qlora.ab.lifecycle: journal
ingest into a DuckDB warehouse, report, pre-registered test, promote/reject applied on the
router). Every simulated user asks the domain once (their sticky arm answers), asks again with
``X-QLora-Pair-Of`` (the other arm answers), and posts a pairwise preference drawn from the case's
true preference. Looks happen every ``--look-every`` decisive pairs, as the sensor would.

The backend behind the router is a stub that speaks vLLM's HTTP API (chat completions, LoRA
load/unload, /v1/models) and answers instantly: a model forward pass adds nothing to what is
measured here (decision error rates), and would make 600 requests per experiment take minutes.

Measured: false promotion rate at 50/50 (floor: <= alpha), power at 60/40 (floor: >= the
configured power, at the planned sample), promotions at 40/60 (floor: none), and one extra
experiment whose router is killed (SIGKILL) and restarted half-way: every acknowledged feedback
must be in the warehouse afterwards.

    .venv/bin/python bench/ab_simulation.py [--experiments 200] [--parallel 4] [--test fixed_horizon|msprt]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402  (module level: FastAPI resolves the stub's annotations here)
from fastapi.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402

CASES = {"better 60/40": 0.60, "equal 50/50": 0.50, "worse 40/60": 0.40}
API_KEY = "ab-simulation-key"
PROMPT = [{"role": "user", "content": "What does the lease say about notice?"}]


# ---------------------------------------------------------------- servers (run as child processes)

def stub_backend_app():
    """A vLLM-compatible stub: instant answers naming the adapter; runtime LoRA load/unload."""
    app = FastAPI()
    loaded: dict[str, str] = {}

    @app.get("/health")
    async def health():
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models():
        cards = [{"id": "stub-base", "object": "model", "root": "stub-base", "parent": None}]
        cards += [{"id": n, "object": "model", "root": p, "parent": "stub-base"} for n, p in loaded.items()]
        return {"object": "list", "data": cards}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request):
        body = await request.json()
        if body["lora_name"] in loaded:
            return JSONResponse({"error": {"message": "already loaded", "code": 400}}, status_code=400)
        loaded[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse("Success")

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request):
        body = await request.json()
        if loaded.pop(body["lora_name"], None) is None:
            return JSONResponse({"error": {"message": "not found", "code": 404}}, status_code=404)
        return PlainTextResponse("Success")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if body["model"] not in loaded and body["model"] != "stub-base":
            return JSONResponse({"error": {"message": f"The model `{body['model']}` does not exist.", "code": 404}},
                                status_code=404)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer of {body['model']}"},
                             "finish_reason": "stop"}]}

    return app


def serve(kind: str, port: int, state_dir: str, backend_url: str) -> None:
    import uvicorn

    if kind == "stub":
        app = stub_backend_app()
    else:
        from qlora.serving.aliases import AliasTable
        from qlora.serving.arms import ArmRouting
        from qlora.serving.router import Router, create_router_app
        from qlora.serving.state_files import LoadedAdapters

        state = Path(state_dir)
        aliases = AliasTable(state / "aliases.json")
        router = Router(backend_url, API_KEY, aliases, state / "adapters", loaded=LoadedAdapters(state / "adapters.json"),
                        arm_routing=ArmRouting.in_state_dir(state, aliases))
        app = create_router_app(router)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child server process on a fixed port (a restart binds the same port)."""

    def __init__(self, kind: str, state_dir: Path, backend_url: str = ""):
        self.kind, self.state_dir, self.backend_url = kind, state_dir, backend_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.child: subprocess.Popen | None = None

    def start(self) -> "Process":
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.child = subprocess.Popen([sys.executable, __file__, "--serve", self.kind, "--port", str(self.port),
                                       "--state-dir", str(self.state_dir), "--backend-url", self.backend_url],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.child.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.child.returncode}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.kind} did not start on {self.url}")

    def kill(self) -> None:
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)  # no shutdown hooks: only what was fsync'd survives
            self.child.wait(timeout=30)


# ---------------------------------------------------------------- simulated experiments

class Simulation:
    def __init__(self, work: Path, config, look_every: int):
        from qlora.core.warehouse import Warehouse

        self.work, self.config, self.look_every = work, config, look_every
        self.backend = Process("stub", work / "stub").start()
        self.router = Process("router", work / "router", self.backend.url).start()
        self.warehouse = Warehouse(work / "warehouse.duckdb")
        self.adapters = work / "router" / "adapters"
        self.http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    def client(self):
        from qlora.serving.client import ServingClient

        return ServingClient(self.router.url, api_key=API_KEY, timeout_s=60)

    def setup_domain(self, domain: str):
        """Production v1 on the alias; the candidate v2 registered (folders under the adapters root)."""
        from qlora.core.adapters import AdapterRef

        for version in ("v1", "v2"):
            (self.adapters / domain / version).mkdir(parents=True, exist_ok=True)
        with self.client() as client:
            if f"{domain}@v1" not in {c["id"] for c in client.models()}:
                client.load_adapter(f"{domain}@v1", str(self.adapters / domain / "v1"))
            client.set_alias(domain, {f"{domain}@v1": 1.0})
        from qlora.evaluation.decisions import latest_gate_decision, record_gate_decision
        from qlora.evaluation.gate import GateDecision, GateVerdict

        if latest_gate_decision(self.warehouse, domain, "v2") is None:  # only gate-passed versions go live
            record_gate_decision(self.warehouse, GateDecision(domain, "v2", [GateVerdict("rouge_l", 0.9, ">= 0.65", "pass", "")]))
        return AdapterRef(domain, "v2", str(self.adapters / domain / "v2"))

    def chat(self, domain: str, user: str, pair_of: str | None = None) -> dict:
        headers = {"X-QLora-Pair-Of": pair_of} if pair_of else {}
        body = {"model": domain, "messages": PROMPT, "max_tokens": 4, "user": user}
        try:
            response = self.http.post(f"{self.router.url}/v1/chat/completions", headers=headers, json=body)
        except httpx.TransportError:  # a pooled connection to the router killed by the restart case
            response = self.http.post(f"{self.router.url}/v1/chat/completions", headers=headers, json=body)
        response.raise_for_status()
        return response.json()

    def one_pair(self, domain: str, user: str, p_candidate: float, rng: random.Random, candidate: str) -> bool:
        first = self.chat(domain, user)
        second = self.chat(domain, user, pair_of=first["id"])
        by_version = {first["model"]: first["id"], second["model"]: second["id"]}
        if len(by_version) != 2 or candidate not in by_version:
            raise AssertionError(f"pair not across arms: {first['model']} / {second['model']}")
        prefers_candidate = rng.random() < p_candidate
        winner = by_version[candidate] if prefers_candidate else next(v for k, v in by_version.items() if k != candidate)
        answer = self.http.post(f"{self.router.url}/v1/feedback",
                                json={"pair": [first["id"], second["id"]], "preferred": winner})
        answer.raise_for_status()
        return True

    def run_experiment(self, domain: str, p_candidate: float, seed: int, restart_at: int | None = None) -> dict:
        from qlora.ab import lifecycle

        rng = random.Random(seed)
        candidate_ref = self.setup_domain(domain)
        with self.client() as client:
            experiment = lifecycle.start(client, self.warehouse, self.config, candidate_ref)
        cap = experiment.planned if self.config.test == "fixed_horizon" else 3 * experiment.planned
        sent, looks, result = 0, 0, None
        while result is None or result.decision.action == "continue":
            if sent >= cap:  # mSPRT only: the sample cap acts as the maximum duration
                with self.client() as client:
                    lifecycle.stop(client, self.warehouse, domain)
                return {"decision": "reject", "reason": "sample cap", "pairs": sent, "looks": looks}
            batch = min(self.look_every, cap - sent)
            for i in range(batch):
                if restart_at is not None and sent == restart_at:
                    self.router.kill()
                    self.router.start()
                self.one_pair(domain, f"{domain}-u{seed}-{sent}", p_candidate, rng, experiment.candidate)
                sent += 1
            with self.client() as client:
                result = lifecycle.look(client, self.warehouse, domain)  # promote: recorded, production restored
            looks += 1
        return {"decision": result.decision.action, "reason": result.decision.reason, "pairs": sent, "looks": looks,
                "win_rate": result.report.win_rate, "experiment_id": experiment.experiment_id}

    def close(self) -> None:
        self.http.close()
        self.router.kill()
        self.backend.kill()


def wilson(k: int, n: int) -> tuple[float, float]:
    from qlora.ab.stats import wilson_interval

    return wilson_interval(k, n)


def exact_power(planned: int, p: float, alpha: float) -> float:
    """P(promote) of the fixed-horizon z-test at `planned` decisive pairs when the true win rate is p."""
    from scipy.stats import binom, norm

    needed = 0.5 * planned + norm.ppf(1 - alpha / 2) * (0.25 * planned) ** 0.5  # wins above this are significant
    return float(binom.sf(int(needed), planned, p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200, help="simulated experiments per case")
    parser.add_argument("--parallel", type=int, default=4, help="experiments running at once (own alias each)")
    parser.add_argument("--test", choices=["fixed_horizon", "msprt"], default="fixed_horizon")
    parser.add_argument("--look-every", type=int, default=50, help="decisive pairs between two looks")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--serve", choices=["stub", "router"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--backend-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.state_dir, args.backend_url)

    from qlora.ab.config import load_ab_config
    from qlora.ab.sample_size import plan_sample

    config = load_ab_config().model_copy(update={"test": args.test, "primary_metric": "win_rate", "baseline_rate": 0.5})
    planned = plan_sample(config).total
    print(f"config: {config.test}, alpha {config.alpha}, power {config.power}, effect +{config.minimum_detectable_effect}"
          f" -> {planned} decisive pairs planned; {args.experiments} experiments per case, {args.parallel} at once")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ab-sim-") as tmp:
        sim = Simulation(Path(tmp), config, args.look_every)
        results: dict = {"config": {"test": config.test, "alpha": config.alpha, "power": config.power,
                                    "mde": config.minimum_detectable_effect, "planned_pairs": planned,
                                    "experiments_per_case": args.experiments, "look_every": args.look_every},
                         "cases": {}}
        try:
            for c, (case, p) in enumerate(CASES.items()):
                case_started = time.monotonic()
                lanes = [f"sim{c}-{lane}" for lane in range(args.parallel)]

                def lane_run(lane: int) -> list[dict]:
                    return [sim.run_experiment(lanes[lane], p, seed=10_000 * c + i)
                            for i in range(lane, args.experiments, args.parallel)]

                with ThreadPoolExecutor(args.parallel) as pool:
                    runs = [r for lane_runs in pool.map(lane_run, range(args.parallel)) for r in lane_runs]
                promoted = sum(r["decision"] == "promote" for r in runs)
                low, high = wilson(promoted, len(runs))
                results["cases"][case] = {
                    "true_preference": p, "experiments": len(runs), "promoted": promoted,
                    "promote_rate": promoted / len(runs), "promote_rate_ci95": [low, high],
                    "mean_pairs": sum(r["pairs"] for r in runs) / len(runs),
                    "expected_promote_rate": exact_power(planned, p, config.alpha) if config.test == "fixed_horizon" else None,
                    "seconds": round(time.monotonic() - case_started, 1)}
                print(f"{case}: promoted {promoted}/{len(runs)} = {promoted / len(runs):.3f} "
                      f"(95% CI {low:.3f}-{high:.3f}), mean {results['cases'][case]['mean_pairs']:.0f} pairs, "
                      f"{results['cases'][case]['seconds']} s", flush=True)

            # One experiment whose router is SIGKILLed and restarted half-way.
            acknowledged_before = sim.warehouse.query("select count(*) as n from ab_feedback")
            run = sim.run_experiment("restart-case", 0.6, seed=99, restart_at=planned // 2)
            with sim.client() as client:
                from qlora.ab.lifecycle import sync_journal

                sync_journal(client, sim.warehouse)
            held = sim.warehouse.query("select count(*) as n from ab_feedback f join ab_responses r "
                                       "on f.response_id = r.response_id where r.experiment_id = ?",
                                       [run["experiment_id"]])
            results["restart"] = {"pairs_acknowledged": run["pairs"], "feedback_in_warehouse": int(held.iloc[0]["n"]),
                                  "decision": run["decision"], "lost": run["pairs"] - int(held.iloc[0]["n"])}
            del acknowledged_before
            print(f"router restart mid-experiment: {run['pairs']} feedback acknowledged, "
                  f"{results['restart']['feedback_in_warehouse']} in the warehouse, decision {run['decision']}")
        finally:
            sim.close()
    results["seconds"] = round(time.monotonic() - started, 1)
    cases = results["cases"]
    floors = {
        "false_promotion_at_50_50 <= alpha": cases["equal 50/50"]["promote_rate"] <= config.alpha,
        "power_at_60_40 >= configured power": cases["better 60/40"]["promote_rate"] >= config.power,
        "worse_never_promoted": cases["worse 40/60"]["promoted"] == 0,
        "restart_lost_no_feedback": results["restart"]["lost"] == 0,
    }
    results["floors"] = floors
    print(json.dumps(floors, indent=2))
    print(f"total {results['seconds']} s")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
