"""One QLoRA training attempt: 4-bit NF4 base + LoRA, trained with TRL's SFTTrainer.

Loss covers the assistant turns only (``assistant_only_loss`` with the template's
``{% generation %}`` markers), and the end-of-turn token is the tokenizer's EOS
(``<|eot_id|>`` for Llama 3, ``<|im_end|>`` for ChatML), so the adapter learns to stop
where the server stops.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback

from qlora.modeling.chat_template import EOT, PAD
from qlora.core.io import read_records
from qlora.training.config import QLoRAConfig


def read_messages_jsonl(path: Path) -> list[dict]:
    """Rows of ``{"messages": [...]}``; a bad line fails naming file, line and field."""
    rows = []
    for number, row in read_records(path, "jsonl"):  # a line that is not JSON fails naming file:line
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{path} line {number}: field `messages` must be a non-empty list")
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            raise ValueError(f"{path} line {number}: field `messages` has no assistant turn to learn from")
        rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages]})
    if not rows:
        raise ValueError(f"{path}: no training rows")
    return rows


def device_index() -> int | str:
    return int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"


def load_tokenizer(base_path: Path):
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:  # Llama-3.1 ships none; its reserved pad token is the right one
        tokenizer.pad_token = PAD if PAD in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def load_quantized_base(base_path: Path, config: QLoRAConfig):
    dtype = getattr(torch, config.bnb_4bit_compute_dtype)
    quantization = None
    if config.load_in_4bit:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=config.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=config.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
    return AutoModelForCausalLM.from_pretrained(
        base_path,
        quantization_config=quantization,
        dtype=dtype,
        device_map={"": device_index()},
        attn_implementation=config.attn_implementation,
    )


def add_lora(model, config: QLoRAConfig):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.speed is not None:  # the fast GPU profile's levers instead of the fp32 upcasts
        from qlora.training.fast.trainer_hooks import prepare_base

        model = prepare_base(model, config.speed)
    elif config.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": config.gradient_checkpointing_use_reentrant},
        )
    from transformers import set_seed

    set_seed(config.seed)  # LoRA's A matrices draw from the global generator: seed them (Trainer seeds only later)
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.lora_alpha,
        target_modules=list(config.target_modules),
        lora_dropout=config.lora_dropout,
        bias=config.bias,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if config.speed is not None:
        from qlora.training.fast.levers import finish_peft_model

        finish_peft_model(peft_model, config.speed)
    return peft_model


def sft_arguments(config: QLoRAConfig, checkpoint_dir: Path, has_eval: bool, eos_token: str = EOT):
    from trl import SFTConfig

    from qlora.training.fast.trainer_hooks import sft_overrides

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of total steps
        weight_decay=config.weight_decay,
        max_length=config.max_length,
        bf16=config.bf16 and (on_gpu and torch.cuda.is_bf16_supported()),
        use_cpu=not on_gpu,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=config.eval_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": config.gradient_checkpointing_use_reentrant},
        optim=config.optim,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        assistant_only_loss=True,
        eos_token=eos_token,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=on_gpu,
        **sft_overrides(config.speed),  # packing settings of the fast GPU profile; {} for the seed
    )


class ProgressLog(TrainerCallback):
    """Forwards each logged loss to the run log (Dagster's, through Pipes)."""

    def __init__(self, log):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.log(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} lr {logs.get('learning_rate', 0):.2e}")


class StepMeter(TrainerCallback):
    """Time and input tokens at each optimizer step, for steady-state throughput (first step excluded)."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        import time

        self.marks.append((time.monotonic(), state.num_input_tokens_seen))

    def steady_tokens_per_second(self) -> float | None:
        if len(self.marks) < 3:
            return None
        (t0, n0), (t1, n1) = self.marks[1], self.marks[-1]
        return round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else None

    def seconds_per_step(self) -> float | None:
        if len(self.marks) < 3:
            return None
        return round((self.marks[-1][0] - self.marks[1][0]) / (len(self.marks) - 2), 3)
