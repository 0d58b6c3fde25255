"""Where things live. Every path comes from environment variables with a repo-relative default.

QLORA_HOME      artifacts, base models, adapters, the DuckDB warehouse (default ``.qlora/``)
QLORA_DATA_DIR  raw training data and eval sets (default ``data/``)
QLORA_CONFIG_DIR YAML configs (default ``configs/`` of this repo)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Paths:
    home: Path
    data_dir: Path
    config_dir: Path

    @property
    def training_dir(self) -> Path:
        return self.data_dir / "training"

    @property
    def eval_dir(self) -> Path:
        return self.data_dir / "eval"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def base_models(self) -> Path:
        return self.home / "base_models"

    @property
    def adapters(self) -> Path:
        return self.home / "artifacts" / "adapters"

    @property
    def serving_state(self) -> Path:
        return self.home / "serving"


def paths() -> Paths:
    """Resolve paths now (not at import) so tests can point QLORA_HOME at a temp dir."""
    return Paths(
        home=Path(os.environ.get("QLORA_HOME", REPO_ROOT / ".qlora")).resolve(),
        data_dir=Path(os.environ.get("QLORA_DATA_DIR", REPO_ROOT / "data")).resolve(),
        config_dir=Path(os.environ.get("QLORA_CONFIG_DIR", REPO_ROOT / "configs")).resolve(),
    )


def discover_domains(training_dir: Path | None = None) -> list[str]:
    """A domain is a folder under data/training/ (a new folder adds a partition)."""
    root = training_dir or paths().training_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
