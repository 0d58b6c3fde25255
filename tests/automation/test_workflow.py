"""The CI workflow calls `qlora` commands and options that exist, on the seed's trigger paths, for every
domain any commit of a push touched."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
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


def test_train_job_sets_the_variables_the_platform_reads():
    env = workflow()["jobs"]["train"]["env"]
    assert env["QLORA_PROFILE"] == "prod" and "QLORA_BASE_MODEL_PATH" in env
    scripts = "\n".join(step.get("run", "") for step in workflow()["jobs"]["train"]["steps"])
    assert not re.search(r"(?<!QLORA_)BASE_MODEL_PATH", scripts + "\n".join(env))  # a name nothing reads


# --- changed-domain detection: the plan job's script, run on a scratch repository -------------------

ZEROS = "0" * 40


def pick_step() -> dict:
    return next(s for s in workflow()["jobs"]["plan"]["steps"] if s.get("id") == "pick")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo), "PATH": os.environ["PATH"]})
    return done.stdout.strip()


def commit(repo: Path, *files: str) -> str:
    for name in files:
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.read_text() + "x\n" if path.exists() else "x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "change " + " ".join(files))
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, *(f"data/training/{d}/rows.jsonl" for d in ("cs-support", "legal-ko", "medical-ko")),
           "configs/qlora/tiny-cpu.yaml")
    return tmp_path


def picked(repo: Path, **env: str) -> list[str]:
    """Run the pick step's script as the runner would (its env block's names, set here by hand)."""
    step = pick_step()
    assert set(env) <= set(step["env"]), f"the step does not pass {set(env) - set(step['env'])}"
    output = repo / "github_output"
    output.write_text("")
    full = {name: "" for name in step["env"]} | env
    subprocess.run(["bash", "-c", step["run"]], cwd=repo, check=True, capture_output=True, text=True,
                   env={**full, "GITHUB_OUTPUT": str(output), "PATH": os.environ["PATH"], "HOME": str(repo)})
    line = output.read_text().strip()
    assert line.startswith("domains=")
    return json.loads(line.split("=", 1)[1])


def test_a_push_of_several_commits_retrains_every_domain_any_of_them_touched(repo):
    before = git(repo, "rev-parse", "HEAD")
    commit(repo, "data/training/legal-ko/rows.jsonl")
    after = commit(repo, "data/eval/cs-support.jsonl")  # HEAD~1..HEAD alone would miss legal-ko
    assert picked(repo, EVENT_NAME="push", BEFORE=before, AFTER=after) == ["cs-support", "legal-ko"]


def test_a_config_change_anywhere_in_the_push_retrains_all(repo):
    before = git(repo, "rev-parse", "HEAD")
    commit(repo, "configs/qlora/tiny-cpu.yaml")
    after = commit(repo, "data/training/legal-ko/rows.jsonl")
    assert picked(repo, EVENT_NAME="push", BEFORE=before, AFTER=after) == ["cs-support", "legal-ko", "medical-ko"]


def test_a_new_branch_is_compared_with_where_it_left_the_default_branch(repo):
    git(repo, "update-ref", "refs/remotes/origin/main", git(repo, "rev-parse", "HEAD"))
    git(repo, "checkout", "-qb", "feature")
    commit(repo, "data/training/medical-ko/rows.jsonl")
    after = commit(repo, "README.md")
    assert picked(repo, EVENT_NAME="push", BEFORE=ZEROS, AFTER=after, DEFAULT_BRANCH="main") == ["medical-ko"]


def test_an_unknown_before_commit_retrains_all_and_dispatch_keeps_existing_domains(repo):
    after = commit(repo, "README.md")
    assert picked(repo, EVENT_NAME="push", BEFORE="1" * 40, AFTER=after) == ["cs-support", "legal-ko", "medical-ko"]
    assert picked(repo, EVENT_NAME="workflow_dispatch", INPUT_DOMAINS="legal-ko gone-ko") == ["legal-ko"]
