"""End to end on CPU: `qlora_adapter` trains through Dagster Pipes, resumes after a kill, and changes answers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from qlora.core.paths import REPO_ROOT, paths
from qlora_assets.training.assets import qlora_adapter
from qlora.core.warehouse import Warehouse
from resources.trainer import trainer_on_this_host
from resources.warehouse import WarehouseResource
from tests.support.training import domain_seed, fast_config, toy_messages, write_split


def materialise(domain: str, config: Path) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("domain", [domain])
        return dg.materialize(
            [qlora_adapter],
            instance=instance,
            partition_key=domain,
            resources={"trainer": trainer_on_this_host(config=str(config)), "warehouse": WarehouseResource()},
        )


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    write_split("toy-ship")
    config = fast_config(tmp_path_factory.mktemp("cfg"), max_steps=150)  # enough to learn the toy template
    result = materialise("toy-ship", config)
    metadata = result.asset_materializations_for_node("qlora_adapter")[0].metadata
    return result, metadata


def test_materialisation_trains_through_pipes_and_loss_falls(trained):
    result, metadata = trained
    assert result.success
    assert metadata["loss_last"].value < metadata["loss_first"].value
    assert metadata["trainable_params"].value > 0
    assert metadata["tokens_per_second"].value > 0 and metadata["peak_memory_gib"].value > 0
    assert metadata["cost_usd"].value == 0.0  # cost_instance: cpu
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "loss_finite_and_falling" and check.passed


def test_version_folder_manifest_and_warehouse_row(trained, tiny_base):
    result, metadata = trained
    version = metadata["version"].value
    # The version is the materialization's data version: what eval, gate and deploy follow.
    assert result.asset_materializations_for_node("qlora_adapter")[0].tags["dagster/data_version"] == version
    folder = paths().adapters / "toy-ship" / version
    assert {"adapter_model.safetensors", "adapter_config.json", "manifest.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "checkpoints").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    fingerprint = json.loads((tiny_base / "fingerprint.json").read_text())["fingerprint"]
    assert manifest["base"]["fingerprint"] == fingerprint
    assert manifest["data"]["rows"] == 48 and len(manifest["data"]["sha256"]) == 64
    assert manifest["version"] == version and manifest["domain"] == "toy-ship"
    rows = Warehouse(paths().warehouse).query("select * from adapters where domain = 'toy-ship'")
    assert list(rows["version"]) == [version] and rows["path"][0] == str(folder)


def test_adapter_loads_with_peft_and_changes_answers(trained, tiny_base):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, metadata = trained
    folder = paths().adapters / "toy-ship" / metadata["version"].value
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    prompt = toy_messages(1, seed=domain_seed("toy-ship"))[0][:1]  # a training prompt
    inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def answer(model) -> str:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    before = answer(base)
    after = answer(PeftModel.from_pretrained(base, folder))
    assert after != before
    assert "물류센터에서" in after and "물류센터에서" not in before  # the template the adapter learned


def test_killed_run_resumes_from_last_checkpoint_on_rematerialise(tiny_base, tmp_path):
    from qlora.modeling.base_model import read_fingerprint
    from qlora.training.config import load_config
    from qlora.training.publish import export_training_data, run_key

    domain = "toy-resume"
    write_split(domain)
    config_file = fast_config(tmp_path, max_steps=60, save_steps=10, logging_steps=10)
    # Start the same run the asset would start (same work folder), then kill it after a checkpoint.
    data = export_training_data(Warehouse(paths().warehouse), domain)
    key = run_key(data["data_version"], load_config(config_file).config_hash(), read_fingerprint("tiny")["fingerprint"])
    work = paths().home / "runs" / domain / key
    proc = subprocess.Popen(
        [sys.executable, "-m", "qlora.training.entrypoint", "--config", str(config_file),
         "--data", str(data["train"]), "--output", str(work), "--base", str(tiny_base)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    checkpoints = work / "checkpoints" / "attempt-0"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "manifest.json").exists()  # killed mid-way

    result = materialise(domain, config_file)
    metadata = result.asset_materializations_for_node("qlora_adapter")[0].metadata
    assert result.success
    assert 10 <= metadata["resumed_from_step"].value < 60
    manifest = json.loads((paths().adapters / domain / metadata["version"].value / "manifest.json").read_text())
    assert manifest["metrics"]["global_step"] == 60


def test_merge_reloads_base_in_bf16_and_matches_the_adapter(trained, tiny_base, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from qlora.cli import app

    _, metadata = trained
    folder = paths().adapters / "toy-ship" / metadata["version"].value
    result = CliRunner().invoke(app, ["merge", "--adapter", str(folder), "--output", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    ids = torch.tensor([[0, 2, 40, 41, 42, 3]])
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32), folder)
    with torch.no_grad():
        a, b = merged(ids).logits, unmerged(ids).logits
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert torch.allclose(a, b, atol=0.1)  # bf16 merge rounding only
