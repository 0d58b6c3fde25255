"""The production profile: the exact ``vllm serve`` command from ``configs/serving/vllm.yaml``,
and the check that refuses adapters vLLM would refuse, before a deploy tries them.

vLLM cannot run on the CI machine (CUDA, its own torch), so the command is generated and
printed here and run by operations; the router runs as its own process in front of it.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from qlora.serving.adapters import AdapterPathError, AdapterRefused, validate_adapter
from qlora.serving.config import VllmConfig


@dataclass(frozen=True)
class LaunchCommand:
    env: dict[str, str]
    argv: list[str]

    def shell(self) -> str:
        """One line an operator can paste: ``ENV=... vllm serve ...`` (the API key stays a variable)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        args = " ".join(a if a.startswith("${") else shlex.quote(a) for a in self.argv)
        return f"{env} {args}".strip()


def vllm_command(config: VllmConfig) -> LaunchCommand:
    argv = [
        "vllm", "serve", config.model,
        "--served-model-name", config.served_model_name,
        "--host", config.host,
        "--port", str(config.port),
        "--enable-lora",
        "--max-lora-rank", str(config.max_lora_rank),
        "--max-loras", str(config.max_loras),
        "--max-cpu-loras", str(config.max_cpu_loras),
        "--max-model-len", str(config.max_model_len),
        "--gpu-memory-utilization", str(config.gpu_memory_utilization),
        "--tensor-parallel-size", str(config.tensor_parallel_size),
        "--dtype", config.dtype,
    ]
    if config.quantization:
        argv += ["--quantization", config.quantization]
    if config.api_key_env:
        argv += ["--api-key", f"${{{config.api_key_env}}}"]
    argv += list(config.extra_args)
    # Without this variable vLLM has no /v1/load_lora_adapter: deploys would need a restart.
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    return LaunchCommand(env=env, argv=argv)


def router_command(config_path: str | Path | None) -> list[str]:
    """The router in front of vLLM runs as its own process."""
    argv = ["qlora", "serve", "--backend", "vllm"]
    return argv + (["--config", str(config_path)] if config_path else [])


def check_adapter_for_vllm(path: str | Path, config: VllmConfig) -> list[str]:
    """Why vLLM (as configured) would refuse this adapter, in vLLM's words; empty when it can serve it.

    The profile's max_lora_rank itself was checked against vLLM's allowed values when the
    config loaded.
    """
    try:
        validate_adapter(path, config.max_lora_rank)
    except AdapterPathError:
        return [f"No adapter found for {path} (no adapter_config.json)"]
    except AdapterRefused as exc:
        return exc.reasons
    return []
