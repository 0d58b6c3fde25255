"""Serving profiles: ``configs/serving/embedded.yaml`` and ``configs/serving/vllm.yaml``.

Each setting is a typed field with a default; a bad value fails at load time with the
file and field named (as trl's SFTConfig / axolotl's schema do).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from qlora.core.config import read_yaml_mapping
from qlora.serving.adapters import check_max_lora_rank
from qlora.core.paths import paths


@dataclass
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = 8000                      # the public URL clients use
    api_key_env: str = "QLORA_SERVING_API_KEY"  # admin routes need this bearer key
    request_timeout_s: float = 300.0


@dataclass
class EmbeddedConfig:
    """transformers + peft server for one base and many adapters (tests, demo, laptop)."""

    base_model: str = ""                  # "": the selected base profile's folder; relative paths are under QLORA_HOME
    served_model_name: str = ""           # default: the base model folder's name
    quantization: str = "nf4"             # nf4 (bitsandbytes, as in training) | none
    compute_dtype: str = "float32"        # float32 | bfloat16 (CPU kernels are fastest in float32)
    max_lora_rank: int = 64               # same rule as vLLM: adapters above it are refused
    max_loras: int = 16                   # adapters resident at once; more is refused
    max_model_len: int = 0                # 0: the base config's max_position_embeddings
    default_max_tokens: int = 256         # when a request gives none
    max_batch_size: int = 32              # requests sharing one forward pass
    batch_window_ms: float = 5.0          # how long the batcher waits for more requests
    torch_threads: int = 0                # 0: torch's default
    backend_host: str = "127.0.0.1"
    backend_port: int = 0                 # 0: any free port (the router is the public URL)
    router: RouterConfig = field(default_factory=RouterConfig)

    def base_model_path(self) -> Path:
        if self.base_model:
            path = Path(self.base_model).expanduser()
        else:  # the base chosen once ($QLORA_BASE_PROFILE), where the base_model asset builds it
            from qlora.modeling.profiles import selected_profile

            path = paths().base_models / selected_profile()
        path = path if path.is_absolute() else paths().home / path
        fingerprint = path / "fingerprint.json"
        if not (path / "config.json").is_file() and fingerprint.is_file():
            # The base_model asset may record the HF files elsewhere (a local checkpoint).
            return Path(json.loads(fingerprint.read_text(encoding="utf-8")).get("model_path") or path)
        return path


@dataclass
class VllmConfig:
    """``vllm serve`` with LoRA; the router runs as a separate process in front of it."""

    model: str = "/models/Llama-3.1-8B-Instruct"
    served_model_name: str = "llama-3.1-8b-instruct"
    host: str = "0.0.0.0"
    port: int = 8001
    url: str = "http://127.0.0.1:8001"    # where the router reaches vLLM
    max_lora_rank: int = 64
    max_loras: int = 4                    # adapters in one GPU batch
    max_cpu_loras: int = 16               # adapters cached in host memory
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.92
    tensor_parallel_size: int = 1
    dtype: str = "bfloat16"
    quantization: str = ""                # "" (bf16 base) | bitsandbytes
    api_key_env: str = "VLLM_API_KEY"     # vLLM's own --api-key, read from this variable
    extra_args: list[str] = field(default_factory=list)
    router: RouterConfig = field(default_factory=RouterConfig)


def _build(cls, data: dict, source: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if name == "router":
            values[name] = _build(RouterConfig, value or {}, f"{source}: router")
        elif not (isinstance(value, type(default)) or isinstance(default, float) and isinstance(value, int)):
            raise ValueError(f"{source}: field {name!r} must be {type(default).__name__}, got {value!r}")
        else:
            values[name] = value
    return cls(**values)


def _check(config, source: str):
    check_max_lora_rank(config.max_lora_rank, f"{source}: max_lora_rank")
    if isinstance(config, EmbeddedConfig):
        if config.quantization not in ("nf4", "none"):
            raise ValueError(f"{source}: quantization must be 'nf4' or 'none', got {config.quantization!r}")
        if config.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"{source}: compute_dtype must be float32 or bfloat16, got {config.compute_dtype!r}")
        if config.max_batch_size < 1 or config.max_loras < 1:
            raise ValueError(f"{source}: max_batch_size and max_loras must be >= 1")
    else:
        if config.max_cpu_loras < config.max_loras:
            raise ValueError(
                f"{source}: max_cpu_loras ({config.max_cpu_loras}) must be >= max_loras ({config.max_loras})"
            )
        if not 0 < config.gpu_memory_utilization <= 1:
            raise ValueError(f"{source}: gpu_memory_utilization must be in (0, 1]")
    return config


def load_config(path: str | Path | None = None, backend: str = "embedded") -> EmbeddedConfig | VllmConfig:
    """Read a profile; ``backend`` picks the default file and the schema when ``path`` is None."""
    path = Path(path) if path else paths().config_dir / "serving" / f"{backend}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"serving config not found: {path}")
    data = read_yaml_mapping(path)
    declared = data.pop("backend", backend)
    cls = {"embedded": EmbeddedConfig, "vllm": VllmConfig}.get(declared)
    if cls is None:
        raise ValueError(f"{path}: field 'backend' must be 'embedded' or 'vllm', got {declared!r}")
    return _check(_build(cls, data, str(path)), str(path))
