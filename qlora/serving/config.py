"""Serving profiles: ``configs/serving/embedded.yaml`` and ``configs/serving/vllm.yaml``.

Each setting is a typed field with a default and a one-line doc; a bad value fails at load time
through the project's one YAML loader, with the file and field named (as trl's SFTConfig does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qlora.core.config import ConfigError, read_yaml_mapping, validate_mapping
from qlora.core.io import read_json
from qlora.core.paths import paths
from qlora.serving.adapters import check_max_lora_rank

LOOPBACK = ("127.0.0.1", "::1", "localhost")




class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouterConfig(_Settings):
    host: str = Field("127.0.0.1", description="where the public router listens")
    port: int = Field(8000, ge=0, le=65535, description="the public URL clients use")
    api_key_env: str = Field("QLORA_SERVING_API_KEY", description="admin routes need this bearer key")
    request_timeout_s: float = Field(300.0, gt=0, description="longest wait for the backend's answer")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="larger request bodies are answered 413")
    resync_interval_s: float = Field(2.0, gt=0, description="how often the router re-loads what a restarted "
                                                             "backend lost")


class _Profile(_Settings):
    max_lora_rank: int = Field(64, description="as vLLM: one of 1, 8, 16, 32, 64, 128, 256, 320, 512")
    router: RouterConfig = Field(default_factory=RouterConfig)

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, value: int) -> int:
        return check_max_lora_rank(value, "max_lora_rank")


Quantization = Literal["nf4", "nf4-dequantized", "none"]
ComputeDtype = Literal["float32", "bfloat16"]


class BaseNumerics(_Settings):
    """How one base profile's weights are held and multiplied when served."""

    quantization: Quantization
    compute_dtype: ComputeDtype


class EmbeddedConfig(_Profile):
    """transformers + peft server for one base and many adapters (tests, demo, laptop)."""

    backend: Literal["embedded"] = "embedded"
    base_model: str = Field("", description="'': the selected base profile's folder; relative paths are under QLORA_HOME")
    served_model_name: str = Field("", description="default: the base model folder's name")
    quantization: Quantization = Field("nf4", description="nf4 (bitsandbytes, as in training) | nf4-dequantized "
                                       "(the same NF4 values held in compute_dtype) | none")
    compute_dtype: ComputeDtype = Field("float32", description="CPU kernels are fastest in float32")
    numerics_by_base: dict[str, BaseNumerics] = Field(
        default_factory=dict, description="per base profile: quantization and compute_dtype in place of the above")
    max_loras: int = Field(16, ge=1, description="adapters resident at once; more is refused")
    max_model_len: int = Field(0, ge=0, description="0: the base config's max_position_embeddings")
    default_max_tokens: int = Field(256, ge=1, description="when a request gives none")
    max_batch_size: int = Field(32, ge=1, description="requests sharing one forward pass")
    batch_window_ms: float = Field(5.0, ge=0, description="how long the batcher waits for more requests")
    torch_threads: int = Field(0, ge=0, description="0: torch's default")
    backend_host: str = Field("127.0.0.1", description="loopback only: the router is the public entrance")
    backend_port: int = Field(0, ge=0, le=65535, description="0: any free port")

    @field_validator("backend_host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if value not in LOOPBACK:
            raise ValueError(f"must be a loopback address {list(LOOPBACK)}: the backend is reached through the "
                             f"router only, got {value!r}")
        return value

    def numerics(self) -> BaseNumerics:
        """The served base's entry of numerics_by_base, else the profile-wide settings. The base's
        profile is the one its fingerprint.json records (a pinned folder built by the base_model
        asset, as eval's server uses), else the selected one for an unpinned base."""
        folder, selected = self._folder()
        profile = self._record(folder).get("profile") or selected
        chosen = self.numerics_by_base.get(profile or "")
        return chosen or BaseNumerics(quantization=self.quantization, compute_dtype=self.compute_dtype)

    def _folder(self) -> tuple[Path, str | None]:
        """The base folder, and the selected profile when the folder is the profile's (not pinned)."""
        selected = None
        if self.base_model:
            path = Path(self.base_model).expanduser()
        else:  # the base chosen once ($QLORA_BASE_PROFILE), where the base_model asset builds it
            from qlora.modeling.profiles import selected_profile

            selected = selected_profile()
            path = paths().base_models / selected
        return (path if path.is_absolute() else paths().home / path), selected

    @staticmethod
    def _record(folder: Path) -> dict:
        fingerprint = folder / "fingerprint.json"
        return read_json(fingerprint, "base model fingerprint") if fingerprint.is_file() else {}

    def base_model_path(self) -> Path:
        path, _ = self._folder()
        if not (path / "config.json").is_file():
            # The base_model asset may record the HF files elsewhere (a local checkpoint).
            return Path(self._record(path).get("model_path") or path)
        return path


class VllmConfig(_Profile):
    """``vllm serve`` with LoRA; the router runs as a separate process in front of it."""

    backend: Literal["vllm"] = "vllm"
    model: str = Field("/models/Llama-3.1-8B-Instruct", description="local HF checkpoint (no hub at run time)")
    served_model_name: str = "llama-3.1-8b-instruct"
    host: str = "0.0.0.0"
    port: int = Field(8001, ge=0, le=65535)
    url: str = Field("http://127.0.0.1:8001", description="where the router reaches vLLM")
    max_loras: int = Field(4, ge=1, description="adapters in one GPU batch")
    max_cpu_loras: int = Field(16, ge=1, description="adapters cached in host memory")
    max_model_len: int = Field(4096, ge=1)
    gpu_memory_utilization: float = Field(0.92, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    dtype: str = "bfloat16"
    quantization: Literal["", "bitsandbytes"] = Field("", description="'' (bf16 base) | bitsandbytes")
    api_key_env: str = Field("VLLM_API_KEY", description="vLLM's own --api-key, read from this variable")
    base_fingerprint: str = Field("", description="the served base's fingerprint when `model` is not readable "
                                                  "from the router's host ('' = read it from `model`)")
    extra_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cpu_cache_holds_the_batch(self) -> "VllmConfig":
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")
        return self


PROFILES = {"embedded": EmbeddedConfig, "vllm": VllmConfig}


def load_config(path: str | Path | None = None, backend: str = "embedded") -> EmbeddedConfig | VllmConfig:
    """Read a profile; ``backend`` picks the default file and the schema when the file names none."""
    path = Path(path) if path else paths().config_dir / "serving" / f"{backend}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"serving config not found: {path}")
    raw = read_yaml_mapping(path, ConfigError)
    declared = raw.get("backend", backend)
    if declared not in PROFILES:
        raise ConfigError(f"{path}: field 'backend': must be 'embedded' or 'vllm', got {declared!r}")
    return validate_mapping(PROFILES[declared], raw, path, ConfigError)
