"""Pod spec for running the training Pipes entrypoint on Kubernetes (``dagster_k8s.PipesK8sClient``).

The asset stays the same on a laptop and on a cluster: only the client differs. This module turns
the ``k8s:`` section of ``configs/prod.yaml`` into the keyword arguments of
``PipesK8sClient.run(context=..., extras=..., **pipes_k8s_run_kwargs(cfg, domain=...))``.
No dagster import here, so the spec is unit-tested as plain data.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qlora.core.config import read_yaml_mapping
from qlora.core.paths import REPO_ROOT, paths

ENTRYPOINT_MODULE = "qlora.training.entrypoint"
GPU_RESOURCE = "nvidia.com/gpu"
HOME_VOLUME = "qlora-home"
SHM_VOLUME = "dshm"


class VolumeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    claim_name: str = Field(description="PVC holding QLORA_HOME: base models, datasets, adapters.")
    mount_path: str = Field(default="/qlora", description="Where the PVC is mounted; becomes QLORA_HOME.")


class K8sTrainingConfig(BaseModel):
    """One training pod: image, GPUs, the QLORA_HOME volume and the environment NCCL needs."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="Image with this repo and its training dependencies installed.")
    image_pull_policy: str = "IfNotPresent"
    namespace: str = "default"
    service_account: str | None = None
    gpus: int = Field(default=1, ge=1, description="nvidia.com/gpu limit; >1 runs accelerate launch.")
    cpu: str = "8"
    memory: str = "64Gi"
    volume: VolumeConfig
    shm_size: str = Field(default="16Gi", description="In-memory /dev/shm for NCCL and data loaders.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, description="Extra container env (NCCL_*, HF_*).")
    pod_wait_timeout_s: float = Field(default=1800, gt=0)


def load_k8s_config(config_path: str | Path | None = None) -> K8sTrainingConfig:
    """Read the ``k8s:`` section of configs/prod.yaml ($QLORA_PROD_CONFIG overrides the path)."""
    path = Path(config_path or os.environ.get("QLORA_PROD_CONFIG") or paths().config_dir / "prod.yaml")
    section = read_yaml_mapping(path).get("k8s")
    if section is None:
        raise ValueError(f"{path}: no 'k8s:' section; see configs/prod.yaml in the repo for one")
    try:
        return K8sTrainingConfig.model_validate(section)
    except ValidationError as exc:
        problems = "; ".join(f"k8s.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {problems}") from exc


def training_command(cfg: K8sTrainingConfig) -> list[str]:
    """The Pipes entrypoint; one process per GPU through accelerate when the pod has several."""
    if cfg.gpus == 1:
        return ["python", "-m", ENTRYPOINT_MODULE]
    return ["accelerate", "launch", "--num_processes", str(cfg.gpus), "-m", ENTRYPOINT_MODULE]


def pod_args(args: list[str], cfg: K8sTrainingConfig, home: Path | None = None, repo: Path | None = None) -> list[str]:
    """The entrypoint's arguments as the pod sees them.

    Paths under this host's QLORA_HOME move to the volume's mount path (the same PVC, mounted in
    both places); paths inside the repo become relative, since the image holds the repo as its
    working directory. Anything else (a base checkpoint elsewhere, JSON extras) is passed as is.
    """
    home = (home or paths().home).resolve()
    repo = (repo or REPO_ROOT).resolve()
    translated = []
    for arg in args:
        path = Path(arg)
        if path.is_absolute():
            resolved = path.resolve()
            if resolved.is_relative_to(home):
                arg = str(Path(cfg.volume.mount_path) / resolved.relative_to(home))
            elif resolved.is_relative_to(repo):
                arg = str(resolved.relative_to(repo))
        translated.append(arg)
    return translated


def pod_name_safe(value: str) -> str:
    """Label values: at most 63 chars of [A-Za-z0-9._-], starting and ending alphanumeric."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63].strip("-._") or "none"


def pipes_k8s_run_kwargs(cfg: K8sTrainingConfig, *, domain: str, env: dict[str, str] | None = None) -> dict:
    """Keyword arguments for ``PipesK8sClient.run`` (besides context and extras)."""
    resources = {"cpu": cfg.cpu, "memory": cfg.memory, GPU_RESOURCE: str(cfg.gpus)}
    container = {
        "name": "trainer",
        "image_pull_policy": cfg.image_pull_policy,
        # GPUs can only be requested as limits; requests default to the same numbers.
        "resources": {"limits": resources, "requests": dict(resources)},
        "volume_mounts": [
            {"name": HOME_VOLUME, "mount_path": cfg.volume.mount_path},
            {"name": SHM_VOLUME, "mount_path": "/dev/shm"},
        ],
    }
    spec: dict = {
        "containers": [container],
        "restart_policy": "Never",
        "volumes": [
            {"name": HOME_VOLUME, "persistent_volume_claim": {"claim_name": cfg.volume.claim_name}},
            {"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": cfg.shm_size}},
        ],
    }
    if cfg.service_account:
        spec["service_account_name"] = cfg.service_account
    if cfg.node_selector:
        spec["node_selector"] = dict(cfg.node_selector)
    if cfg.tolerations:
        spec["tolerations"] = [dict(t) for t in cfg.tolerations]
    # The device plugin sets CUDA_VISIBLE_DEVICES inside the pod; a host-side lease must not leak in.
    pod_env = {k: v for k, v in (env or {}).items() if k != "CUDA_VISIBLE_DEVICES"}
    return {
        "image": cfg.image,
        "command": training_command(cfg),
        "namespace": cfg.namespace,
        "env": {**cfg.env, **pod_env, "QLORA_HOME": cfg.volume.mount_path},
        "base_pod_meta": {"labels": {"app.kubernetes.io/name": "qlora-trainer",
                                     "qlora/domain": pod_name_safe(domain)}},
        "base_pod_spec": spec,
        "pod_wait_timeout": cfg.pod_wait_timeout_s,
    }
