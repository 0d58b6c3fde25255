"""Dagster resource that runs the training entrypoint through Pipes.

The trainer holds what it runs on as nested resources, bound in definitions.py: its GPU pool
(``gpu``: which devices a run leases) and its Pipes client (``pipes_client``), as hooli injects
its ``PipesK8sClient``. ``launcher`` says how the entrypoint starts:

- ``subprocess``: one process on this host (CPU, or one leased GPU);
- ``accelerate``: ``accelerate launch`` with one process per leased GPU (``gpu.gpus_per_run``);
- ``k8s``: a pod per run (the ``k8s:`` section of configs/prod.yaml); the cluster picks the GPUs.
"""

import sys
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from qlora.core.config import read_yaml_mapping
from qlora.core.paths import REPO_ROOT, paths
from resources.gpu import GpuResource

ENTRYPOINT = "qlora.training.entrypoint"
Launcher = Literal["subprocess", "accelerate", "k8s"]
LAUNCHERS: tuple[str, ...] = Launcher.__args__


class TrainerResource(dg.ConfigurableResource):
    """Where and how `qlora_adapter` trains: config profile, launcher, GPU pool, Pipes client."""

    gpu: GpuResource = Field(description="GPU pool: the devices each training run leases.")
    # No `from __future__ import annotations` in this module: string annotations hide the
    # dependency from Dagster, which then refuses the client.
    pipes_client: dg.ResourceDependency[dg.PipesClient] = Field(
        description="PipesSubprocessClient for subprocess/accelerate, PipesK8sClient for k8s.")
    config: str = Field(default="tiny-cpu", description="Profile under configs/qlora/, or a path to a YAML file.")
    launcher: Launcher = Field(default="subprocess", description="subprocess | accelerate | k8s (see module doc).")
    python: str = Field(default="", description="Interpreter for subprocess/accelerate; '' = this one.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the training process.")

    def config_path(self) -> Path:
        candidate = Path(self.config)
        if candidate.suffix in {".yaml", ".yml"}:
            return candidate if candidate.is_absolute() else REPO_ROOT / candidate
        return paths().config_dir / "qlora" / f"{self.config}.yaml"

    def command(self, args: list[str]) -> list[str]:
        python = self.python or sys.executable
        if self.launcher == "accelerate":
            return [python, "-m", "accelerate.commands.launch", "--num_processes", str(self.gpu.gpus_per_run),
                    "--module", ENTRYPOINT, *args]
        return [python, "-m", ENTRYPOINT, *args]

    def run(self, context: dg.AssetExecutionContext, args: list[str], extras: dict):
        # NVLink multicast stays off on shared multi-GPU hosts; P2P stays on (set NCCL_P2P_DISABLE=1 without NVLink).
        env = {"NCCL_NVLS_ENABLE": "0", "TOKENIZERS_PARALLELISM": "false", **self.env}
        if self.launcher == "k8s":
            return self.run_in_pod(context, args, extras, env)
        if not isinstance(self.pipes_client, dg.PipesSubprocessClient):
            raise dg.Failure(f"trainer: launcher {self.launcher!r} needs a PipesSubprocessClient as "
                             f"pipes_client, got {type(self.pipes_client).__name__}")
        # The run's own GPUs (file-locked slots shared by all runs on this host; see resources/gpu.py).
        with self.gpu.lease(context) as lease:
            return self.pipes_client.run(context=context, command=self.command(args), extras=extras,
                                         env={**env, **lease.env}, cwd=str(REPO_ROOT))

    def run_in_pod(self, context: dg.AssetExecutionContext, args: list[str], extras: dict, env: dict[str, str]):
        """One pod per run; the adapter lands on the shared QLORA_HOME volume, where the asset publishes it."""
        from dagster_k8s import PipesK8sClient

        from qlora.training.k8s import load_k8s_config, pipes_k8s_run_kwargs, pod_args

        if not isinstance(self.pipes_client, PipesK8sClient):
            raise dg.Failure(f"trainer: launcher 'k8s' needs a PipesK8sClient as pipes_client, "
                             f"got {type(self.pipes_client).__name__}")
        cfg = load_k8s_config()
        kwargs = pipes_k8s_run_kwargs(cfg, domain=str(extras.get("domain", "")), env=env)
        kwargs["command"] = [*kwargs["command"], *pod_args(args, cfg)]
        return self.pipes_client.run(context=context, extras=extras, **kwargs)


def pipes_client_for(launcher: str, kubeconfig_file: str = "") -> dg.PipesClient:
    """The Pipes client a launcher needs; constructing it contacts nothing (the cluster is met at run time)."""
    if launcher == "k8s":
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient(kubeconfig_file=kubeconfig_file or None)
    return dg.PipesSubprocessClient(cwd=str(REPO_ROOT))


def trainer_on_this_host(config: str = "tiny-cpu", gpu: GpuResource | None = None, **fields) -> TrainerResource:
    """The local profile's trainer: a subprocess on this host, the embedded GPU pool defaults."""
    return TrainerResource(gpu=gpu or GpuResource(), pipes_client=pipes_client_for("subprocess"),
                           config=config, **fields)


def trainer_from_prod_config(path: Path, gpu: GpuResource, launcher: str | None = None) -> TrainerResource:
    """The prod profile's trainer from the ``trainer:`` section of configs/prod.yaml.

    ``launcher`` (the value of $QLORA_TRAINER_LAUNCHER, read by definitions.py) overrides the file's.
    A missing file gives the embedded defaults, so the Definitions load anywhere.
    """
    section = (read_yaml_mapping(path).get("trainer") or {}) if path.is_file() else {}
    known = {"config", "launcher", "python", "env", "kubeconfig_file"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{path}: trainer: unknown field(s) {unknown}; known: {sorted(known)}")
    chosen = launcher or section.get("launcher", "subprocess")
    if chosen not in LAUNCHERS:
        source = "QLORA_TRAINER_LAUNCHER" if launcher else f"{path}: trainer.launcher"
        raise ValueError(f"{source}: {chosen!r} is not a launcher; expected one of {', '.join(LAUNCHERS)}")
    fields = {k: v for k, v in section.items() if k in {"config", "python", "env"}}
    return TrainerResource(gpu=gpu, pipes_client=pipes_client_for(chosen, section.get("kubeconfig_file", "")),
                           launcher=chosen, **fields)
