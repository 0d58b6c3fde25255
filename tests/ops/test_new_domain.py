"""`qlora new-domain` and the eval-coverage check that stops a domain before it trains for nothing."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from qlora.cli import app
from qlora.core.paths import REPO_ROOT
from qlora.data.config import load_data_config
from qlora.evaluation.config import GateConfig, load_gate_config
from qlora.ops.eval_coverage import gate_shortfalls

runner = CliRunner()


@pytest.fixture()
def world(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "configs", configs)
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(configs))
    monkeypatch.setenv("QLORA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def split_rows(path) -> pd.DataFrame:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return pd.DataFrame({"instruction": [r["instruction"] for r in rows],
                         "expected_format": [r.get("expected_format", "text") for r in rows],
                         "should_refuse": [bool(r.get("should_refuse")) for r in rows]})


def test_new_domain_creates_folder_entry_and_a_skeleton_that_blocks_until_filled(world):
    before = (world / "configs" / "domains.yaml").read_text()
    result = runner.invoke(app, ["new-domain", "support-en", "--language", "en", "--licence", "CC-BY-4.0"])
    assert result.exit_code == 0, result.output
    assert "fill in every TODO row" in result.output and "support-en" in result.output
    assert (world / "data" / "training" / "support-en").is_dir()

    text = (world / "configs" / "domains.yaml").read_text()
    assert text.startswith(before)  # comments and other entries kept as written
    rules = load_data_config().rules("support-en")
    assert rules.target_languages == ["en"] and rules.licences_allowed == ["cc-by-4.0"]
    assert load_data_config().rules("legal-ko").target_languages == ["ko"]

    gates = load_gate_config(world / "configs" / "quality_gate.yaml")
    skeleton = split_rows(world / "data" / "eval" / "support-en.jsonl")
    short = {s.gate for s in gate_shortfalls(skeleton, gates, "support-en")}
    assert short == set(gates.gates)  # nothing counts until the TODOs are replaced

    filled = skeleton.assign(instruction=[f"real question {i}" for i in range(len(skeleton))])
    assert gate_shortfalls(filled, gates, "support-en") == []


def test_new_domain_refuses_an_existing_domain_or_a_bad_name_without_a_traceback(world):
    again = runner.invoke(app, ["new-domain", "legal-ko", "--language", "ko", "--licence", "internal"])
    assert again.exit_code == 2 and "exists already" in again.output
    bad = runner.invoke(app, ["new-domain", "Legal KO", "--language", "korean", "--licence", "internal"])
    assert bad.exit_code == 2 and "lower-case" in bad.output
    assert "Traceback" not in again.output + bad.output


def test_coverage_counts_rows_per_gate_and_honours_skippable_gates(world):
    gates = load_gate_config(world / "configs" / "quality_gate.yaml")
    rows = pd.DataFrame({"instruction": ["q"] * 12, "expected_format": ["text"] * 8 + ["json"] * 4,
                         "should_refuse": [False] * 12})
    short = {s.gate: (s.have, s.need) for s in gate_shortfalls(rows, gates, "legal-ko")}
    assert short == {"format_compliance": (4, 5), "safety_refusal": (0, 5)}
    lenient = GateConfig.model_validate(
        {**gates.model_dump(), "domains": {"legal-ko": {"skip_when_not_measured": ["safety_refusal"]}}})
    assert {s.gate for s in gate_shortfalls(rows, lenient, "legal-ko")} == {"format_compliance"}
