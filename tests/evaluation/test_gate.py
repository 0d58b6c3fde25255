"""Gate units: thresholds, not-measured blocks, allowed skips, regression vs deployed, config errors, CLI."""
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from qlora.evaluation.config import ConfigError, load_gate_config
from qlora.evaluation.gate import decide
from qlora.evaluation.metrics import NotMeasured
from qlora.evaluation.results import EvalResults, ModelReport

REPO = Path(__file__).resolve().parents[2]
GOOD = {
    "rouge_l": 0.8,
    "format_compliance": 1.0,
    "safety_refusal": 1.0,
    "latency_p50_ms": 120.0,
    "latency_p95_ms": 300.0,
    "latency_p99_ms": 400.0,
    "throughput_tokens_per_sec": 120.0,
    "request_error_rate": 0.0,
}


def _results(candidate: dict, deployed: dict | None = None, domain="legal-ko") -> EvalResults:
    reports = {"candidate": ModelReport("candidate", f"{domain}@staging-v2", dict(GOOD, **candidate), 10, 1.0)}
    reports["base"] = ModelReport("base", "base", dict(GOOD, rouge_l=0.1), 10, 1.0)
    if deployed is not None:
        reports["deployed"] = ModelReport("deployed", f"{domain}@v1", dict(GOOD, **deployed), 10, 1.0)
    return EvalResults(domain, "v2", "eval.jsonl", 4, reports, deployed_model=f"{domain}@v1" if deployed else None)


@pytest.fixture(scope="module")
def seed_gates():
    return load_gate_config(REPO / "configs" / "quality_gate.yaml")


def test_seed_gates_are_loaded_exactly(seed_gates):
    assert {n: (g.min, g.max) for n, g in seed_gates.gates.items()} == {
        "rouge_l": (0.65, None),
        "format_compliance": (0.95, None),
        "safety_refusal": (0.98, None),
        "latency_p95_ms": (None, 500),
        "throughput_tokens_per_sec": (50, None),
    }


def test_good_candidate_passes_and_every_gate_is_listed(seed_gates):
    decision = decide(_results({}), seed_gates)
    assert decision.passed
    gates = {v.gate: v for v in decision.verdicts}
    assert set(gates) == set(seed_gates.gates) | {"no_regression"}
    assert gates["no_regression"].verdict == "skipped"  # nothing deployed yet
    assert gates["rouge_l"].value == 0.8 and gates["rouge_l"].threshold == ">= 0.65"


def test_zero_rate_blocks(seed_gates):
    decision = decide(_results({"safety_refusal": 0.0}), seed_gates)
    assert decision.blocked_gates == ["safety_refusal"]
    assert "safety alignment" in decision.verdicts[2].reason


def test_latency_above_max_blocks(seed_gates):
    assert decide(_results({"latency_p95_ms": 501.0}), seed_gates).blocked_gates == ["latency_p95_ms"]


def test_not_measured_blocks_with_reason(seed_gates):
    decision = decide(_results({"format_compliance": NotMeasured("no rows with expected_format: json in the eval set")}), seed_gates)
    assert not decision.passed
    verdict = next(v for v in decision.verdicts if v.gate == "format_compliance")
    assert verdict.verdict == "block" and verdict.value is None and "expected_format: json" in verdict.reason


def test_not_measured_may_be_skipped_for_a_listed_domain_only(tmp_path, seed_gates):
    raw = yaml.safe_load((REPO / "configs" / "quality_gate.yaml").read_text())
    raw["domains"] = {"legal-ko": {"skip_when_not_measured": ["format_compliance"]}}
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    config = load_gate_config(path)
    missing = {"format_compliance": NotMeasured("no json rows")}
    legal = decide(_results(missing, domain="legal-ko"), config)
    assert legal.passed and {v.gate: v.verdict for v in legal.verdicts}["format_compliance"] == "skipped"
    assert decide(_results(missing, domain="medical-ko"), config).blocked_gates == ["format_compliance"]


def test_regression_against_deployed_blocks_beyond_tolerance(seed_gates):
    within = decide(_results({"rouge_l": 0.79}, deployed={"rouge_l": 0.80}), seed_gates)
    assert within.passed
    worse = decide(_results({"rouge_l": 0.70}, deployed={"rouge_l": 0.80}), seed_gates)
    assert worse.blocked_gates == ["no_regression.rouge_l"]
    assert "legal-ko@v1" in next(v for v in worse.verdicts if v.gate == "no_regression.rouge_l").reason


def test_regression_blocks_when_deployed_metric_was_not_measured(seed_gates):
    decision = decide(_results({}, deployed={"safety_refusal": NotMeasured("no request completed")}), seed_gates)
    assert decision.blocked_gates == ["no_regression.safety_refusal"]


@pytest.mark.parametrize(
    "gates, field",
    [
        ({"rouge_l": {"min": 0.6, "max": 0.9}}, "gates.rouge_l"),
        ({"rouge_score": {"min": 0.6}}, "rouge_score"),
        ({"rouge_l": {"minimum": 0.6}}, "gates.rouge_l.minimum"),
    ],
)
def test_bad_gate_config_names_file_and_field(tmp_path, gates, field):
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump({"gates": gates}))
    with pytest.raises(ConfigError) as err:
        load_gate_config(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_results_round_trip_keeps_not_measured(tmp_path):
    original = _results({"format_compliance": NotMeasured("no json rows"), "safety_refusal": 0.0})
    loaded = EvalResults.read(original.write(tmp_path / "r.json"))
    assert loaded.metric("candidate", "safety_refusal") == 0.0
    assert loaded.metric("candidate", "format_compliance") == NotMeasured("no json rows")
    assert "not measured (no json rows)" in loaded.markdown_table()
    frame = loaded.warehouse_frame()
    row = frame[(frame.model_role == "candidate") & (frame.metric == "format_compliance")].iloc[0]
    assert not row.measured and row.reason == "no json rows"


def test_quality_gate_cli_exit_codes(tmp_path):
    from qlora.cli import app

    gates = str(REPO / "configs" / "quality_gate.yaml")
    good = _results({}).write(tmp_path / "good.json")
    bad = _results({"rouge_l": 0.1, "format_compliance": NotMeasured("no json rows")}).write(tmp_path / "bad.json")
    runner = CliRunner()
    passed = runner.invoke(app, ["quality-gate", "--results", str(good), "--gates", gates])
    assert passed.exit_code == 0, passed.output
    blocked = runner.invoke(app, ["quality-gate", "--results", str(bad), "--gates", gates, "--json"])
    assert blocked.exit_code == 1
    decision = json.loads(blocked.stdout)
    assert decision["blocked_gates"] == ["rouge_l", "format_compliance"]
    broken = runner.invoke(app, ["quality-gate", "--results", str(tmp_path / "missing.json"), "--gates", gates])
    assert broken.exit_code == 2 and "missing.json" in broken.output
