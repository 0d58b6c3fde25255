"""Per-domain data rules from `configs/domains.yaml`, typed and checked at load time.

An invalid value fails here with the key path in the message (pydantic), not in the middle
of a run; a domain not listed in the file gets `defaults`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qlora.core.config import read_yaml_mapping, validate_mapping
from qlora.core.paths import paths


class SplitRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["auto", "hash", "fixed"] = "auto"
    eval_ratio: float = Field(0.1, gt=0.0, lt=1.0, description="share of rows put in eval by hash")


class DomainRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    licences_allowed: list[str] = Field(default_factory=lambda: ["internal"])
    target_languages: list[str] = Field(default_factory=lambda: ["ko"])
    min_target_language_share: float = Field(0.95, ge=0.0, le=1.0)
    max_duplicate_rate: float = Field(0.05, ge=0.0, le=1.0)
    min_chars: dict[Literal["instruction", "output"], int] = {"instruction": 10, "output": 5}
    token_bounds: dict[Literal["instruction", "output"], tuple[int, int]] = {
        "instruction": (10, 2048),
        "output": (5, 4096),
    }
    split: SplitRule = SplitRule()

    @field_validator("licences_allowed")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value]

    @field_validator("token_bounds")
    @classmethod
    def _ordered(cls, value: dict) -> dict:
        for field, (low, high) in value.items():
            if not 0 <= low <= high:
                raise ValueError(f"token_bounds.{field}: need 0 <= min <= max, got [{low}, {high}]")
        return value


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: DomainRules = DomainRules()
    language_detector: list[str] = ["ko", "en", "ja", "zh"]
    domains: dict[str, dict] = {}

    def rules(self, domain: str) -> DomainRules:
        merged = {**self.defaults.model_dump(), **self.domains.get(domain, {})}
        try:
            return DomainRules.model_validate(merged)
        except ValidationError as exc:
            raise ValueError(f"configs/domains.yaml: domains.{domain}: {exc}") from None

    def detector_languages(self) -> list[str]:
        wanted = set(self.language_detector)
        for domain in self.domains:
            wanted.update(self.rules(domain).target_languages)
        return sorted(wanted | set(self.defaults.target_languages))


def load_data_config(path: str | Path | None = None) -> DataConfig:
    path = Path(path) if path else paths().config_dir / "domains.yaml"
    if not path.is_file():
        return DataConfig()
    config = validate_mapping(DataConfig, read_yaml_mapping(path), path)
    for domain in config.domains:
        config.rules(domain)  # fail at load, naming the domain, not mid-run
    return config
