"""Write configs/calibration/<gpu>.json from the GPU bench's result files.

    python bench/train_gpu_calibrate.py RESULTS.json [...] --out configs/calibration/h200.json

Inputs: `bench/train_gpu.py` reports (`train_gpu-<shape>-1gpu.json`: the bench loop) and
`bench/train_gpu_smoke.py` reports (the TRL entrypoint). Every measured point is kept with the
command and date it came from; the memory and throughput models are refitted on all of them
(qlora/training/calibration.py). Points of an existing --out file are kept unless replaced by a
point of the same source, variant and shape (`--fresh` drops them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qlora.training.calibration import BENCH_SHAPES  # noqa: E402
from qlora.training.calibration_fit import fit_memory_model, fit_offload_model, fit_throughput_model  # noqa: E402
from qlora.training.memory import KNOWN_SHAPES  # noqa: E402


def bench_points(report: dict, source: str) -> list[dict]:
    """Points of a bench-loop report (one process, one base, several variants)."""
    shape = BENCH_SHAPES.get(report.get("shape"))
    if shape is None:
        return []
    points = []
    for r in report["results"]:
        if "tokens_per_s" not in r or r.get("gpus", 1) != 1:
            continue
        recipe = "fast" if r.get("recipe", "fast" if r["speed"] != "seed" else "seed") == "fast" else "seed"
        if recipe == "seed":
            loss = "chunked" if r.get("recipe") == "seed-chunkedloss" else "full"
        else:
            loss = "fused" if r["speed"]["fused_loss"] else "full"
        points.append({
            "source": source, "path": "bench-loop", "variant": r["variant"], "shape": shape, "recipe": recipe,
            "loss": loss, "micro_batch_tokens": r["max_micro_batch_tokens"],
            "recomputed_layers": r["checkpointed_layers"], "offloaded_layers": r.get("offloaded_layers", 0),
            "pinned_pool_gib": round(r["offload"]["pinned_pool_gib"], 2) if r.get("offload") else None,
            "r": 64, "data": r["data"],
            "tokens_per_s": round(r["tokens_per_s"], 1), "mfu": round(r["mfu"], 4),
            "peak_allocated_gib": round(r["peak_allocated_gib"], 2), "peak_reserved_gib": round(r["peak_reserved_gib"], 2),
            "date": report.get("date"), "command": " ".join(report.get("argv", [])),
        })
    return points


def entrypoint_points(report: dict, source: str) -> list[dict]:
    """Points of a train_gpu_smoke.py report (TRL SFTTrainer through qlora.training.entrypoint)."""
    points = []
    shape = KNOWN_SHAPES["llama-3.1-8b"]
    for key, run in report.items():
        if not isinstance(run, dict) or "steady_tokens_per_second" not in run or "batch" not in run:
            continue
        if (run.get("world_size") or 1) != 1 or not run.get("steady_tokens_per_second"):
            continue
        choice = run.get("profile_choice") or {}
        speed = run.get("speed")
        recipe = "seed" if speed is None or speed.get("fp32_upcast", True) else "fast"
        tokens = run["batch"] * run["max_length"]
        recomputed = choice.get("recomputed_layers")
        if recomputed is None:
            layers = speed.get("checkpoint_layers") if speed else None
            recomputed = shape.layers if layers is None else layers
        tps = run["steady_tokens_per_second"]
        points.append({
            "source": source, "path": "entrypoint", "variant": key, "shape": shape.name, "recipe": recipe,
            "loss": "chunked" if recipe == "seed" else "fused",  # what TRL computes (profile_choice.recipe_and_loss)
            "micro_batch_tokens": tokens, "recomputed_layers": recomputed,
            "offloaded_layers": choice.get("offloaded_layers", 0), "r": 64, "data": "full",
            "tokens_per_s": tps, "mfu": round(tps * shape.flops_per_token(64, list(shape.linear_shapes()), run["max_length"])
                                              / 989e12, 4),
            "peak_allocated_gib": run["peak_memory_gib"], "peak_reserved_gib": run.get("peak_reserved_gib"),
            "predicted_peak_gib": choice.get("predicted_peak_gib"),
            "date": report.get("date"), "command": report.get("command"),
        })
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu", default="NVIDIA H200")
    parser.add_argument("--machine", default="lent nvidia-h200 (1 x H200 143,771 MiB, driver 580.159.04)")
    parser.add_argument("--fresh", action="store_true", help="drop the points already in --out")
    args = parser.parse_args(argv)
    old = json.loads(args.out.read_text()) if args.out.is_file() and not args.fresh else {}
    new: list[dict] = []
    names = {path.name for path in args.results}
    bandwidths = [b for b in old.get("host_bandwidth_probes", []) if b.get("source") not in names]
    for path in args.results:
        report = json.loads(path.read_text())
        if report.get("host_bandwidth"):
            bandwidths.append({**report["host_bandwidth"], "source": path.name})
        source = f"{path.name} ({args.machine})"
        new += bench_points(report, source) if "results" in report else entrypoint_points(report, source)
    replaced = {(p["source"], p["variant"], p["shape"]) for p in new}
    points = [p for p in old.get("points", []) if (p["source"], p["variant"], p["shape"]) not in replaced] + new
    calibration = {
        "gpu": args.gpu,
        "bf16_peak_tflops": 989,
        "note": "written by bench/train_gpu_calibrate.py; see docs/benchmarks.md for the commands",
        "memory_model": fit_memory_model(points),
        "throughput_model": fit_throughput_model(points),
        "points": points,
    }
    calibration["offload_model"] = fit_offload_model(points, bandwidths, calibration["throughput_model"])
    calibration["host_bandwidth_probes"] = bandwidths
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(calibration, indent=1) + "\n")
    mm = calibration["memory_model"]
    print(f"{len(points)} points; memory model max error {mm['max_abs_error_gib']} GiB; coefficients {mm['coefficients']}")
    print(f"offload model {calibration['offload_model']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
