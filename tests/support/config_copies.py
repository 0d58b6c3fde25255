"""Copies of the repo's configs for tests that exercise wiring, not adapter quality.

Such a test trains a few steps and opens the quality gate: the gate still runs and records its
decision, so the deploy that follows is the real path; the gate's thresholds and the adapters'
quality have tests of their own (tests/evaluation/test_gate_integration.py, tests/e2e).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import yaml

GATE_FILES = ("quality_gate.yaml", "quality_gate.demo.yaml")


def edit_yaml(path: Path, edit: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    edit(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def shorten_training(configs: Path, profile: str, steps: int) -> None:
    """``steps`` optimiser steps, the loss logged as four averages: the training asset's blocking
    check compares the first logged loss with the last, and single steps of a base pretrained on
    this data are too noisy for that."""
    def short(settings: dict) -> None:
        settings.update(max_steps=steps, logging_steps=max(steps // 4, 1), save_steps=10 * steps,
                        eval_steps=10 * steps)

    edit_yaml(configs / "qlora" / f"{profile}.yaml", short)


def open_gates(configs: Path) -> None:
    """Every gate file passes anything measured (an unmeasured metric still blocks)."""
    def open_gate(gate: dict) -> None:
        for rule in gate.get("gates", {}).values():
            if "min" in rule:
                rule["min"] = 0.0
            if "max" in rule:
                rule["max"] = 1e9
        gate.get("regression", {})["tolerance"] = 1e9

    for name in GATE_FILES:
        edit_yaml(configs / name, open_gate)
