"""GPUs as a managed resource: each run leases its own devices and passes them on as CUDA_VISIBLE_DEVICES.

Two layers keep runs apart. Dagster's concurrency pool (``pool="gpu"`` on the training and eval
assets, limit = ``GpuResource.pool_limit()``) decides how many GPU steps may run at once; this
resource then decides *which* devices each of them gets. The slots are file locks under
``$QLORA_HOME/gpu_slots``, so they hold across the separate processes of concurrent runs, and the
OS frees them when a run worker dies. Every lease is written to ``leases.jsonl`` there and to the
run's tags (``qlora/gpu_devices``), so one can always tell which run used which GPU and when.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import dagster as dg
from filelock import FileLock, Timeout
from pydantic import Field

from qlora.core.config import read_yaml_mapping
from qlora.core.io import read_records
from qlora.core.paths import paths

RUN_TAG_DEVICES = "qlora/gpu_devices"
RUN_TAG_HOST = "qlora/gpu_host"


@dataclass(frozen=True)
class GpuLease:
    """The devices one run holds; ``env`` is what the training subprocess or pod must see."""

    owner: str
    devices: tuple[str, ...]
    host: str
    simulated: bool
    acquired_at: float
    waited_s: float
    pid: int = field(default_factory=os.getpid)

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.devices)

    @property
    def env(self) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES, and NCCL's settings for these GPUs (qlora.training.launch.nccl_env)."""
        if self.simulated:
            return {"CUDA_VISIBLE_DEVICES": self.cuda_visible_devices}
        from qlora.training.launch import nccl_env

        return {"CUDA_VISIBLE_DEVICES": self.cuda_visible_devices, **nccl_env(self.devices)}

    def metadata(self) -> dict[str, str | float | bool]:
        return {
            "gpu_devices": self.cuda_visible_devices,
            "gpu_host": self.host,
            "gpu_simulated": self.simulated,
            "gpu_wait_s": round(self.waited_s, 3),
        }


def detect_devices() -> tuple[list[str], bool]:
    """This host's GPU ids and whether they are simulated.

    $QLORA_GPU_DEVICES (comma list) wins, then ``nvidia-smi``; a host without GPUs gets one
    simulated slot "0", so CPU runs are serialised exactly like runs on a one-GPU host.
    """
    listed = os.environ.get("QLORA_GPU_DEVICES", "").strip()
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()], False
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, check=False, timeout=30,
        )
        found = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and found:
            return found, False
    return ["0"], True


class GpuSlotAllocator:
    """Inter-process GPU slots: ``runs_per_gpu`` lock files per device; a lease holds one per device."""

    def __init__(self, lock_dir: Path, devices: Sequence[str], runs_per_gpu: int = 1,
                 simulated: bool = False, poll_s: float = 0.5):
        if not devices:
            raise ValueError("GpuSlotAllocator: no devices given (set gpu.devices in configs/prod.yaml)")
        if runs_per_gpu < 1:
            raise ValueError(f"GpuSlotAllocator: runs_per_gpu must be >= 1, got {runs_per_gpu}")
        self.lock_dir = Path(lock_dir)
        self.devices = list(devices)
        self.runs_per_gpu = runs_per_gpu
        self.simulated = simulated
        self.poll_s = poll_s

    @property
    def ledger_path(self) -> Path:
        return self.lock_dir / "leases.jsonl"

    def _slot_lock(self, device: str, slot: int) -> FileLock:
        return FileLock(self.lock_dir / f"gpu{device}.slot{slot}.lock", thread_local=False)

    def _try_take(self, count: int, stack: ExitStack) -> list[str]:
        """Take one free slot on each of ``count`` distinct devices, or nothing at all."""
        taken: list[str] = []
        for device in self.devices:
            for slot in range(self.runs_per_gpu):
                lock = self._slot_lock(device, slot)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                stack.callback(lock.release)
                taken.append(device)
                break
            if len(taken) == count:
                return taken
        stack.close()  # partial: give back, or two runs could each hold half of what they need
        return []

    @contextmanager
    def lease(self, owner: str, count: int = 1, timeout_s: float = 6 * 3600) -> Iterator[GpuLease]:
        if not 1 <= count <= len(self.devices):
            raise ValueError(
                f"GPU lease for {owner}: asked for {count} GPUs, this host offers "
                f"{len(self.devices)} ({','.join(self.devices)}); lower gpu.gpus_per_run in configs/prod.yaml"
            )
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with ExitStack() as stack:
            while not (devices := self._try_take(count, stack)):
                if time.time() - started > timeout_s:
                    raise TimeoutError(f"GPU lease for {owner}: no {count} free GPU(s) after {timeout_s:.0f} s")
                time.sleep(self.poll_s)
            now = time.time()
            lease = GpuLease(owner=owner, devices=tuple(devices), host=socket.gethostname(),
                             simulated=self.simulated, acquired_at=now, waited_s=now - started)
            self._record("acquire", lease)
            try:
                yield lease
            finally:
                self._record("release", lease)

    def _record(self, event: str, lease: GpuLease) -> None:
        entry = {"event": event, "at": time.time(), **asdict(lease)}
        with FileLock(str(self.ledger_path) + ".lock", thread_local=False):
            with self.ledger_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def leases(self) -> list[dict]:
        """Finished leases: owner, devices, acquired_at, released_at (from the ledger)."""
        if not self.ledger_path.exists():
            return []
        open_at: dict[tuple[str, int, float], dict] = {}
        done = []
        for _, entry in read_records(self.ledger_path, "jsonl"):
            key = (entry["owner"], entry["pid"], entry["acquired_at"])
            if entry["event"] == "acquire":
                open_at[key] = entry
            elif key in open_at:
                done.append({**open_at.pop(key), "released_at": entry["at"]})
        return done


class GpuResource(dg.ConfigurableResource):
    """GPU slots for training and eval steps: each run leases its own devices (CUDA_VISIBLE_DEVICES)."""

    devices: str = Field(default="auto", description="Comma list of device ids on this host; 'auto' = "
                         "$QLORA_GPU_DEVICES, else nvidia-smi, else one simulated slot.")
    gpus_per_run: int = Field(default=1, ge=1, description="Devices one GPU step leases unless it asks for a count.")
    runs_per_gpu: int = Field(default=1, ge=1, description="Steps allowed to share one device; 1 = exclusive.")
    lock_dir: str = Field(default="", description="Slot locks and lease ledger; default $QLORA_HOME/gpu_slots.")
    acquire_timeout_s: float = Field(default=6 * 3600, gt=0, description="Fail after waiting this long for devices.")

    @classmethod
    def from_prod_config(cls, config_path: str | Path | None = None) -> "GpuResource":
        """Build from the ``gpu:`` section of configs/prod.yaml ($QLORA_PROD_CONFIG overrides the path)."""
        path = Path(config_path or os.environ.get("QLORA_PROD_CONFIG") or paths().config_dir / "prod.yaml")
        if config_path is None and not path.exists():
            return cls()  # no prod profile here (a test's config dir): the embedded defaults
        section = read_yaml_mapping(path).get("gpu") or {}
        known = set(cls.model_fields)
        unknown = sorted(set(section) - known - {"pool"})
        if unknown:
            raise ValueError(f"{path}: gpu: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: (",".join(map(str, v)) if k == "devices" and isinstance(v, list) else v)
                      for k, v in section.items() if k in known})

    def allocator(self) -> GpuSlotAllocator:
        if self.devices.strip().lower() == "auto":
            devices, simulated = detect_devices()
        else:
            devices, simulated = [d.strip() for d in self.devices.split(",") if d.strip()], False
        return GpuSlotAllocator(Path(self.lock_dir or paths().gpu_slots), devices,
                                runs_per_gpu=self.runs_per_gpu, simulated=simulated)

    def pool_limit(self) -> int:
        """Slots for the Dagster ``gpu`` pool: how many GPU steps this host runs at once."""
        alloc = self.allocator()
        return max(1, len(alloc.devices) // self.gpus_per_run) * self.runs_per_gpu

    @contextmanager
    def lease(self, context: dg.AssetExecutionContext | dg.OpExecutionContext,
              count: int | None = None) -> Iterator[GpuLease]:
        """Hold ``count`` (default ``gpus_per_run``) devices for the body; tag the run with them."""
        owner = f"{context.run.run_id}:{context.op_def.name}"
        with self.allocator().lease(owner, count or self.gpus_per_run, self.acquire_timeout_s) as lease:
            context.instance.add_run_tags(context.run.run_id, {RUN_TAG_DEVICES: lease.cuda_visible_devices,
                                                           RUN_TAG_HOST: lease.host})
            context.log.info(f"GPU lease: devices {lease.cuda_visible_devices} on {lease.host}"
                             f"{' (simulated)' if lease.simulated else ''} after {lease.waited_s:.1f} s wait")
            yield lease
