"""The typed QLoRA training config: every setting has a type, a default and a one-line doc.

Defaults are the seed's settings; ``configs/qlora/<profile>.yaml`` overrides them.
Invalid values and combinations fail at load time with a message naming the field,
including those vLLM would only reject at deploy time (rank limits, modules_to_save).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from qlora.core.config import ConfigError, line_of, read_yaml_mapping

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
SEED_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]




AUTO = "auto"
Optimizer = Literal["paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit", "adamw_torch", "adamw_torch_fused", "sgd"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]
Attention = Literal["sdpa", "eager", "flash_attention_2"]


class SpeedConfig(BaseModel):
    """The `speed:` block: the fast GPU profile's levers (qlora/training/fast), parsed once here.

    `max_tokens_per_batch` and `checkpoint_layers` may be `auto`: the memory model
    (qlora/training/memory.py, calibrated in configs/calibration/) then picks them for the model's
    shape and the GPU's memory (`memory_budget_gib`, default the GPU's memory less a margin).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    packing: StrictBool = Field(False, description="Padding-free rows + varlen attention (no cross-contamination).")
    max_tokens_per_batch: int | Literal["auto"] | None = Field(
        None, description="Micro-batch by token budget instead of padded rows; auto: the memory model's choice.")
    cudnn_attention: StrictBool = Field(False, description="Equal-length packs through cuDNN's fused attention.")
    fused_loss: StrictBool = Field(False, description="Fused linear cross-entropy: no full fp32 logits.")
    liger_kernels: StrictBool = Field(False, description="Liger RMSNorm, RoPE and SwiGLU kernels.")
    fused_lora: StrictBool = Field(False, description="LoRA + dropout as one function: no dropped-out copies kept.")
    lora_groups: StrictBool = Field(
        False, description="q/k/v and gate/up (one input each) as one function each: one input-gradient buffer, "
                           "the A matmuls concatenated without dropout (fast/lora_group.py).")
    recompute_lora_inputs: StrictBool = Field(
        False, description="Rerun the norm outputs and the SwiGLU product in backward instead of keeping them "
                           "for LoRA's A gradients (fast/input_recompute.py): 32% less per kept 8B layer.")
    fp32_upcast: StrictBool = Field(True, description="The seed's prepare_model_for_kbit_training fp32 casts.")
    checkpoint_layers: int | Literal["auto"] | None = Field(
        None, description="Decoder layers recomputed in backward (None: all); auto: the memory model's choice.")
    offload_layers: int | Literal["auto"] = Field(
        0, description="Decoder layers whose saved activations go to pinned host memory (fast/offload.py); "
                       "auto: the memory model's choice.")
    offload_eager_release: StrictBool = Field(
        False, description="Offload: drop each finished copy's GPU source at every layer's end, none in flight at the "
                           "forward's end, copies back only into memory the backward has freed (fast/offload.py).")
    compact_gqa_saves: StrictBool = Field(
        False, description="cuDNN attention gets K/V expanded to every query head; its backward keeps the grouped "
                           "heads and expands them again (fast/gqa_saves.py): 12% less per kept 8B layer.")
    embedding_on_host: StrictBool = Field(
        False, description="The frozen input embedding table in pinned host memory; only the micro-batch's rows "
                           "reach the GPU (fast/host_embedding.py): one vocab x hidden bf16 table less on the GPU.")
    compile: StrictBool = Field(False, description="torch.compile each decoder layer (regional compilation).")
    memory_budget_gib: float | None = Field(
        None, gt=0, description="Peak the auto choice must stay under; default: the GPU's memory less 5 GiB.")

    @field_validator("max_tokens_per_batch", "checkpoint_layers", "offload_layers", mode="before")
    @classmethod
    def _integer_or_auto(cls, value):
        if value is None or value == AUTO:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a non-negative integer, auto or null, got {value!r}")
        return value

    @model_validator(mode="after")
    def _needs_packing(self) -> "SpeedConfig":
        if self.max_tokens_per_batch is not None and not self.packing:
            raise ValueError("max_tokens_per_batch needs packing: true (a token budget has no padding)")
        if self.cudnn_attention and not self.packing:
            raise ValueError("cudnn_attention needs packing: true (it is a path of the varlen attention)")
        for name in ("lora_groups", "recompute_lora_inputs"):
            if getattr(self, name) and not self.fused_lora:
                raise ValueError(f"{name} needs fused_lora: true (it extends the fused LoRA functions)")
        return self

    @property
    def is_auto(self) -> bool:
        return AUTO in (self.max_tokens_per_batch, self.checkpoint_layers, self.offload_layers)

    @classmethod
    def from_mapping(cls, raw: dict | None, source: str = "speed") -> "SpeedConfig":
        """Validate a `speed:` mapping outside a QLoRAConfig; errors name `<source>.<field>`."""
        try:
            return cls(**dict(raw or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            where = f"{source}.{field}" if field else source
            raise ValueError(f"{where}: {_message(err)}") from None


class QLoRAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # base model and quantisation
    base_profile: str = Field("tiny", description="Base model profile: `tiny` (built locally) or a local checkpoint profile.")
    base_model_path: str | None = Field(None, description="Local HF checkpoint for non-tiny profiles; nothing is downloaded.")
    load_in_4bit: bool = Field(True, description="Quantise the frozen base with bitsandbytes 4-bit.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 suits normally distributed weights.")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="Matmul dtype of the 4-bit layers.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantise the quantisation constants too (~0.4 bit/param saved).")
    attn_implementation: Attention = Field("sdpa", description="Attention kernel: sdpa, eager, flash_attention_2.")
    # LoRA
    r: int = Field(64, description="LoRA rank; must be a vLLM rank and at most the server's max_lora_rank.")
    lora_alpha: int = Field(128, description="LoRA scaling numerator (alpha/r = 2 is the seed's start).")
    target_modules: list[str] = Field(default_factory=lambda: list(SEED_TARGET_MODULES), description="Linear layers that get adapters.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    bias: Literal["none"] = Field("none", description="Bias training; vLLM serves bias-free adapters only.")
    modules_to_save: list[str] = Field(default_factory=list, description="Fully trained modules; vLLM rejects them, so must stay empty.")
    # optimisation
    num_train_epochs: float = Field(3.0, gt=0, description="Passes over the training rows.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: use epochs).")
    per_device_train_batch_size: int = Field(4, ge=1, description="Sequences per device per micro-batch.")
    gradient_accumulation_steps: int = Field(8, ge=1, description="Micro-batches per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler_type: Scheduler = Field("cosine", description="transformers scheduler name.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    max_length: int = Field(4096, ge=16, description="Tokens per sequence; longer rows are truncated.")
    bf16: bool = Field(True, description="bf16 autocast (ignored on CPUs without bf16 support).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations to save memory (~15% slower).")
    gradient_checkpointing_use_reentrant: bool = Field(False, description="Reentrant checkpointing; the seed uses non-reentrant.")
    optim: Optimizer = Field("paged_adamw_8bit", description="Optimizer; paged AdamW 8-bit pages state to CPU under pressure.")
    max_grad_norm: float = Field(0.3, gt=0, description="Gradient clipping norm.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    seed: int = Field(42, description="Seed for data order, dropout and LoRA init.")
    # bookkeeping
    logging_steps: int = Field(10, ge=1, description="Log loss every N steps.")
    save_steps: int = Field(100, ge=1, description="Checkpoint every N steps; a killed run resumes from the last.")
    eval_steps: int = Field(100, ge=1, description="Evaluate every N steps when eval rows are given.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    oom_ladder: bool = Field(True, description="On CUDA OOM: recompute more layers, halve the micro-batch (same math), "
                             "then max_length 2048, then r=32 (qlora/training/oom.py).")
    cost_instance: str = Field("a100-80gb-x1", description="Instance in configs/costs.yaml used to price the run.")
    # speed levers of the fast GPU profile (qlora/training/fast); null keeps the seed's path
    speed: SpeedConfig | None = Field(None, description="Speed levers (packing, Liger, casts, recomputation); see fast/levers.py.")

    @model_validator(mode="after")
    def _speed_fits_the_trainer(self) -> "QLoRAConfig":
        speed = self.speed
        if speed is not None and speed.checkpoint_layers is not None and self.gradient_checkpointing:
            raise ValueError(
                f"speed.checkpoint_layers: {speed.checkpoint_layers} chosen layers, but gradient_checkpointing: true "
                "makes the Trainer recompute every layer; set gradient_checkpointing: false"
            )
        return self

    @field_validator("r")
    @classmethod
    def _rank_allowed_by_vllm(cls, r: int) -> int:
        if r not in VLLM_LORA_RANKS:
            raise ValueError(f"r={r} is not a rank vLLM can serve; use one of {VLLM_LORA_RANKS}")
        return r

    @field_validator("modules_to_save")
    @classmethod
    def _no_modules_to_save(cls, modules: list[str]) -> list[str]:
        if modules:
            raise ValueError(f"modules_to_save={modules}: vLLM rejects adapters that save full modules; leave it empty")
        return modules

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, modules: list[str]) -> list[str]:
        if not modules:
            raise ValueError("target_modules is empty: name at least one linear layer (e.g. q_proj)")
        return modules

    @model_validator(mode="after")
    def _base_path_for_local_profiles(self) -> "QLoRAConfig":
        if self.base_profile != "tiny" and self.load_in_4bit and self.bnb_4bit_compute_dtype == "float16":
            raise ValueError("bnb_4bit_compute_dtype: float16 on a full-size base is unstable; use bfloat16 (seed #4)")
        return self

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def serving_max_lora_rank(config_dir: Path) -> int | None:
    """``max_lora_rank`` from configs/serving/vllm.yaml (top level or one level down), if that file exists."""
    path = config_dir / "serving" / "vllm.yaml"
    if not path.is_file():
        return None
    data = read_yaml_mapping(path, ConfigError)
    if "max_lora_rank" in data:
        return int(data["max_lora_rank"])
    for value in data.values():
        if isinstance(value, dict) and "max_lora_rank" in value:
            return int(value["max_lora_rank"])
    return None


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] in ("bool_type", "literal_error"):
        return f"{err['msg']} (got {err.get('input')!r})"
    return err["msg"].removeprefix("Value error, ")


def _describe(exc: ValidationError, source: str, key_lines: dict | None = None) -> str:
    lines = [f"{source}: invalid QLoRA config"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        line = line_of(key_lines or {}, tuple(err["loc"]))
        lines.append(f"  {f'line {line}: ' if line else ''}field `{field}`: {_message(err)}")
    return "\n".join(lines)


def validate_config(raw: dict, source: str = "<config>", config_dir: Path | None = None) -> QLoRAConfig:
    """Validate a mapping; with ``config_dir``, also check r against the serving max_lora_rank."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    try:
        config = QLoRAConfig(**raw)
    except ValidationError as exc:
        first = tuple(exc.errors()[0]["loc"]) if exc.errors() else ()
        key_lines = getattr(raw, "key_lines", None) or {}
        raise ConfigError(_describe(exc, source, key_lines), source, line_of(key_lines, first),
                          ".".join(map(str, first))) from None
    if config_dir is not None:
        max_rank = serving_max_lora_rank(config_dir)
        if max_rank is not None and config.r > max_rank:
            raise ConfigError(
                f"{source}: field `r`: r={config.r} is above max_lora_rank={max_rank} of "
                f"{config_dir / 'serving' / 'vllm.yaml'}; vLLM would refuse to load the adapter"
            )
    return config


def load_config(path: str | Path, config_dir: Path | None = None) -> QLoRAConfig:
    """Load and validate a YAML config; the serving rank check uses ``config_dir`` (default: the file's configs/)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = read_yaml_mapping(path, ConfigError)
    return validate_config(raw, str(path), config_dir or path.resolve().parent.parent)
