"""Prices from configs/costs.yaml (the seed's hourly prices, and the monthly budget): GPU-seconds and USD."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qlora.core.config import load_yaml_model

RUNS_PER_MONTH_WEEKLY = 52 / 12


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpus: int = Field(ge=0, description="GPUs of the instance.")
    usd_per_hour: float = Field(ge=0, description="On-demand price of the whole instance.")


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    monthly_usd: float = Field(gt=0, description="Training spend a month the platform should stay under.")
    runs_per_month: float = Field(RUNS_PER_MONTH_WEEKLY, gt=0, description="Runs a domain gets a month (weekly: 52/12).")


class CostsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: dict[str, Instance]
    budget: Budget | None = None


def load_costs(costs_file: Path) -> CostsConfig:
    """configs/costs.yaml as a model; errors name file, line and field."""
    if not Path(costs_file).is_file():
        raise FileNotFoundError(f"{costs_file}: cost table not found (needs `instances: {{name: {{gpus, usd_per_hour}}}}`)")
    return load_yaml_model(CostsConfig, Path(costs_file))


def price_run(wall_seconds: float, instance: str, costs_file: Path, gpus_used: int | None = None) -> dict:
    """Cost of the instance for the wall time; GPU-seconds count the GPUs the run used when known."""
    instances = load_costs(costs_file).instances
    if instance not in instances:
        raise ValueError(f"{costs_file}: no instance `{instance}` (field cost_instance); known: {', '.join(instances)}")
    entry = instances[instance]
    gpus = entry.gpus if gpus_used is None else gpus_used
    return {
        "instance": instance,
        "gpu_seconds": round(wall_seconds * gpus, 1),
        "usd": round(wall_seconds / 3600.0 * entry.usd_per_hour, 4),
        "usd_per_hour": entry.usd_per_hour,
    }
