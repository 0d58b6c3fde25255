"""The CI workflow calls `qlora` commands and options that exist, on the seed's trigger paths."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from qlora.cli import app

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "qlora-train-eval.yaml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def qlora_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for step in workflow()["jobs"]["train"]["steps"]:
        script = step.get("run", "").replace("\\\n", " ")
        for match in re.finditer(r"\.venv/bin/qlora ([^\n|;&)]+)", script):
            words = shlex.split(match.group(1))
            calls.append((words[0], [w for w in words[1:] if w.startswith("--")]))
    return calls


def test_the_seed_steps_are_all_there_in_order():
    commands = [command for command, _ in qlora_calls()]
    seed_steps = ["validate-data", "train", "evaluate", "quality-gate"]
    assert [c for c in commands if c in seed_steps] == seed_steps
    names = [step.get("name", "") for step in workflow()["jobs"]["train"]["steps"]]
    assert names.index("Quality gate check") < names.index("Upload adapter artifact")


def test_every_command_and_option_exists():
    runner = CliRunner()
    for command, options in qlora_calls():
        shown = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert shown.exit_code == 0, f"`qlora {command}` does not exist: {shown.output}"
        for option in options:
            assert option in shown.output, f"`qlora {command}` has no {option}"


def test_triggers_are_the_seeds_paths_and_the_gate():
    on = workflow()[True] if True in workflow() else workflow()["on"]  # YAML 1.1 reads `on` as true
    assert set(on["push"]["paths"]) >= {"data/training/**", "configs/qlora/**", "configs/quality_gate.yaml"}
