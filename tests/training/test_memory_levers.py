"""The memory model and planner know the three memory levers of the 8B lowmem profile:
speed.offload_eager_release, speed.embedding_on_host and speed.compact_gqa_saves."""
from __future__ import annotations

import pytest

from qlora.core.paths import REPO_ROOT
from qlora.training.calibration import load_calibration
from qlora.training.config import load_config
from qlora.training.memory import GIB, KNOWN_SHAPES, Setup, gqa_expansion_bytes_per_token, predict_peak_gib
from qlora.training.profile_choice import choose

CONFIGS = REPO_ROOT / "configs"
CALIBRATION = load_calibration(CONFIGS, "NVIDIA H200")
SHAPE = KNOWN_SHAPES["llama-3.1-8b"]
LEVERS = ("offload_eager_release", "embedding_on_host", "compact_gqa_saves")


def _setup(**changes) -> Setup:
    base = dict(recipe="fast", loss="fused", micro_batch_tokens=8192, recomputed_layers=0, offloaded_layers=12,
                recompute_inputs=True)
    return Setup(**{**base, **changes})


def _peak(**changes) -> float:
    return predict_peak_gib(SHAPE, _setup(**changes), CALIBRATION["memory_model"]["coefficients"])["total"]


def test_the_host_embedding_takes_one_bf16_table_off_the_gpu_unless_it_is_tied():
    assert _peak() - _peak(embedding_on_host=True) == pytest.approx(SHAPE.vocab * SHAPE.hidden * 2 / GIB, abs=0.02)
    tied = KNOWN_SHAPES["llama-3.2-1b"]
    setup = _setup(embedding_on_host=True)
    assert predict_peak_gib(tied, setup)["weights"] == predict_peak_gib(tied, _setup())["weights"]


def test_eager_release_counts_one_layer_in_flight_instead_of_four():
    kept_gib = 8192 * (4 * 4096 + 2 * 1024 + 2 * 14336) * 2 / GIB
    saved = _peak() - _peak(eager_release=True)
    assert saved == pytest.approx(3 * kept_gib * CALIBRATION["memory_model"]["coefficients"]["in_flight"], abs=0.02)


def test_compact_saves_take_the_kv_expansion_off_every_kept_layer():
    kept = SHAPE.layers - 12
    expansion_gib = 8192 * gqa_expansion_bytes_per_token(SHAPE) / GIB  # 96 MiB a layer at 8,192 tokens
    saved = _peak(eager_release=True) - _peak(eager_release=True, compact_kv=True)
    assert expansion_gib == pytest.approx(0.09375)
    assert saved == pytest.approx(expansion_gib * (kept + 1), abs=0.02)


def _lowmem(**levers):
    config = load_config(CONFIGS / "qlora" / "llama3-8b-lowmem.yaml")
    return config.model_copy(update={"speed": config.speed.model_copy(update=levers)})


def test_each_lever_lets_the_lowmem_choice_offload_fewer_layers_under_the_seed_peak():
    none = choose(_lowmem(**dict.fromkeys(LEVERS, False)), SHAPE, CALIBRATION, 140.4, host_memory_gib=125)
    counts = [none.offloaded_layers + none.recomputed_layers]
    for count in range(1, len(LEVERS) + 1):
        levers = {name: index < count for index, name in enumerate(LEVERS)}
        choice = choose(_lowmem(**levers), SHAPE, CALIBRATION, 140.4, host_memory_gib=125)
        assert choice.fits and choice.predicted_peak_gib <= 23.3
        counts.append(choice.offloaded_layers + choice.recomputed_layers)
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0] - 4


def test_the_entrypoint_trains_the_same_losses_with_the_three_levers_on(tiny_base, tmp_path, monkeypatch):
    """Through run_training (TRL, peft, the adapter save), one layer offloaded: the three levers on
    give the loss curve of the same run with them off (same math; their CPU paths)."""
    import json

    from qlora.training.fast import host_embedding, offload
    from qlora.training.runner import run_training
    from tests.support.training import fast_config, toy_messages

    moved, eager = [], []
    move, init = host_embedding.move_embedding_to_host, offload.ActivationOffloader.__init__
    monkeypatch.setattr(host_embedding, "move_embedding_to_host", lambda model: moved.append(move(model)))

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        eager.append(self.eager_release)
    monkeypatch.setattr(offload.ActivationOffloader, "__init__", spy_init)

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in toy_messages(8)))
    curves = {}
    for run, on in enumerate((False, True)):
        speed = {"packing": True, "fused_loss": True, "fused_lora": True, "lora_groups": True,
                 "recompute_lora_inputs": True, "fp32_upcast": False, "checkpoint_layers": 0, "offload_layers": 1,
                 **dict.fromkeys(LEVERS, on)}
        config = load_config(fast_config(tmp_path / str(run), per_device_train_batch_size=2, max_steps=3, r=8,
                                         logging_steps=1, speed=speed))
        manifest = run_training(config, data, tmp_path / f"adapter-{run}", tiny_base)
        assert all(manifest["config"]["speed"][name] is on for name in LEVERS)
        assert (tmp_path / f"adapter-{run}" / "adapter_model.safetensors").is_file()
        curves[on] = [loss for _, loss in manifest["metrics"]["loss_curve"]]
    assert len(curves[True]) == 3 and curves[True] == curves[False]
    assert len(moved) == 1 and isinstance(moved[0], host_embedding.HostEmbedding)  # the lever-on run only
    assert True in eager and False in eager
