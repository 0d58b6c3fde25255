"""The training pod spec built from configs/prod.yaml, checked through dagster_k8s's own pod builder."""
from __future__ import annotations

from pathlib import Path

import pytest
from dagster_k8s.pipes import build_pod_body

from qlora.training.k8s import (
    ENTRYPOINT_MODULE,
    load_k8s_config,
    pipes_k8s_run_kwargs,
    training_command,
)

REPO = Path(__file__).resolve().parents[2]


def _pod(cfg, **kwargs):
    """What PipesK8sClient.run would submit (it calls build_pod_body with the same arguments)."""
    run_kwargs = pipes_k8s_run_kwargs(cfg, domain="legal-ko", **kwargs)
    pod = build_pod_body(
        pod_name="dagster-abc-qlora-adapter",
        image=run_kwargs["image"],
        command=run_kwargs["command"],
        env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", **run_kwargs["env"]},
        base_pod_meta=run_kwargs["base_pod_meta"],
        base_pod_spec=run_kwargs["base_pod_spec"],
    )
    return run_kwargs, pod


def test_repo_prod_config_makes_a_gpu_training_pod():
    cfg = load_k8s_config(REPO / "configs" / "prod.yaml")
    run_kwargs, pod = _pod(cfg, env={"CUDA_VISIBLE_DEVICES": "3", "QLORA_RUN": "x"})
    (container,) = pod.spec.containers
    assert container.image == cfg.image
    assert container.command == ["python", "-m", ENTRYPOINT_MODULE]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert container.resources.limits["memory"] == cfg.memory
    env = {e.name: e.value for e in container.env}
    assert env["QLORA_HOME"] == cfg.volume.mount_path == "/qlora"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and env["NCCL_DEBUG"] == "WARN"
    assert env["DAGSTER_PIPES_CONTEXT"] == "ctx" and env["QLORA_RUN"] == "x"
    assert "CUDA_VISIBLE_DEVICES" not in env  # the device plugin picks the pod's GPUs
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes[mounts["/qlora"]].persistent_volume_claim.claim_name == "qlora-home"
    assert volumes[mounts["/dev/shm"]].empty_dir.medium == "Memory"
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert pod.spec.tolerations[0].key == "nvidia.com/gpu"
    assert pod.metadata.labels["qlora/domain"] == "legal-ko"
    assert run_kwargs["namespace"] == "qlora" and run_kwargs["pod_wait_timeout"] == 1800


def test_several_gpus_run_through_accelerate(tmp_path):
    config = tmp_path / "prod.yaml"
    config.write_text(
        "k8s:\n  image: img:1\n  gpus: 4\n  volume: {claim_name: adapters}\n"
    )
    cfg = load_k8s_config(config)
    assert training_command(cfg) == [
        "accelerate", "launch", "--num_processes", "4", "-m", ENTRYPOINT_MODULE,
    ]
    _, pod = _pod(cfg)
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"
    assert pod.spec.node_selector is None and pod.spec.service_account_name is None


@pytest.mark.parametrize(
    "body, message",
    [
        ("k8s:\n  image: img\n", r"k8s\.volume: Field required"),
        ("k8s:\n  image: img\n  gpus: 0\n  volume: {claim_name: a}\n", r"k8s\.gpus: Input should be greater"),
        ("k8s:\n  image: img\n  gpu: 2\n  volume: {claim_name: a}\n", r"k8s\.gpu: Extra inputs"),
        ("gpu: {}\n", r"no 'k8s:' section"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path, body, message):
    config = tmp_path / "prod.yaml"
    config.write_text(body)
    with pytest.raises(ValueError, match=message) as info:
        load_k8s_config(config)
    assert str(config) in str(info.value)


def test_pod_args_move_home_paths_to_the_volume_and_repo_paths_to_relative(tmp_path):
    from qlora.training.k8s import pod_args

    cfg = load_k8s_config(REPO / "configs" / "prod.yaml")
    home = tmp_path / "home"
    args = ["--config", str(REPO / "configs" / "qlora" / "llama3-8b-fast.yaml"),
            "--data", str(home / "datasets" / "legal-ko" / "d1" / "train.jsonl"),
            "--base", "/models/llama-3.1-8b", "--extras", '{"domain": "legal-ko"}']
    assert pod_args(args, cfg, home=home, repo=REPO) == [
        "--config", "configs/qlora/llama3-8b-fast.yaml",
        "--data", "/qlora/datasets/legal-ko/d1/train.jsonl",
        "--base", "/models/llama-3.1-8b", "--extras", '{"domain": "legal-ko"}']


def test_trainer_resource_with_the_k8s_launcher_submits_the_pod(monkeypatch, tmp_path):
    """The asset's resource hands PipesK8sClient the pod of configs/prod.yaml and the translated command."""
    from dagster_k8s import PipesK8sClient

    from qlora.core.paths import paths
    from resources.gpu import GpuResource
    from resources.trainer import TrainerResource

    submitted = {}
    monkeypatch.setenv("QLORA_PROD_CONFIG", str(REPO / "configs" / "prod.yaml"))
    monkeypatch.setattr(PipesK8sClient, "run", lambda self, **kwargs: submitted.update(kwargs) or "completed")
    trainer = TrainerResource(gpu=GpuResource(), pipes_client=PipesK8sClient(), launcher="k8s",
                              env={"CUDA_VISIBLE_DEVICES": "7", "EXTRA": "1"})
    work = paths().home / "runs" / "legal-ko" / "k1"
    result = trainer.run("context", ["--output", str(work), "--config", str(trainer.config_path())],
                         extras={"domain": "legal-ko", "version": "3"})
    assert result == "completed" and submitted["context"] == "context"
    assert submitted["extras"] == {"domain": "legal-ko", "version": "3"}
    assert submitted["command"] == ["python", "-m", ENTRYPOINT_MODULE, "--output", "/qlora/runs/legal-ko/k1",
                                    "--config", "configs/qlora/tiny-cpu.yaml"]
    assert submitted["env"]["NCCL_NVLS_ENABLE"] == "0" and submitted["env"]["EXTRA"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in submitted["env"]
    assert submitted["base_pod_spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
