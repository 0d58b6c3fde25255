"""Shared fixtures. Every test session gets its own QLORA_HOME and DAGSTER_HOME in a temp dir."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Fixture modules shared by several test files (session-scoped fixtures are built once).
pytest_plugins = ["tests.serving_fixtures"]


@pytest.fixture(scope="session", autouse=True)
def qlora_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("qlora_home")
    os.environ["QLORA_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    (home / "dagster_home").mkdir()
    os.environ.setdefault("QLORA_DATA_DIR", str(REPO / "data"))
    return home


@pytest.fixture(scope="session")
def tiny_base(qlora_home) -> Path:
    """The tiny base model (profile `tiny`), built once per session under QLORA_HOME; returns its folder."""
    from qlora_assets.modeling.base_model import materialize_base

    record, _ = materialize_base("tiny")
    return Path(record["model_path"])
