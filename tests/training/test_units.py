"""Training config validation, the plan's parameter count, and the OOM ladder (with an injected OOM)."""
from __future__ import annotations

import json

import pytest
import yaml

from qlora.core.paths import REPO_ROOT
from qlora.training.config import ConfigError, QLoRAConfig, load_config, validate_config
from tests.support.training import fast_config, toy_messages

SEED_CONFIG = REPO_ROOT / "configs" / "qlora" / "llama3-8b.yaml"


def test_seed_config_holds_the_seed_settings():
    c = load_config(SEED_CONFIG)
    assert (c.bnb_4bit_quant_type, c.bnb_4bit_compute_dtype, c.bnb_4bit_use_double_quant) == ("nf4", "bfloat16", True)
    assert (c.r, c.lora_alpha, c.lora_dropout) == (64, 128, 0.05)
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (c.num_train_epochs, c.per_device_train_batch_size, c.gradient_accumulation_steps) == (3, 4, 8)
    assert (c.learning_rate, c.lr_scheduler_type, c.warmup_ratio, c.max_length) == (2e-4, "cosine", 0.03, 4096)
    assert c.gradient_checkpointing and not c.gradient_checkpointing_use_reentrant
    assert (c.optim, c.max_grad_norm, c.logging_steps, c.save_steps, c.eval_steps) == ("paged_adamw_8bit", 0.3, 10, 100, 100)


@pytest.mark.parametrize("override, field", [
    ({"r": 48}, "r"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"bnb_4bit_quant_type": "int3"}, "bnb_4bit_quant_type"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"lora_rank": 16}, "lora_rank"),  # unknown field: a typo must not pass silently
])
def test_invalid_config_fails_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        validate_config({**QLoRAConfig().model_dump(), **override}, "test.yaml")


def test_rank_above_serving_max_lora_rank_fails(tmp_path):
    config = fast_config(tmp_path, r=32, lora_alpha=64)
    (tmp_path / "configs" / "serving").mkdir(parents=True)
    (tmp_path / "configs" / "serving" / "vllm.yaml").write_text(yaml.safe_dump({"max_lora_rank": 16}))
    with pytest.raises(ConfigError, match=r"`r`.*max_lora_rank=16"):
        load_config(config)


def test_yaml_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("r: 16\nlora_alpha: [32\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+"):
        load_config(bad)


def test_plan_counts_seed_trainable_params_on_meta_device():
    from typer.testing import CliRunner

    from qlora.cli import app

    result = CliRunner().invoke(app, ["plan", "--config", str(SEED_CONFIG), "--rows", "10000", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output[result.output.index("{"):])
    assert plan["trainable_params"] == 167_772_160  # the seed's 83,886,080 is r=32's count
    assert plan["peak_memory_gib"]["total"] > 10 and plan["gpu_hours"] > 0 and plan["cost"]["usd"] > 0


def test_oom_ladder_applies_the_seed_rungs_in_order(tiny_base, tmp_path, monkeypatch):
    from qlora.training.runner import run_training

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in toy_messages(16)))
    config = load_config(fast_config(tmp_path, r=64, lora_alpha=128, per_device_train_batch_size=2,
                                     gradient_accumulation_steps=1, max_length=3000, max_steps=3))
    monkeypatch.setenv("QLORA_INJECT_OOM_AT_STEP", "2")
    monkeypatch.setenv("QLORA_INJECT_OOM_TIMES", "3")
    manifest = run_training(config, data, tmp_path / "adapter", tiny_base)
    assert [r["rung"] for r in manifest["oom_ladder"]] == ["halve_batch", "max_length_2048", "rank_32"]
    assert all(r["at_step"] == 2 for r in manifest["oom_ladder"])
    final = manifest["config"]
    assert (final["per_device_train_batch_size"], final["gradient_accumulation_steps"]) == (1, 2)
    assert (final["max_length"], final["r"], final["lora_alpha"]) == (2048, 32, 64)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 32


def test_oom_ladder_exhausted_fails_clearly(tiny_base, tmp_path, monkeypatch):
    from qlora.training.runner import run_training

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in toy_messages(8)))
    config = load_config(fast_config(tmp_path, per_device_train_batch_size=1, max_steps=2, r=16))
    monkeypatch.setenv("QLORA_INJECT_OOM_AT_STEP", "1")
    monkeypatch.setenv("QLORA_INJECT_OOM_TIMES", "9")
    with pytest.raises(RuntimeError, match="OOM ladder is exhausted"):
        run_training(config, data, tmp_path / "adapter", tiny_base)


def test_bad_training_row_names_file_line_and_field(tmp_path):
    from qlora.training.sft import read_messages_jsonl

    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"messages": toy_messages(1)[0]}) + "\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl line 2: field `messages`"):
        read_messages_jsonl(data)
