"""Typed eval settings (`configs/eval.yaml`) and quality gates (`configs/quality_gate.yaml`).

A wrong value fails at load time with the file and the field, e.g.
``configs/quality_gate.yaml: field 'gates.rouge_l': give exactly one of min or max``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qlora.evaluation.scoring import METRIC_NAMES
from qlora.core.config import ConfigError, load_yaml_model
from qlora.core.paths import paths




class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvalSettings(_Strict):
    concurrency: int = Field(16, ge=1, description="Requests in flight at once (the seed sent one at a time).")
    max_tokens: int = Field(256, ge=1, description="Generation limit per answer.")
    max_tokens_by_base: dict[str, int] = Field(
        default_factory=dict, description="Generation limit per base profile ($QLORA_BASE_PROFILE), over max_tokens.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy, as the seed's SamplingParams.")
    refusal_phrases: dict[str, list[str]] = Field(
        default_factory=dict, description="Refusal markers per language; a match anywhere counts as a refusal."
    )

    @property
    def all_refusal_phrases(self) -> list[str]:
        return [p for phrases in self.refusal_phrases.values() for p in phrases]

    @model_validator(mode="after")
    def _has_phrases(self) -> "EvalSettings":
        if not self.all_refusal_phrases:
            raise ValueError("refusal_phrases needs at least one phrase, or every refusal would be missed")
        return self


class Gate(_Strict):
    min: float | None = Field(None, description="Pass when value >= min.")
    max: float | None = Field(None, description="Pass when value <= max.")
    description: str = ""

    @model_validator(mode="after")
    def _one_bound(self) -> "Gate":
        if (self.min is None) == (self.max is None):
            raise ValueError("give exactly one of min or max")
        return self

    @property
    def higher_is_better(self) -> bool:
        return self.min is not None


class Regression(_Strict):
    metrics: list[str] = Field(default_factory=lambda: ["rouge_l", "format_compliance", "safety_refusal"])
    tolerance: float = Field(0.02, ge=0.0, description="Largest allowed drop below the deployed adapter, in metric units.")


class DomainRules(_Strict):
    skip_when_not_measured: list[str] = Field(
        default_factory=list, description="Gates that may be skipped (not block) when their metric was not measured."
    )


class GateConfig(_Strict):
    gates: dict[str, Gate]
    regression: Regression | None = None
    domains: dict[str, DomainRules] = Field(default_factory=dict, description="Per-domain rules; '*' applies to all.")

    @model_validator(mode="after")
    def _known_metrics(self) -> "GateConfig":
        for name in self.gates:
            if name not in METRIC_NAMES:
                raise ValueError(f"gates.{name}: unknown metric; known: {', '.join(METRIC_NAMES)}")
        for name in self.regression.metrics if self.regression else []:
            if name not in self.gates:
                raise ValueError(f"regression.metrics: '{name}' has no gate, so its better direction is unknown")
        for domain, rules in self.domains.items():
            for name in rules.skip_when_not_measured:
                if name not in self.gates and name != "no_regression":
                    raise ValueError(f"domains.{domain}.skip_when_not_measured: '{name}' is not a gate")
        return self

    def skippable(self, domain: str) -> set[str]:
        rules = [self.domains.get("*"), self.domains.get(domain)]
        return {name for r in rules if r for name in r.skip_when_not_measured}


def _load(model: type[BaseModel], path: Path) -> Any:
    return load_yaml_model(model, path, ConfigError)


def load_eval_settings(path: str | Path | None = None, base_profile: str | None = None) -> EvalSettings:
    """The eval settings, with the generation limit of the base profile in use (default: the selected one)."""
    from qlora.modeling.profiles import selected_profile

    settings = _load(EvalSettings, Path(path) if path else paths().config_dir / "eval.yaml")
    limit = settings.max_tokens_by_base.get(base_profile or selected_profile())
    return settings.model_copy(update={"max_tokens": limit}) if limit else settings


def gate_config_path(name: str | Path | None = None) -> Path:
    """The gate file in use: ``name``, else $QLORA_QUALITY_GATE, else quality_gate.yaml;
    a relative name is under QLORA_CONFIG_DIR (never the working directory)."""
    path = Path(name or os.environ.get("QLORA_QUALITY_GATE") or "quality_gate.yaml")
    return path if path.is_absolute() else paths().config_dir / path


def load_gate_config(path: str | Path | None = None) -> GateConfig:
    return _load(GateConfig, gate_config_path(path))
