"""A user's mistake gets one message naming what and where, an exit code, and no traceback."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qlora.cli import app
from qlora.cli_errors import EXIT_INPUT, EXIT_UNREACHABLE

runner = CliRunner()

RESULTS = {"domain": "legal-ko", "adapter_version": "v1", "models": {}}


def run(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


@pytest.fixture()
def configs(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "quality_gate.yaml").write_text("gates:\n  rouge_l: {min: 0.5}\n")
    (folder / "typo_gate.yaml").write_text("gates:\n  rouge_l: {minn: 0.5}\n")
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(folder))
    monkeypatch.delenv("QLORA_QUALITY_GATE", raising=False)
    return folder


def test_a_config_typo_names_file_and_field(configs, tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    shown = run("quality-gate", "--results", str(results), "--gates", "typo_gate.yaml")
    assert shown.exit_code == EXIT_INPUT
    assert "typo_gate.yaml" in shown.output and "minn" in shown.output


def test_gates_default_to_qlora_quality_gate_under_the_config_dir_from_any_directory(configs, tmp_path,
                                                                                      monkeypatch):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULTS))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("QLORA_QUALITY_GATE", "typo_gate.yaml")
    shown = run("quality-gate", "--results", str(results))
    assert shown.exit_code == EXIT_INPUT and str(configs / "typo_gate.yaml") in shown.output


def test_a_missing_user_path_is_one_line_with_what_to_do(configs, tmp_path):
    shown = run("quality-gate", "--results", str(tmp_path / "nope.json"))
    assert shown.exit_code == EXIT_INPUT and "nope.json" in shown.output
    assert len(shown.output.strip().splitlines()) <= 3


def test_no_router_is_exit_4_with_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_HOME", str(tmp_path / "home"))
    shown = run("chat", "--domain", "legal-ko")
    assert shown.exit_code == EXIT_UNREACHABLE and "qlora serve" in shown.output


def test_programming_errors_still_raise(monkeypatch):
    """Only the project's user errors are reported plainly; a bug keeps its traceback."""
    import qlora.ops.cli as ops_cli

    def broken(*_, **__):
        raise KeyError("bug")

    monkeypatch.setattr("qlora.ops.status.domain_statuses", broken)
    result = runner.invoke(app, ["status"])
    assert isinstance(result.exception, KeyError) and ops_cli is not None
