"""The whole cycle on the real base, SmolLM2-135M-Instruct (profile smollm2-135m), for one domain.

Few training steps and a small held-out eval set, through the same assets, resources and
embedded server as the demo. What a real instruct base shows and the tiny one cannot: it
answers the harmful requests (no refusal), so the gate blocks the base for safety; the adapter,
trained on rows that include refusals, improves ROUGE-L over the base on held-out rows.
About 8 minutes of set-up inside the two-worker suite (docs/benchmarks.md, "Test suite"):
conversion, 20 NF4 LoRA steps, two eval passes.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from qlora.core.warehouse import Warehouse
from qlora.evaluation.config import load_gate_config
from qlora.evaluation.decisions import latest_eval_results
from qlora.evaluation.gate import decide
from qlora_assets.data.assets import cleaned_dataset, raw_instructions, train_eval_split
from qlora_assets.evaluation.assets import EvalRunConfig, eval_report, gate_decision
from qlora_assets.modeling.assets import base_model
from qlora_assets.training.assets import qlora_adapter
from resources.base_model import BaseModelResource
from resources.serving import EmbeddedServingResource
from resources.trainer import trainer_on_this_host
from resources.warehouse import WarehouseResource

# ~8 min inside the two-worker suite; the session's 900 s default is too tight for a loaded shared machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "legal-ko"
STEPS = 20
EVAL_ROWS = {"explain": 5, "json": 5, "refuse": 5}  # held-out rows; 5 per gate, as eval_rows_cover_gates asks


def _small_eval_set(source: Path, target: Path) -> None:
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    kinds = {"refuse": [r for r in rows if r.get("should_refuse")],
             "json": [r for r in rows if r.get("expected_format") == "json"],
             "explain": [r for r in rows if not r.get("should_refuse") and r.get("expected_format") != "json"]}
    kept = [row for kind, n in EVAL_ROWS.items() for row in kinds[kind][:n]]
    target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2_cycle")
    shutil.copytree(REPO / "data", root / "data")
    _small_eval_set(REPO / "data" / "eval" / f"{DOMAIN}.jsonl", root / "data" / "eval" / f"{DOMAIN}.jsonl")
    train_config = yaml.safe_load((REPO / "configs" / "qlora" / "smollm2-135m-cpu.yaml").read_text())
    (root / "configs" / "qlora").mkdir(parents=True)
    # No in-training eval pass: the cycle's own eval measures the adapter, and the Trainer's pass
    # over the held-out rows at step 20 cost ~30 s of a loaded core.
    (root / "configs" / "qlora" / "e2e.yaml").write_text(yaml.safe_dump(
        {**train_config, "max_steps": STEPS, "eval_steps": 10 * STEPS}))
    eval_settings = yaml.safe_load((REPO / "configs" / "eval.yaml").read_text())
    (root / "eval.yaml").write_text(yaml.safe_dump({**eval_settings, "max_tokens": 64, "max_tokens_by_base": {}}, allow_unicode=True))
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        mp.setenv("QLORA_HOME", str(root / "home"))
        mp.setenv("QLORA_DATA_DIR", str(root / "data"))
        mp.setenv("QLORA_BASE_PROFILE", "smollm2-135m")  # the one switch; the server subprocess inherits it
        serving = EmbeddedServingResource(timeout_s=600)  # NF4 decoding on CPU is slow offline (docs/base-models.md)
        base = dg.materialize([base_model], instance=instance,
                              resources={"base_checkpoint": BaseModelResource(measure_quantization_gap=False)})
        instance.add_dynamic_partitions("domain", [DOMAIN])
        settings = EvalRunConfig(eval_settings_file=str(root / "eval.yaml"))
        run = dg.materialize(
            [raw_instructions, cleaned_dataset, train_eval_split, qlora_adapter, eval_report, gate_decision],
            partition_key=DOMAIN, instance=instance, raise_on_error=False,
            resources={"warehouse": WarehouseResource(), "serving": serving,
                       "trainer": trainer_on_this_host(str(root / "configs" / "qlora" / "e2e.yaml"))},
            run_config=dg.RunConfig(ops={"eval_report": settings, "gate_decision": settings}),
        )
        try:
            yield base, run, latest_eval_results(Warehouse(root / "home" / "warehouse.duckdb"), DOMAIN)
        finally:
            serving.stop()


def test_real_base_is_converted_and_its_tokenizer_counts_the_cleaned_rows(cycle):
    base, run, _ = cycle
    metadata = base.asset_materializations_for_node("base_model")[0].metadata
    assert metadata["profile"].value == "smollm2-135m"
    assert metadata["parameters"].value == 134_515_008
    assert metadata["chat_template"].value == "chatml"
    assert all(e.passed for e in base.get_asset_check_evaluations())
    cleaned = run.asset_materializations_for_node("cleaned_dataset")[0].metadata
    assert "base_models/smollm2-135m" in cleaned["tokenizer"].value
    assert cleaned["base_fingerprint"].value == metadata["fingerprint"].value


def _failures(run) -> str:
    """What failed in the run, step by step (the assertion message of a broken cycle)."""
    return "; ".join(f"{e.step_key}: {getattr(e.event_specific_data, 'error', None) and e.event_specific_data.error.message}"
                     for e in run.all_events if e.is_step_failure) or "eval_report did not run"


def test_gate_blocks_the_real_base_for_safety(cycle):
    _, run, results = cycle
    assert results is not None, _failures(run)
    base_as_candidate = dataclasses.replace(results, reports={"candidate": results.reports["base"]})
    verdict = decide(base_as_candidate, load_gate_config(REPO / "configs" / "quality_gate.demo.yaml"))
    assert "safety_refusal" in verdict.blocked_gates, verdict.summary()


def test_adapter_improves_rouge_l_and_refusals_over_the_base_on_held_out_rows(cycle):
    _, run, results = cycle
    assert results.metric("candidate", "rouge_l") > results.metric("base", "rouge_l"), results.markdown_table()
    assert results.metric("candidate", "safety_refusal") > results.metric("base", "safety_refusal"), results.markdown_table()
    adapter = run.asset_materializations_for_node("qlora_adapter")[0].metadata
    assert adapter["base_fingerprint"].value == cycle[0].asset_materializations_for_node("base_model")[0].metadata[
        "fingerprint"].value
