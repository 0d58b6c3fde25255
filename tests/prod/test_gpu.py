"""GPU slot allocation: runs never share a device unless configured to, across processes."""
import multiprocessing
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from resources.gpu import RUN_TAG_DEVICES, GpuResource, GpuSlotAllocator, detect_devices

REPO = Path(__file__).resolve().parents[2]


def _hold(lock_dir: str, owner: str, hold_s: float) -> None:
    alloc = GpuSlotAllocator(Path(lock_dir), ["0"], poll_s=0.02)
    with alloc.lease(owner, timeout_s=60):
        time.sleep(hold_s)


def _take_and_die(lock_dir: str) -> None:
    alloc = GpuSlotAllocator(Path(lock_dir), ["0"])
    with alloc.lease("doomed"):
        os._exit(3)  # a crashed run worker: no release, no cleanup


def test_processes_on_one_gpu_never_overlap(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_hold, args=(str(tmp_path), f"run-{i}", 0.2)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    leases = sorted(GpuSlotAllocator(tmp_path, ["0"]).leases(), key=lambda lease: lease["acquired_at"])
    assert [lease["devices"] for lease in leases] == [["0"]] * 3
    for earlier, later in zip(leases, leases[1:]):
        assert earlier["released_at"] <= later["acquired_at"], (earlier, later)


def test_exclusive_device_blocks_a_second_lease(tmp_path):
    alloc = GpuSlotAllocator(tmp_path, ["0"], poll_s=0.01)
    with alloc.lease("a"):
        with pytest.raises(TimeoutError, match="no 1 free GPU"):
            with alloc.lease("b", timeout_s=0.1):
                pass
    with alloc.lease("b", timeout_s=0.1) as lease:  # freed on exit
        assert lease.devices == ("0",)


def test_sharing_allowed_by_config(tmp_path):
    alloc = GpuSlotAllocator(tmp_path, ["0"], runs_per_gpu=2, poll_s=0.01)
    with alloc.lease("a") as first, alloc.lease("b", timeout_s=0.1) as second:
        assert first.devices == second.devices == ("0",)
        with pytest.raises(TimeoutError):
            with alloc.lease("c", timeout_s=0.1):
                pass


def test_multi_gpu_leases_are_disjoint(tmp_path):
    alloc = GpuSlotAllocator(tmp_path, ["0", "1", "2", "3"], poll_s=0.01)
    with alloc.lease("a", count=2) as a, alloc.lease("b", count=2) as b:
        assert set(a.devices).isdisjoint(b.devices)
        assert a.env["CUDA_VISIBLE_DEVICES"] == ",".join(a.devices) and a.env["NCCL_NVLS_ENABLE"] == "0"
        with pytest.raises(TimeoutError):
            with alloc.lease("c", count=1, timeout_s=0.1):
                pass


def test_asking_for_more_gpus_than_the_host_has_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="asked for 3 GPUs, this host offers 2"):
        with GpuSlotAllocator(tmp_path, ["0", "1"]).lease("a", count=3):
            pass


def test_a_dead_run_worker_frees_its_gpu(tmp_path):
    child = multiprocessing.get_context("fork").Process(target=_take_and_die, args=(str(tmp_path),))
    child.start()
    child.join(60)
    assert child.exitcode == 3
    with GpuSlotAllocator(tmp_path, ["0"], poll_s=0.01).lease("next", timeout_s=5) as lease:
        assert lease.devices == ("0",)


def test_detect_devices_prefers_the_env_list(monkeypatch):
    monkeypatch.setenv("QLORA_GPU_DEVICES", "2, 5")
    assert detect_devices() == (["2", "5"], False)


def test_prod_config_builds_the_resource_and_pool_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_GPU_DEVICES", "0,1,2,3")
    resource = GpuResource.from_prod_config(REPO / "configs" / "prod.yaml")
    assert resource.devices == "auto" and resource.gpus_per_run == 1
    assert resource.pool_limit() == 4
    config = tmp_path / "prod.yaml"
    config.write_text("gpu:\n  devices: [0, 1, 2, 3]\n  gpus_per_run: 2\n  runs_per_gpu: 2\n")
    assert GpuResource.from_prod_config(config).pool_limit() == 4
    config.write_text("gpu:\n  gpu_count: 4\n")
    with pytest.raises(ValueError, match=r"prod.yaml: gpu: unknown field\(s\) \['gpu_count'\]"):
        GpuResource.from_prod_config(config)


def test_without_a_prod_config_the_embedded_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("QLORA_PROD_CONFIG", raising=False)
    assert GpuResource.from_prod_config() == GpuResource()
    with pytest.raises(FileNotFoundError):  # a path given on purpose must exist
        GpuResource.from_prod_config(tmp_path / "prod.yaml")


def test_an_asset_run_is_tagged_with_its_devices(tmp_path):
    @dg.asset(pool="gpu")
    def trains(context: dg.AssetExecutionContext, gpu: GpuResource) -> dg.MaterializeResult:
        with gpu.lease(context, count=2) as lease:
            return dg.MaterializeResult(metadata=lease.metadata())

    resource = GpuResource(devices="3,4,5", lock_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize([trains], resources={"gpu": resource}, instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).tags[RUN_TAG_DEVICES] == "3,4"
    meta = result.asset_materializations_for_node("trains")[0].metadata
    assert meta["gpu_devices"].value == "3,4" and meta["gpu_simulated"].value is False
    assert [lease["owner"] for lease in resource.allocator().leases()] == [f"{result.run_id}:trains"]
