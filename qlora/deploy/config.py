"""Typed deployment settings from `configs/deploy.yaml`; a bad value fails naming file and field."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qlora.core.config import ConfigError, read_yaml_mapping, validate_mapping
from qlora.core.paths import paths




class DeployConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["canary", "direct"] = "canary"
    canary_steps: tuple[int, ...] = Field((10, 50, 100), description="percent on the new version, in order")
    probes_per_step: int = Field(16, ge=1, description="requests through the alias at each step")
    direct_probes_per_step: int = Field(4, ge=0, description="requests straight to the new version at each step")
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    max_latency_p95_ms: float = Field(5000.0, gt=0)
    golden_prompts: int = Field(4, ge=1, description="first N non-refusal rows of the domain's eval set")
    golden_max_tokens: int = Field(16, ge=1)
    smoke_min_similarity: float = Field(0.0, ge=0.0, le=1.0, description="0 turns the comparison off")
    smoke_max_mismatch_rate: float = Field(0.5, ge=0.0, le=1.0)
    load_timeout_s: float = Field(60.0, gt=0)
    drain_s: float = Field(30.0, ge=0, description="longest wait for the old version's in-flight requests")
    rollback_timeout_s: float = Field(30.0, ge=0)
    request_timeout_s: float = Field(30.0, gt=0)

    @field_validator("canary_steps")
    @classmethod
    def _steps_rise_to_full(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps:
            raise ValueError("needs at least one step; the last must be 100")
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError(f"each step is a percent in 1..100, got {list(steps)}")
        if list(steps) != sorted(set(steps)):
            raise ValueError(f"steps must strictly increase, got {list(steps)}")
        if steps[-1] != 100:
            raise ValueError(f"the last step must be 100 so the new version takes all traffic, got {steps[-1]}")
        return steps

    @property
    def weight_steps(self) -> tuple[float, ...]:
        """Fractions of traffic for the new version: the canary steps, or one jump to 1.0."""
        if self.strategy == "direct":
            return (1.0,)
        return tuple(s / 100 for s in self.canary_steps)


def load_deploy_config(path: str | Path | None = None, **overrides) -> DeployConfig:
    """Read configs/deploy.yaml (or `path`); keyword overrides win (CLI flags, tests)."""
    path = Path(path) if path else paths().config_dir / "deploy.yaml"
    raw = read_yaml_mapping(path, ConfigError) if path.is_file() else {}
    return validate_mapping(DeployConfig, {**raw, **overrides}, path, ConfigError)
