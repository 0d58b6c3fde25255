"""Price a run from configs/costs.yaml (the seed's hourly prices): GPU-seconds and USD."""
from __future__ import annotations

from pathlib import Path

import yaml


def load_prices(costs_file: Path) -> dict:
    if not costs_file.is_file():
        raise FileNotFoundError(f"{costs_file}: cost table not found (needs `instances: {{name: {{gpus, usd_per_hour}}}}`)")
    data = yaml.safe_load(costs_file.read_text()) or {}
    instances = data.get("instances")
    if not isinstance(instances, dict) or not instances:
        raise ValueError(f"{costs_file}: field `instances` must map instance names to {{gpus, usd_per_hour}}")
    return instances


def price_run(wall_seconds: float, instance: str, costs_file: Path, gpus_used: int | None = None) -> dict:
    """Cost of the instance for the wall time; GPU-seconds count the GPUs the run used when known."""
    instances = load_prices(costs_file)
    if instance not in instances:
        raise ValueError(f"{costs_file}: no instance `{instance}` (field cost_instance); known: {', '.join(instances)}")
    entry = instances[instance]
    gpus = int(entry.get("gpus", 0)) if gpus_used is None else gpus_used
    return {
        "instance": instance,
        "gpu_seconds": round(wall_seconds * gpus, 1),
        "usd": round(wall_seconds / 3600.0 * float(entry["usd_per_hour"]), 4),
        "usd_per_hour": float(entry["usd_per_hour"]),
    }
