"""Train one adapter end to end: resume, the OOM ladder, timing, cost, and the manifest.

``output_dir`` holds ``checkpoints/`` and ``ladder.json`` while a run is in
progress, so running again with the same output resumes from the last
checkpoint. ``manifest.json`` is written last: a folder that has one is a
finished adapter and is never trained over.
"""
from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import resource
import shutil
import time
from pathlib import Path

import torch
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from qlora.modeling.tiny_base import limit_threads_when_busy
from qlora.core.paths import paths
from qlora.training import sft
from qlora.training.config import QLoRAConfig
from qlora.training.costs import price_run
from qlora.training.oom import InjectedOOM, next_rung

LADDER_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "r", "lora_alpha")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def base_fingerprint(base_path: Path) -> str:
    from qlora.modeling.base_model import checkpoint_fingerprint  # the one the serving-base check compares

    return checkpoint_fingerprint(base_path)


def peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class _Ladder:
    """The ladder's state, persisted so a killed run resumes on the same rung."""

    def __init__(self, path: Path, config: QLoRAConfig):
        self.path = path
        state = json.loads(path.read_text()) if path.is_file() else {}
        self.settings = state.get("settings") or {k: getattr(config, k) for k in LADDER_KEYS}
        self.rungs: list[dict] = state.get("rungs", [])

    def climb(self, error: BaseException, step: int) -> bool:
        found = next_rung(self.settings)
        if found is None:
            return False
        self.settings, record = found
        self.rungs.append({**record, "at_step": step, "error": str(error)[:300]})
        self.path.write_text(json.dumps({"settings": self.settings, "rungs": self.rungs}, indent=2))
        return True


def _attempt(config, rows, eval_rows, base_path, checkpoint_dir, attempt, log) -> dict:
    from datasets import Dataset
    from trl import SFTTrainer

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    limit_threads_when_busy()
    tokenizer = sft.load_tokenizer(base_path)
    model = sft.add_lora(sft.load_quantized_base(base_path, config), config)
    trainable, total = model.get_nb_trainable_parameters()
    meter = sft.StepMeter()
    trainer = SFTTrainer(
        model=model,
        args=sft.sft_arguments(config, checkpoint_dir, has_eval=bool(eval_rows), eos_token=tokenizer.eos_token),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=[sft.ProgressLog(log), InjectedOOM(attempt), meter],
    )
    trainer.remove_callback(PrinterCallback)  # ProgressLog already reports each logged loss
    resume_from = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
    resumed_step = int(Path(resume_from).name.split("-")[-1]) if resume_from else 0
    if resume_from:
        log(f"resuming from {resume_from}")
    tokens_before = 0
    if resume_from:
        tokens_before = json.loads((Path(resume_from) / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    started = time.monotonic()
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
    except torch.OutOfMemoryError as exc:
        exc.qlora_step = trainer.state.global_step
        del trainer, model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise
    seconds = time.monotonic() - started
    tokens = trainer.state.num_input_tokens_seen - tokens_before
    losses = [[e["step"], round(e["loss"], 5)] for e in trainer.state.log_history if "loss" in e]
    eval_losses = [[e["step"], round(e["eval_loss"], 5)] for e in trainer.state.log_history if "eval_loss" in e]
    return {
        "trainer": trainer,
        "metrics": {
            "trainable_params": trainable,
            "total_params": total,
            "global_step": trainer.state.global_step,
            "resumed_from_step": resumed_step,
            "train_loss": round(output.training_loss, 5),
            "loss_curve": losses,
            "eval_loss_curve": eval_losses,
            "train_tokens": int(tokens),
            "train_seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
            "steady_tokens_per_second": meter.steady_tokens_per_second(),
            "seconds_per_step": meter.seconds_per_step(),
            "peak_memory_gib": round(peak_memory_gib(), 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if torch.cuda.is_available() else None,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "world_size": trainer.args.world_size,
        },
    }


def run_training(
    config: QLoRAConfig,
    data_path: Path,
    output_dir: Path,
    base_path: Path,
    eval_path: Path | None = None,
    extras: dict | None = None,
    log=print,
) -> dict:
    """Train (or resume) into ``output_dir``; returns the manifest (written only by the main process)."""
    output_dir, base_path = Path(output_dir), Path(base_path)
    if (output_dir / "manifest.json").exists():
        raise FileExistsError(f"{output_dir} already holds a finished adapter (manifest.json); adapters are never overwritten")
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = sft.read_messages_jsonl(data_path)
    eval_rows = sft.read_messages_jsonl(eval_path) if eval_path else []
    ladder = _Ladder(output_dir / "ladder.json", config)
    wall_started = time.monotonic()
    while True:
        attempt_config = config.model_copy(update=ladder.settings)
        checkpoint_dir = output_dir / "checkpoints" / f"attempt-{len(ladder.rungs)}"
        try:
            result = _attempt(attempt_config, rows, eval_rows, base_path, checkpoint_dir, len(ladder.rungs), log)
            break
        except torch.OutOfMemoryError as exc:
            step = getattr(exc, "qlora_step", -1)
            if not config.oom_ladder or not ladder.climb(exc, step):
                raise RuntimeError(f"out of memory at step {step} and the OOM ladder is exhausted "
                                   f"(rungs tried: {[r['rung'] for r in ladder.rungs]}): {exc}") from exc
            log(f"OOM at step {step}: applying ladder rung {ladder.rungs[-1]}")
    trainer = result["trainer"]
    if not trainer.accelerator.is_main_process:
        return {}
    trainer.model.save_pretrained(output_dir)  # adapter_model.safetensors + adapter_config.json
    wall = time.monotonic() - wall_started
    costs_file = paths().config_dir / "costs.yaml"
    manifest = {
        **(extras or {}),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base": {"path": str(base_path), "fingerprint": base_fingerprint(base_path), "profile": config.base_profile},
        "data": {"path": str(data_path), "sha256": file_sha256(data_path), "rows": len(rows), "eval_rows": len(eval_rows)},
        "config_hash": config.config_hash(),
        "config": attempt_config.model_dump(),
        "oom_ladder": ladder.rungs,
        "trainable_params": result["metrics"]["trainable_params"],
        "metrics": {**result["metrics"], "wall_seconds": round(wall, 2)},
        "cost": price_run(wall, config.cost_instance, costs_file,
                          gpus_used=trainer.args.world_size if torch.cuda.is_available() else 0),
    }
    (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    (output_dir / "ladder.json").unlink(missing_ok=True)
    log(f"adapter written to {output_dir}: loss {manifest['metrics']['loss_curve'][:1]} -> "
        f"{manifest['metrics']['loss_curve'][-1:]}, {manifest['metrics']['tokens_per_second']} tokens/s")
    return manifest
