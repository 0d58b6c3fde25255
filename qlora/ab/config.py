"""`configs/ab.yaml` as a typed model: every setting has a default and a one-line reason.

Invalid combinations (a win-rate test whose baseline is not 0.5, an effect that leaves
[0, 1]) fail at load time naming the field, through ``qlora.core.config``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qlora.core.config import ConfigError, load_yaml_model
from qlora.core.paths import paths

WIN_RATE, THUMBS_UP = "win_rate", "thumbs_up"
FIXED_HORIZON, MSPRT = "fixed_horizon", "msprt"




class Guardrails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_requests: int = Field(50, ge=1, description="guardrails judge once the candidate has this many requests")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="candidate request error rate (5xx, timeouts)")
    max_latency_p95_ms: float = Field(5000, gt=0, description="candidate p95 latency")
    flagged_prompt_patterns: list[str] = Field(default_factory=list, description="regexes marking flagged prompts")
    refusal_phrases: list[str] = Field(default_factory=lambda: ["I can't help", "I cannot help"])
    max_refusal_rate_increase: float = Field(0.05, ge=0, le=1, description="candidate minus control, flagged prompts")


class ABConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    traffic_share: float = Field(0.5, gt=0, lt=1, description="candidate's share of the domain's traffic")
    assignment_header: str = Field("X-QLora-User", min_length=1, description="user key when the body has no `user`")
    primary_metric: Literal["win_rate", "thumbs_up"] = WIN_RATE
    baseline_rate: float = Field(0.5, gt=0, lt=1, description="primary metric under no change")
    minimum_detectable_effect: float = Field(0.10, gt=0, lt=1, description="absolute effect worth detecting")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="two-sided false-positive rate")
    power: float = Field(0.80, gt=0.5, lt=1, description="chance to detect the minimum effect")
    test: Literal["fixed_horizon", "msprt"] = FIXED_HORIZON
    msprt_tau: float = Field(0.10, gt=0, description="mSPRT mixing prior's standard deviation")
    thumbs_up_min_score: int = Field(4, ge=1, le=5, description="a 1..5 score at or above this counts as up")
    max_duration_hours: float = Field(168, gt=0, description="an experiment ends (reject) after this long")
    feedback_ttl_hours: float = Field(168, gt=0, description="feedback on older responses is refused")
    look_interval_minutes: float = Field(30, gt=0, description="how often the sensor evaluates a running experiment")
    required_for_domains: list[str] = Field(default_factory=list, description="production needs a promote")
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @model_validator(mode="after")
    def _consistent(self) -> "ABConfig":
        if self.primary_metric == WIN_RATE and self.baseline_rate != 0.5:
            raise ValueError("baseline_rate must be 0.5 for primary_metric win_rate (no preference either way)")
        if self.baseline_rate + self.minimum_detectable_effect >= 1:
            raise ValueError(f"baseline_rate + minimum_detectable_effect = "
                             f"{self.baseline_rate + self.minimum_detectable_effect:g} must stay below 1")
        return self


def default_config_path() -> Path:
    return paths().config_dir / "ab.yaml"


def load_ab_config(path: str | Path | None = None) -> ABConfig:
    return load_yaml_model(ABConfig, Path(path) if path else default_config_path(), ConfigError)
