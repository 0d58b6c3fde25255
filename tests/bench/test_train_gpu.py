"""bench/train_gpu.py's CPU smoke run: the GPU benchmark's code paths (seed recipe, fast profile,
fused LoRA, learnable data) run on a 2-layer model, so the bench cannot rot between GPU sessions."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # four short training runs of the benchmark harness
def test_tiny_bench_runs_seed_and_fast_on_the_same_data(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.train_gpu import main

    monkeypatch.setattr(sys, "argv", ["train_gpu.py"])
    assert main(["--shape", "tiny", "--variants", "seed-full,fast-full,seed-learn,fast-learn", "--steps", "3",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train_gpu-tiny-1gpu.json").read_text())
    results = {r["variant"]: r for r in report["results"]}
    assert set(results) == {"seed-full", "fast-full", "seed-learn", "fast-learn"}
    for result in results.values():
        assert "error" not in result, result.get("error")
        assert result["steps"] == 3 and result["tokens_per_s"] > 0
        assert all(math.isfinite(loss) for loss in result["losses"])
    assert results["fast-full"]["speed"]["fused_lora"] and results["seed-full"]["speed"] == "seed"
    # Before the first update both see the same weights and rows: the same loss, up to bf16 vs fp32 casts.
    for data in ("full", "learn"):
        seed, fast = results[f"seed-{data}"]["losses"][0], results[f"fast-{data}"]["losses"][0]
        assert abs(seed - fast) / seed < 5e-3
    # The learnable rows give a loss that falls; uniform random rows barely move.
    assert results["seed-learn"]["losses"][-1] < results["seed-learn"]["losses"][0] - 0.02


def test_nf4_base_is_built_one_quantised_layer_at_a_time(monkeypatch):
    """When layer i is quantised, every later layer is still on the meta device: the bf16 model never
    exists whole (how the bench fits Llama-3.1-70B, 141 GB in bf16, on one GPU)."""
    monkeypatch.syspath_prepend(str(REPO))
    import torch

    from bench.train_gpu_model import TINY, build_nf4_llama

    seen = []

    def check(index: int, model) -> None:
        layers = model.model.layers
        assert all(type(getattr(layers[index].mlp, n)).__name__ == "Linear4bit" for n in ("gate_proj", "up_proj", "down_proj"))
        assert all(p.is_meta for later in layers[index + 1:] for p in later.parameters())
        seen.append(index)

    shape = dict(TINY, num_hidden_layers=3)
    model = build_nf4_llama(shape, "cpu", on_layer=check)
    assert seen == [0, 1, 2]
    assert all(type(getattr(layer.self_attn, name)).__name__ == "Linear4bit"
               for layer in model.model.layers for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert not any(p.is_meta for p in model.parameters())
    assert model.lm_head.weight.dtype == torch.bfloat16 and model.is_loaded_in_4bit
    ids = torch.randint(0, shape["vocab_size"], (1, 12))
    assert torch.isfinite(model(input_ids=ids, labels=ids).loss)
