"""`seed` seeds LoRA's initialisation too (QLoRAConfig.seed promises data order, dropout and LoRA init):
peft draws the A matrices from the global generator before the Trainer seeds it, so without the
seeding in sft.add_lora two identical runs in one process started from different adapters."""
from __future__ import annotations

import json

from qlora.training.config import load_config
from tests.support.training import fast_config, toy_messages


def test_identical_runs_in_one_process_give_identical_losses_and_the_seed_changes_them(tiny_base, tmp_path):
    from qlora.training.runner import run_training

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in toy_messages(8)))
    curves = []
    for run, seed in enumerate((42, 42, 7)):
        config = load_config(fast_config(tmp_path / str(run), per_device_train_batch_size=2, max_steps=3, r=8,
                                         logging_steps=1, seed=seed))
        manifest = run_training(config, data, tmp_path / f"adapter-{run}", tiny_base)
        curves.append([loss for _, loss in manifest["metrics"]["loss_curve"]])
    assert len(curves[0]) == 3 and curves[0] == curves[1]
    assert curves[2][-1] != curves[0][-1]  # another seed: another LoRA init (B starts at 0: the same first losses)
