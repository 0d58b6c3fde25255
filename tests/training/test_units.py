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


def test_plan_counts_seed_trainable_params():
    from typer.testing import CliRunner

    from qlora.cli import app

    result = CliRunner().invoke(app, ["plan", "--config", str(SEED_CONFIG), "--rows", "10000", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output[result.output.index("{"):])
    assert plan["trainable_params"] == 167_772_160  # the seed's 83,886,080 is r=32's count
    assert plan["peak_memory_gib"]["total"] > 10 and plan["gpu_hours"] > 0 and plan["cost"]["usd"] > 0


def _ladder(settings: dict, has_speed: bool, layers: int | None) -> list[dict]:
    from qlora.training.oom import next_rung

    records = []
    while (found := next_rung(settings, has_speed, layers)) is not None:
        settings, record = found
        records.append(record)
    return records


def test_ladder_order_on_the_fast_path_same_math_first():
    settings = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "max_length": 4096, "r": 64,
                "lora_alpha": 128, "gradient_checkpointing": False, "checkpoint_layers": 2}
    records = _ladder(settings, has_speed=True, layers=32)
    names = [r["rung"] for r in records]
    assert names == ["recompute_more_layers"] * 5 + ["halve_micro_batch"] * 2 + ["max_length_2048", "rank_32"]
    counts = [r["checkpoint_layers"] for r in records if r["rung"] == "recompute_more_layers"]
    assert counts == [[2, 17], [17, 25], [25, 29], [29, 31], [31, 32]]  # half the kept layers each time
    math_changing = [r["changes_math"] for r in records]
    assert math_changing == sorted(math_changing)  # every same-math rung comes before any data-changing one
    batches = [r for r in records if r["rung"] == "halve_micro_batch"]
    assert all(r["per_device_train_batch_size"][0] * r["gradient_accumulation_steps"][0]
               == r["per_device_train_batch_size"][1] * r["gradient_accumulation_steps"][1] for r in batches)


@pytest.mark.parametrize("checkpoint, layers, first", [(None, 32, "halve_micro_batch"), (0, None, "recompute_more_layers")])
def test_ladder_skips_recomputation_when_all_layers_already_are(checkpoint, layers, first):
    settings = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 2048, "r": 16,
                "lora_alpha": 32, "gradient_checkpointing": False, "checkpoint_layers": checkpoint}
    records = _ladder(settings, has_speed=True, layers=layers)
    assert records[0]["rung"] == first and records[-1]["rung"] == "halve_micro_batch"


def test_seed_path_ladder_keeps_the_seed_rungs_when_checkpointing_is_on():
    settings = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 8, "max_length": 4096, "r": 64,
                "lora_alpha": 128, "gradient_checkpointing": True, "checkpoint_layers": None}
    names = [r["rung"] for r in _ladder(settings, has_speed=False, layers=32)]
    assert names == ["halve_micro_batch", "halve_micro_batch", "max_length_2048", "rank_32"]


def test_oom_ladder_recomputes_before_it_changes_the_data(tiny_base, tmp_path, monkeypatch):
    from qlora.training.runner import run_training

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in toy_messages(16)))
    config = load_config(fast_config(tmp_path, r=64, lora_alpha=128, per_device_train_batch_size=2,
                                     gradient_accumulation_steps=1, max_length=3000, max_steps=3))
    monkeypatch.setenv("QLORA_INJECT_OOM_AT_STEP", "2")
    monkeypatch.setenv("QLORA_INJECT_OOM_TIMES", "4")
    manifest = run_training(config, data, tmp_path / "adapter", tiny_base)
    rungs = manifest["oom_ladder"]
    assert [r["rung"] for r in rungs] == ["recompute_all_layers", "halve_micro_batch", "max_length_2048", "rank_32"]
    assert [r["changes_math"] for r in rungs] == [False, False, True, True]
    assert all(r["at_step"] == 2 for r in rungs)
    final = manifest["config"]
    assert final["gradient_checkpointing"]
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


def test_ladder_settings_round_trip_through_the_speed_block():
    from qlora.training.oom import apply_settings, ladder_settings, next_rung

    config = load_config(REPO_ROOT / "configs" / "qlora" / "llama3-8b-fast.yaml")
    config = config.model_copy(update={"speed": config.speed.model_copy(update={"max_tokens_per_batch": 8192,
                                                                                "checkpoint_layers": 30})})
    settings = ladder_settings(config)
    settings, first = next_rung(settings, has_speed=True, num_layers=32)
    settings, second = next_rung(settings, has_speed=True, num_layers=32)
    settings, third = next_rung(settings, has_speed=True, num_layers=32)
    assert [first["rung"], second["rung"], third["rung"]] == ["recompute_more_layers", "recompute_more_layers",
                                                              "halve_micro_batch"]
    applied = apply_settings(config, settings)
    assert applied.speed.checkpoint_layers is None  # all 32
    assert (applied.per_device_train_batch_size, applied.gradient_accumulation_steps) == (1, 32)
    assert applied.speed.max_tokens_per_batch == 4096 and applied.speed.fused_lora


def test_an_out_of_memory_attempt_leaves_no_frames_holding_the_model(tiny_base, tmp_path, monkeypatch):
    """The OOM that leaves an attempt must not carry the failed step's frames: on a GPU they hold the
    model and the activations, and the next rung would start out of memory (found on a 70B run)."""
    import torch

    from qlora.training.runner import _attempt
    from qlora.training.sft import read_messages_jsonl

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in toy_messages(8)))
    config = load_config(fast_config(tmp_path, per_device_train_batch_size=2, max_steps=3, r=16))
    monkeypatch.setenv("QLORA_INJECT_OOM_AT_STEP", "1")
    with pytest.raises(torch.OutOfMemoryError) as caught:
        _attempt(config, read_messages_jsonl(data), [], tiny_base, tmp_path / "ckpt", 0, log=lambda m: None)
    error = caught.value
    assert error.qlora_step == 1 and error.__context__ is None and error.__cause__ is None
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "_attempt" and "train" not in frames  # nothing below the attempt itself
