"""The calibrated memory model, the shape-aware profile choice, the calibration fit and `qlora plan`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlora.core.paths import REPO_ROOT
from qlora.training.calibration import load_calibration, setup_of, shape_of
from qlora.training.calibration_fit import fit_memory_model
from qlora.training.config import load_config
from qlora.training.memory import GIB, KNOWN_SHAPES, Setup, memory_terms, predict_peak_gib
from qlora.training.profile_choice import choose, resolve_speed

CONFIGS = REPO_ROOT / "configs"
CALIBRATION = load_calibration(CONFIGS, "NVIDIA H200")
FAST = load_config(CONFIGS / "qlora" / "llama3-8b-fast.yaml")
FAST_70B = load_config(CONFIGS / "qlora" / "llama3-70b-fast.yaml")


def test_checked_in_calibration_predicts_every_measured_peak_within_2_5_gib():
    coefficients = CALIBRATION["memory_model"]["coefficients"]
    assert len(CALIBRATION["points"]) >= 20
    for point in CALIBRATION["points"]:
        predicted = predict_peak_gib(shape_of(point), setup_of(point), coefficients)["total"]
        assert abs(predicted - point["peak_allocated_gib"]) < 2.5, point["variant"]  # largest: 2.22 GiB over 43 points (seed-chunkedloss-full)


def test_known_shapes_count_the_measured_parameters_and_nf4_size():
    modules = list(KNOWN_SHAPES["llama-3.1-8b"].linear_shapes())
    assert KNOWN_SHAPES["llama-3.1-8b"].lora_params(64, modules) == 167_772_160
    assert KNOWN_SHAPES["llama-3.1-70b"].lora_params(64, modules) == 828_375_040  # the bench's count
    weights = memory_terms(KNOWN_SHAPES["llama-3.1-70b"], Setup("fast", "fused", 4096, 80))["weights"] / GIB
    assert weights == pytest.approx(36.91, abs=0.2)  # measured right after the layer-by-layer build


@pytest.mark.parametrize("budget", [55.0, 60.0, 75.0, 100.0, 130.0])
def test_choice_fits_the_budget_with_the_fewest_recomputed_layers(budget):
    config = FAST_70B.model_copy(update={"speed": FAST_70B.speed.model_copy(update={"memory_budget_gib": budget})})
    shape = KNOWN_SHAPES["llama-3.1-70b"]
    choice = choose(config, shape, CALIBRATION, gpu_memory_gib=141)
    assert choice.fits and choice.predicted_peak_gib <= budget
    from qlora.training.profile_choice import predict

    if choice.recomputed_layers > 0:  # one layer fewer recomputed at the same micro-batch would not fit
        fewer = predict(shape, config, choice.micro_batch_tokens, choice.recomputed_layers - 1, CALIBRATION)["total"]
        assert fewer > budget


def test_more_memory_never_means_more_recomputation():
    shape = KNOWN_SHAPES["llama-3.1-70b"]
    counts = []
    for budget in (60.0, 75.0, 90.0, 110.0, 130.0):
        config = FAST_70B.model_copy(update={"speed": FAST_70B.speed.model_copy(update={"memory_budget_gib": budget})})
        counts.append(choose(config, shape, CALIBRATION, 141).recomputed_layers)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_resolving_auto_keeps_the_tokens_per_update():
    resolved, choice = resolve_speed(FAST, KNOWN_SHAPES["llama-3.1-8b"], CALIBRATION, 80.0)
    before = FAST.per_device_train_batch_size * FAST.gradient_accumulation_steps * FAST.max_length
    after = resolved.per_device_train_batch_size * resolved.gradient_accumulation_steps * resolved.max_length
    assert before == after and resolved.per_device_train_batch_size * FAST.max_length == choice.micro_batch_tokens
    assert resolved.speed.checkpoint_layers == choice.recomputed_layers and not resolved.speed.is_auto


def test_nothing_fits_falls_back_to_the_smallest_peak_and_says_so():
    config = FAST_70B.model_copy(update={"speed": FAST_70B.speed.model_copy(update={"memory_budget_gib": 20.0})})
    choice = choose(config, KNOWN_SHAPES["llama-3.1-70b"], CALIBRATION, 141)
    assert not choice.fits and choice.recomputed_layers == 80 and choice.micro_batch_tokens == 4096


@settings(max_examples=25, deadline=None)
@given(act=st.floats(0.6, 1.5), loss=st.floats(0.5, 1.5), constant=st.floats(0.0, 3.0))
def test_fit_recovers_the_coefficients_it_was_generated_with(act, loss, constant):
    truth = {"activations": {"seed": 1.0, "fast": act}, "loss": {"full": loss, "chunked": 1.0, "fused": 1.0},
             "constant_gib": constant}
    points = []
    for shape in ("llama-3.1-8b", "llama-3.1-70b"):
        for tokens, recomputed in ((4096, 0), (8192, 10), (16384, 30)):
            setup = Setup("fast", "full", tokens, recomputed)
            total = predict_peak_gib(KNOWN_SHAPES[shape], setup, truth)["total"]
            points.append({"shape": shape, "recipe": "fast", "loss": "full", "micro_batch_tokens": tokens,
                           "recomputed_layers": recomputed, "peak_allocated_gib": total})
    fitted = fit_memory_model(points)
    assert fitted["coefficients"]["activations"]["fast"] == pytest.approx(act, abs=0.01)
    assert fitted["coefficients"]["loss"]["full"] == pytest.approx(loss, abs=0.02)
    assert fitted["max_abs_error_gib"] < 0.1


def _plan(*args: str) -> dict:
    from typer.testing import CliRunner

    from qlora.cli import app

    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


@pytest.mark.parametrize("model", ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b"])
def test_plan_knows_llama3_shapes_without_a_checkpoint(model):
    plan = _plan("--config", str(CONFIGS / "qlora" / "llama3-8b-fast.yaml"), "--model", model, "--gpu-memory-gib", "80")
    assert plan["shape"] == model and plan["choice"]["fits"] and plan["peak_memory_gib"]["total"] <= 75
    expected = "fitted" if model in ("llama-3.1-8b", "llama-3.1-70b") else "estimated"
    assert plan["throughput_basis"] in (expected, "measured") and plan["tokens_per_second"] > 0


def test_plan_reads_a_local_config_json(tmp_path):
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps({"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
                                       "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4}))
    plan = _plan("--config", str(CONFIGS / "qlora" / "llama3-8b-fast.yaml"), "--model", str(tmp_path))
    assert plan["shape"] == str(config_json) and plan["throughput_basis"] == "estimated"
    assert plan["trainable_params"] == 22 * 64 * (2048 * 2 * 2 + 2 * (2048 + 256) + 3 * (2048 + 5632))


def test_plan_measured_point_and_cost_table_beside_the_seed():
    plan = _plan("--config", str(CONFIGS / "qlora" / "llama3-8b.yaml"))
    assert plan["throughput_basis"] == "measured"  # the seed recipe was run through the entrypoint
    table = {(row["model"], row["method"]): row for row in plan["cost_table"]}
    assert table[("llama-3.1-70b", "QLoRA 4-bit")]["seed_usd"] == 29.0
    assert table[("llama-3.1-70b", "Full FT bf16")]["seed_usd_month"] == round(416 * 52 / 12)
    for row in table.values():
        assert row["platform_usd"] > 0 and row["platform_usd_month"] == pytest.approx(row["platform_usd"] * 52 / 12, rel=0.01)


def test_plan_rejects_an_unknown_model_naming_it():
    from typer.testing import CliRunner

    from qlora.cli import app

    result = CliRunner().invoke(app, ["plan", "--config", str(CONFIGS / "qlora" / "llama3-8b.yaml"), "--model", "gpt-9"])
    assert result.exit_code == 2 and "gpt-9" in result.output


def test_run_without_cuda_keeps_the_config_and_auto_means_all_layers(tiny_base):
    from qlora.training.runner import shape_aware

    config = FAST.model_copy(update={"base_profile": "tiny"})
    resolved, choice, shape = shape_aware(config, tiny_base, log=lambda message: None)
    assert choice is None and shape is not None and shape.layers == 2  # the tiny base's config.json was read
    assert resolved.speed.checkpoint_layers is None and resolved.speed.max_tokens_per_batch is None
    assert resolved.per_device_train_batch_size == FAST.per_device_train_batch_size


def test_input_recompute_shrinks_a_kept_layer_by_the_norm_outputs_and_swiglu_product():
    from qlora.training.memory import kept_layer_bytes_per_token

    shape = KNOWN_SHAPES["llama-3.1-8b"]
    d, kv, ff = shape.hidden, shape.kv_dim, shape.intermediate
    assert kept_layer_bytes_per_token(shape) - kept_layer_bytes_per_token(shape, "fast", True) == (2 * d + ff) * 2
    assert kept_layer_bytes_per_token(shape, "seed", True) == kept_layer_bytes_per_token(shape, "seed")  # peft's LoRA
    lean = Setup(recipe="fast", loss="fused", micro_batch_tokens=8192, recomputed_layers=4, recompute_inputs=True)
    plain = Setup(recipe="fast", loss="fused", micro_batch_tokens=8192, recomputed_layers=4)
    assert predict_peak_gib(shape, lean)["total"] < predict_peak_gib(shape, plain)["total"]


def test_lowmem_profile_with_input_recompute_moves_fewer_layers_under_the_seed_peak():
    config = load_config(CONFIGS / "qlora" / "llama3-8b-lowmem.yaml")
    without = config.model_copy(update={"speed": config.speed.model_copy(update={"recompute_lora_inputs": False})})
    shape = KNOWN_SHAPES["llama-3.1-8b"]
    lean = choose(config, shape, CALIBRATION, 140.4, host_memory_gib=125)
    plain = choose(without, shape, CALIBRATION, 140.4, host_memory_gib=125)
    assert lean.fits and lean.predicted_peak_gib <= 23.3
    assert lean.recomputed_layers + lean.offloaded_layers < plain.recomputed_layers + plain.offloaded_layers
