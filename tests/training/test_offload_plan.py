"""Activation offload in the planner: memory terms, throughput cost, the auto choice, the pinned-host
limit and `qlora plan`'s output (qlora/training/offload_model.py, memory.py, profile_choice.py)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlora.core.paths import REPO_ROOT
from qlora.training import offload_model
from qlora.training.calibration import load_calibration
from qlora.training.config import load_config
from qlora.training.memory import INFLIGHT_LAYERS, KNOWN_SHAPES, Setup, memory_terms
from qlora.training.profile_choice import choose, resolve_speed

CONFIGS = REPO_ROOT / "configs"
CALIBRATION = load_calibration(CONFIGS, "NVIDIA H200")
FAST_70B = load_config(CONFIGS / "qlora" / "llama3-70b-fast.yaml")
SHAPE_70B = KNOWN_SHAPES["llama-3.1-70b"]


def _terms(recomputed: int, offloaded: int, tokens: int = 4096) -> dict:
    return memory_terms(SHAPE_70B, Setup("fast", "fused", tokens, recomputed, offloaded_layers=offloaded))


@given(st.integers(0, 60), st.integers(1, 20))
@settings(max_examples=40, deadline=None)
def test_an_offloaded_layer_holds_nothing_on_the_gpu_but_the_copies_in_flight(recomputed, offloaded):
    layer = offload_model.kept_layer_bytes(SHAPE_70B, 4096)
    kept, moved = _terms(recomputed, 0), _terms(recomputed, offloaded)
    assert kept["activations"] - moved["activations"] == pytest.approx(offloaded * layer)
    live = 1 if recomputed == 0 else 0  # a restored layer in backward, unless a recomputed one is counted
    assert moved["in_flight"] == pytest.approx((min(offloaded, INFLIGHT_LAYERS) + live) * layer)
    assert kept["in_flight"] == 0


def test_copies_cost_nothing_beyond_kappa_while_the_compute_covers_them():
    model = {"d2h_gbps": 50.0, "h2d_gbps": 50.0, "kappa": {SHAPE_70B.name: 0.1}}
    a, b, work = 1.9, 0.87, 1.32  # the 70B 4,096-token fit; forward of all layers = b * work = 1.15 s
    layer_s = offload_model.kept_layer_bytes(SHAPE_70B, 4096) / 50e9
    few = offload_model.extra_seconds(SHAPE_70B, 4096, 10, 20, a, b, work, model)
    assert few == pytest.approx(0.1 * 20 * layer_s)  # 20 copies (0.48 s) inside a 1.15 s forward
    many = offload_model.extra_seconds(SHAPE_70B, 4096, 0, 80, a, b, work, model)
    assert many > 0.1 * 80 * layer_s + (80 * layer_s - b * work) * 0.99  # the forward no longer covers them
    assert offload_model.extra_seconds(SHAPE_70B, 4096, 0, 0, a, b, work, model) == 0.0


def test_auto_offloads_on_70b_at_75_gib_and_beats_recomputation_alone():
    choice = choose(FAST_70B, SHAPE_70B, CALIBRATION, 80.0, host_memory_gib=125.0)
    assert choice.fits and choice.predicted_peak_gib <= 75.0 and choice.offloaded_layers > 0
    assert choice.pinned_host_gib == pytest.approx(
        offload_model.pinned_host_gib(SHAPE_70B, 4096, choice.offloaded_layers, CALIBRATION["offload_model"]), abs=0.1)
    no_offload = FAST_70B.model_copy(update={"speed": FAST_70B.speed.model_copy(update={"offload_layers": 0})})
    alone = choose(no_offload, SHAPE_70B, CALIBRATION, 80.0, host_memory_gib=125.0)
    assert alone.offloaded_layers == 0 and alone.recomputed_layers > choice.recomputed_layers
    assert choice.predicted_tokens_per_second > alone.predicted_tokens_per_second
    resolved, _ = resolve_speed(FAST_70B, SHAPE_70B, CALIBRATION, 80.0, host_memory_gib=125.0)
    assert resolved.speed.offload_layers == choice.offloaded_layers


@pytest.mark.parametrize("host_gib", [8.0, 30.0, 60.0])
def test_auto_never_plans_more_pinned_memory_than_the_host_can_give(host_gib):
    choice = choose(FAST_70B, SHAPE_70B, CALIBRATION, 80.0, host_memory_gib=host_gib)
    assert choice.pinned_host_gib <= host_gib * offload_model.PINNED_FRACTION


def test_a_fixed_offload_the_host_cannot_pin_is_refused_naming_the_field():
    fixed = FAST_70B.model_copy(update={"per_device_train_batch_size": 1, "speed": FAST_70B.speed.model_copy(
        update={"offload_layers": 50, "checkpoint_layers": 10, "max_tokens_per_batch": 4096})})
    with pytest.raises(ValueError, match=r"speed.offload_layers: 50 layers need .* GiB of pinned host memory"):
        choose(fixed, SHAPE_70B, CALIBRATION, 80.0, host_memory_gib=32.0)
    assert choose(fixed, SHAPE_70B, CALIBRATION, 80.0, host_memory_gib=125.0).offloaded_layers == 50


def test_plan_prints_the_offload_count_and_pinned_memory_and_refuses_what_the_host_cannot_pin(tmp_path):
    import yaml

    from typer.testing import CliRunner

    from qlora.cli import app

    result = CliRunner().invoke(app, ["plan", "--config", str(CONFIGS / "qlora" / "llama3-70b-fast.yaml"),
                                      "--gpu-memory-gib", "80", "--host-memory-gib", "125"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("offload:"))
    assert "layers' activations to pinned host memory" in line and "(host 125 GiB)" in line
    raw = yaml.safe_load((CONFIGS / "qlora" / "llama3-70b-fast.yaml").read_text())
    raw["speed"].update({"offload_layers": 50, "checkpoint_layers": 10, "max_tokens_per_batch": 4096})
    raw["per_device_train_batch_size"] = 1
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(raw))
    refused = CliRunner().invoke(app, ["plan", "--config", str(tmp_path / "fixed.yaml"),
                                       "--gpu-memory-gib", "80", "--host-memory-gib", "32"])
    assert refused.exit_code == 2 and "speed.offload_layers: 50 layers need" in refused.output


def test_the_oom_ladder_recomputes_only_layers_that_are_not_offloaded():
    from qlora.training.fast.levers import layer_roles
    from qlora.training.oom import apply_settings, ladder_settings, next_rung

    config = FAST_70B.model_copy(update={"speed": FAST_70B.speed.model_copy(
        update={"max_tokens_per_batch": 4096, "checkpoint_layers": 4, "offload_layers": 53})})
    settings, records = ladder_settings(config), []
    while (step := next_rung(settings, has_speed=True, num_layers=80)) is not None:
        settings, record = step
        records.append(record)
        applied = apply_settings(config, settings)
        assert applied.speed.offload_layers == 53
        recomputed = applied.speed.checkpoint_layers
        roles = layer_roles(80, 80 - 53 if recomputed is None else recomputed, 53)  # never more than 80 layers
        assert roles.count("offload") == 53
    counts = [r["checkpoint_layers"] for r in records if r["rung"] == "recompute_more_layers"]
    assert counts[0] == [4, 16] and counts[-1][1] == 27


def test_host_memory_is_the_containers_limit_when_lower(tmp_path):
    limit = tmp_path / "memory.max"
    limit.write_text("%d\n" % (16 * 2**30))
    unlimited = tmp_path / "v1"
    unlimited.write_text("max\n")
    assert offload_model.host_memory_gib((str(limit), str(unlimited))) == pytest.approx(16.0)
    machine = offload_model.host_memory_gib((str(unlimited), str(tmp_path / "absent")))
    assert machine > 0 and machine == offload_model.host_memory_gib(())
