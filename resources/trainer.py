"""Dagster resource that runs the training entrypoint through Pipes: a CPU subprocess, or `accelerate launch` on N GPUs."""
from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg

from qlora_assets.settings import REPO_ROOT, paths
from resources.gpu import GpuResource

ENTRYPOINT = "qlora_assets.training.entrypoint"


class TrainerResource(dg.ConfigurableResource):
    """Where and how `qlora_adapter` trains: config profile, number of GPUs, extra environment."""

    config: str = "tiny-cpu"  # profile under configs/qlora/ or a path to a YAML file
    num_gpus: int = 0  # 0: one CPU (or single-GPU) subprocess; N>0: accelerate launch --num_processes N
    python: str = ""  # interpreter for the subprocess; default: this one
    env: dict[str, str] = {}

    def config_path(self) -> Path:
        candidate = Path(self.config)
        if candidate.suffix in {".yaml", ".yml"}:
            return candidate if candidate.is_absolute() else REPO_ROOT / candidate
        return paths().config_dir / "qlora" / f"{self.config}.yaml"

    def command(self, args: list[str]) -> list[str]:
        python = self.python or sys.executable
        if self.num_gpus > 0:
            return [python, "-m", "accelerate.commands.launch", "--num_processes", str(self.num_gpus),
                    "--module", ENTRYPOINT, *args]
        return [python, "-m", ENTRYPOINT, *args]

    def run(self, context: dg.AssetExecutionContext, args: list[str], extras: dict):
        # NVLink multicast stays off on shared multi-GPU hosts; P2P stays on (set NCCL_P2P_DISABLE=1 without NVLink).
        env = {"NCCL_NVLS_ENABLE": "0", "TOKENIZERS_PARALLELISM": "false", **self.env}
        # The run's own GPUs (file-locked slots shared by all runs on this host; see resources/gpu.py).
        with GpuResource.from_prod_config().lease(context, count=max(1, self.num_gpus)) as lease:
            client = dg.PipesSubprocessClient(cwd=str(REPO_ROOT), env={**env, **lease.env})
            return client.run(context=context, command=self.command(args), extras=extras)
