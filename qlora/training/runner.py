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
import resource
import shutil
import time
from pathlib import Path

from qlora.core import bnb_notice  # noqa: F401  (first: transformers below loads bitsandbytes)

import torch
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from qlora.core.io import read_json, write_json_atomic
from qlora.core.cpu_threads import limit_threads_when_busy
from qlora.core.paths import paths
from qlora.training import sft
from qlora.training.config import QLoRAConfig
from qlora.training.costs import price_run
from qlora.training.oom import InjectedOOM, apply_settings, ladder_settings, next_rung


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

    def __init__(self, path: Path, config: QLoRAConfig, num_layers: int | None):
        self.path = path
        state = read_json(path, "OOM ladder state") if path.is_file() else {}
        self.settings = state.get("settings") or ladder_settings(config)
        self.rungs: list[dict] = state.get("rungs", [])
        self.has_speed, self.num_layers = config.speed is not None, num_layers

    def climb(self, error: BaseException | str, step: int) -> bool:
        found = next_rung(self.settings, self.has_speed, self.num_layers)
        if found is None:
            return False
        self.settings, record = found
        self.rungs.append({**record, "at_step": step, "error": str(error)[:300]})
        write_json_atomic(self.path, {"settings": self.settings, "rungs": self.rungs})  # survives a kill mid-write
        return True


def shape_aware(config: QLoRAConfig, base_path: Path, log):
    """Resolve `auto` speed settings for this base's shape and this GPU; predict the peak.

    Returns (config, choice or None, shape or None). Without CUDA or a Llama config.json the
    config runs as written, an `auto` recompute count meaning all layers.
    """
    from qlora.training.calibration import gpu_key, load_calibration
    from qlora.training.memory import Shape, canonical
    from qlora.training.profile_choice import resolve_speed

    config_json = base_path / "config.json"
    try:
        shape = canonical(Shape.from_hf_config(read_json(config_json, "base model config"), str(config_json)))
    except (OSError, ValueError):
        shape = None
    if shape is None or not torch.cuda.is_available():
        speed = config.speed
        if speed is not None and speed.is_auto:
            update = {k: None for k in ("max_tokens_per_batch", "checkpoint_layers") if getattr(speed, k) == "auto"}
            if speed.offload_layers == "auto":  # no shape or no GPU to choose for: nothing offloaded
                update["offload_layers"] = 0
            config = config.model_copy(update={"speed": speed.model_copy(update=update)})
        return config, None, shape
    gpu = torch.cuda.get_device_name()
    memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    config, choice = resolve_speed(config, shape, load_calibration(paths().config_dir, gpu), memory_gib, gpu_key(gpu))
    log(f"profile for {shape.name} on {gpu} ({memory_gib:.0f} GiB): micro-batch {choice.micro_batch_tokens} tokens, "
        f"{choice.recomputed_layers}/{shape.layers} layers recomputed, {choice.offloaded_layers} offloaded "
        f"({choice.pinned_host_gib} GiB pinned host memory), predicted peak {choice.predicted_peak_gib} GiB "
        f"(budget {choice.budget_gib}), predicted {choice.predicted_tokens_per_second} tokens/s ({choice.basis})")
    return config, choice, shape


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _attempt(config, rows, eval_rows, base_path, checkpoint_dir, attempt, log) -> dict:
    from datasets import Dataset
    from trl import SFTTrainer

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    log(f"torch threads: {limit_threads_when_busy()}")
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
        tokens_before = read_json(Path(resume_from) / "trainer_state.json", "trainer state").get("num_input_tokens_seen", 0)
    started = time.monotonic()
    oom = None
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
    except torch.OutOfMemoryError as exc:
        # A fresh exception without the failed step's frames: its traceback would keep the model and
        # the activations alive (a reference cycle), and the next rung would start out of memory.
        oom = torch.OutOfMemoryError(str(exc))
        oom.qlora_step = trainer.state.global_step
    if oom is not None:
        del trainer, model
        free_accelerator_memory()
        raise oom
    seconds = time.monotonic() - started
    tokens = trainer.state.num_input_tokens_seen - tokens_before
    losses = [[e["step"], round(e["loss"], 5)] for e in trainer.state.log_history if "loss" in e]
    eval_losses = [[e["step"], round(e["eval_loss"], 5)] for e in trainer.state.log_history if "eval_loss" in e]
    learning_rates = [[e["step"], e["learning_rate"]] for e in trainer.state.log_history if "learning_rate" in e]
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
            "learning_rate_curve": learning_rates,  # per logged step, for the experiment tracker
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
    given = config  # the manifest's config_hash is the config as written (the run key's), auto and all
    config, choice, shape = shape_aware(config, base_path, log)
    ladder = _Ladder(output_dir / "ladder.json", config, shape.layers if shape else None)
    wall_started = time.monotonic()
    while True:
        attempt_config = apply_settings(config, ladder.settings)
        checkpoint_dir = output_dir / "checkpoints" / f"attempt-{len(ladder.rungs)}"
        try:
            result = _attempt(attempt_config, rows, eval_rows, base_path, checkpoint_dir, len(ladder.rungs), log)
            break
        except torch.OutOfMemoryError as exc:  # also while loading: step -1
            step, message = getattr(exc, "qlora_step", -1), str(exc)
        free_accelerator_memory()  # after the except block, so the exception's frames are gone too
        if not config.oom_ladder or not ladder.climb(message, step):
            raise RuntimeError(f"out of memory at step {step} and the OOM ladder is exhausted "
                               f"(rungs tried: {[r['rung'] for r in ladder.rungs]}): {message}")
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
        "config_hash": given.config_hash(),
        "config": attempt_config.model_dump(),
        "oom_ladder": ladder.rungs,
        "trainable_params": result["metrics"]["trainable_params"],
        "metrics": {**result["metrics"], "wall_seconds": round(wall, 2),
                    "predicted_peak_gib": choice.predicted_peak_gib if choice else None},
        "profile_choice": choice.as_dict() if choice else None,
        "cost": price_run(wall, config.cost_instance, costs_file,
                          gpus_used=trainer.args.world_size if torch.cuda.is_available() else 0),
    }
    write_json_atomic(output_dir / "manifest.json", manifest)
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    (output_dir / "ladder.json").unlink(missing_ok=True)
    if choice is not None:
        log(f"peak memory: predicted {choice.predicted_peak_gib} GiB, measured {result['metrics']['peak_memory_gib']} GiB")
    log(f"adapter written to {output_dir}: loss {manifest['metrics']['loss_curve'][:1]} -> "
        f"{manifest['metrics']['loss_curve'][-1:]}, {manifest['metrics']['tokens_per_second']} tokens/s")
    return manifest
