"""Dagster resource that runs the training entrypoint through Pipes.

`launcher: subprocess` (default) runs it on this host: a CPU subprocess, or `accelerate launch` on
N leased GPUs. `launcher: k8s` runs it in a pod per run through `dagster_k8s.PipesK8sClient`, with
the pod of `configs/prod.yaml` (`k8s:`); the cluster then picks the GPUs.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import dagster as dg

from qlora.core.paths import REPO_ROOT, paths
from resources.gpu import GpuResource

ENTRYPOINT = "qlora.training.entrypoint"


class TrainerResource(dg.ConfigurableResource):
    """Where and how `qlora_adapter` trains: config profile, number of GPUs, extra environment."""

    config: str = "tiny-cpu"  # profile under configs/qlora/ or a path to a YAML file
    num_gpus: int = 0  # 0: one CPU (or single-GPU) subprocess; N>0: accelerate launch --num_processes N
    python: str = ""  # interpreter for the subprocess; default: this one
    env: dict[str, str] = {}
    launcher: Literal["subprocess", "k8s"] = "subprocess"
    kubeconfig_file: str = ""  # k8s launcher outside the cluster; empty: in-cluster or ~/.kube/config

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
        if self.launcher == "k8s":
            return self.run_in_pod(context, args, extras, env)
        # The run's own GPUs (file-locked slots shared by all runs on this host; see resources/gpu.py).
        with GpuResource.from_prod_config().lease(context, count=max(1, self.num_gpus)) as lease:
            client = dg.PipesSubprocessClient(cwd=str(REPO_ROOT), env={**env, **lease.env})
            return client.run(context=context, command=self.command(args), extras=extras)

    def run_in_pod(self, context: dg.AssetExecutionContext, args: list[str], extras: dict, env: dict[str, str]):
        """One pod per run; the adapter lands on the shared QLORA_HOME volume, where the asset publishes it."""
        from dagster_k8s import PipesK8sClient

        from qlora.training.k8s import load_k8s_config, pipes_k8s_run_kwargs, pod_args

        cfg = load_k8s_config()
        kwargs = pipes_k8s_run_kwargs(cfg, domain=str(extras.get("domain", "")), env=env)
        kwargs["command"] = [*kwargs["command"], *pod_args(args, cfg)]
        client = PipesK8sClient(kubeconfig_file=self.kubeconfig_file or None)
        return client.run(context=context, extras=extras, **kwargs)
