"""The code location loads, and the asset graph is the one the design card names."""
import subprocess
import sys

import dagster as dg
import pytest

from definitions import defs

EXPECTED_ASSETS = {
    "base_model",
    "raw_instructions",
    "cleaned_dataset",
    "train_eval_split",
    "qlora_adapter",
    "eval_report",
    "gate_decision",
    "deployed_adapter",
    "ab_experiment",
    "online_report",
    "ab_decision",
    "ab_feedback_candidates",
    "cost_report",
}


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_asset_keys_are_the_design_cards():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == EXPECTED_ASSETS


def test_lineage_runs_from_raw_file_to_serving_adapter():
    graph = defs.resolve_asset_graph()
    chain = ["raw_instructions", "cleaned_dataset", "train_eval_split", "qlora_adapter",
             "eval_report", "gate_decision", "deployed_adapter"]
    for upstream, downstream in zip(chain, chain[1:]):
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, f"{downstream} should depend on {upstream}"


@pytest.mark.slow  # the dagster CLI in a subprocess: tens of seconds on 2 busy cores
def test_dagster_cli_validates_the_workspace(tmp_path):
    dagster = [sys.executable, "-m", "dagster"]
    done = subprocess.run(
        [*dagster, "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True, text=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert done.returncode == 0, done.stdout + done.stderr
