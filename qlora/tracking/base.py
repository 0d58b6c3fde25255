"""The tracking hook: what the platform tells an experiment tracker, independent of which one.

Everything here is read from records the platform already keeps (the adapter's manifest.json,
the eval report's metrics, the router's alias), so a tracker can be added, swapped or
re-synced later without retraining; calls are idempotent for the same training run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class TrainingRecord:
    domain: str
    version: str
    adapter_path: str
    manifest: dict
    dagster_run_id: str = ""

    @classmethod
    def from_adapter(cls, domain: str, version: str, adapter_path: str | Path, dagster_run_id: str = "") -> "TrainingRecord":
        manifest = json.loads((Path(adapter_path) / "manifest.json").read_text(encoding="utf-8"))
        return cls(domain, version, str(adapter_path), manifest, dagster_run_id)

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        metrics = self.manifest.get("metrics", {})
        return {name: [(int(step), float(value)) for step, value in metrics.get(key) or []]
                for name, key in (("train/loss", "loss_curve"), ("train/learning_rate", "learning_rate_curve"),
                                  ("train/eval_loss", "eval_loss_curve"))}

    def summary(self) -> dict[str, float]:
        """Speed, memory and cost of the run: one value each."""
        metrics, cost = self.manifest.get("metrics", {}), self.manifest.get("cost", {})
        values = {
            "train/tokens_per_second": metrics.get("tokens_per_second"),
            "train/steady_tokens_per_second": metrics.get("steady_tokens_per_second"),
            "train/seconds_per_step": metrics.get("seconds_per_step"),
            "train/final_loss": metrics.get("train_loss"),
            "train/tokens": metrics.get("train_tokens"),
            "train/seconds": metrics.get("train_seconds"),
            "train/wall_seconds": metrics.get("wall_seconds"),
            "train/trainable_params": self.manifest.get("trainable_params"),
            "memory/peak_gib": metrics.get("peak_memory_gib"),
            "memory/peak_reserved_gib": metrics.get("peak_reserved_gib"),
            "cost/usd": cost.get("usd"),
            "cost/gpu_seconds": cost.get("gpu_seconds"),
        }
        return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def span_ms(self) -> tuple[int | None, int | None]:
        """When the training ran (from the manifest), so MLflow's start, end and duration are the run's."""
        from datetime import datetime

        try:
            end = datetime.fromisoformat(str(self.manifest["created_at"])).timestamp()
        except (KeyError, ValueError):
            return None, None
        wall = float(self.manifest.get("metrics", {}).get("wall_seconds") or 0.0)
        return int((end - wall) * 1000), int(end * 1000)

    def params(self) -> dict[str, str]:
        """The resolved training config, flattened (``lora.r``), plus where the data and base came from."""
        flat: dict[str, str] = {}

        def walk(prefix: str, value) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), inner)
            else:
                flat[prefix] = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, tuple)) else str(value)

        walk("", self.manifest.get("config", {}))
        data, base = self.manifest.get("data", {}), self.manifest.get("base", {})
        flat.update({"data.rows": str(data.get("rows", "")), "data.sha256": str(data.get("sha256", "")),
                     "base.fingerprint": str(base.get("fingerprint", "")), "base.profile": str(base.get("profile", "")),
                     "config_hash": str(self.manifest.get("config_hash", ""))})
        return flat


class Tracker(Protocol):
    def log_training(self, record: TrainingRecord) -> str | None:
        """Record a training run once (a second call for the same run changes nothing); returns its id."""

    def log_eval(self, domain: str, version: str, metrics: dict[str, float], dagster_run_id: str = "") -> bool:
        """Add the candidate's eval metrics to its training run; False when that run is not tracked."""

    def follow_serving(self, domain: str, weights: dict[str, float]) -> bool:
        """Point the registered model's `serving` alias at what the router serves; True when it moved."""


class NoTracker:
    """Tracking switched off: every call is accepted and recorded nowhere."""

    def log_training(self, record: TrainingRecord) -> str | None:
        return None

    def log_eval(self, domain: str, version: str, metrics: dict[str, float], dagster_run_id: str = "") -> bool:
        return False

    def follow_serving(self, domain: str, weights: dict[str, float]) -> bool:
        return False
