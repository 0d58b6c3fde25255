"""NCCL settings for a multi-GPU training launch, decided from the leased GPUs' peer access.

The seed's troubleshooting: NCCL hangs or fails between GPUs without peer-to-peer access (no
NVLink, PCIe peer access off, some VMs); `NCCL_P2P_DISABLE=1` routes through host memory instead.
It costs bandwidth, so it is set only when some pair of the leased GPUs lacks peer access. NVLink
multicast stays off on shared hosts whatever the topology (it can take the host's GPUs down).
Peer access comes from `nvidia-smi topo -p2p r` (no CUDA context in the orchestrating process),
else from `torch.cuda.can_device_access_peer`; with neither, nothing is assumed missing.
"""
from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Callable, Sequence

ALWAYS = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
PeerProbe = Callable[[int, int], bool | None]  # (gpu a, gpu b) by physical index -> peer access; None: unknown


def parse_p2p_matrix(text: str) -> dict[tuple[int, int], bool]:
    """`nvidia-smi topo -p2p r` -> {(a, b): readable}; 'OK' is access, 'NS'/'CNS'/'TNS'/... is not."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header = next((row for row in lines if row and all(cell.startswith("GPU") for cell in row)), None)
    if header is None:
        return {}
    columns = [int(cell[3:]) for cell in header]
    matrix: dict[tuple[int, int], bool] = {}
    for row in lines:
        if len(row) == len(columns) + 1 and row[0].startswith("GPU") and row[0][3:].isdigit():
            a = int(row[0][3:])
            for b, cell in zip(columns, row[1:]):
                if a != b:
                    matrix[(a, b)] = cell == "OK"
    return matrix


def nvidia_smi_probe(run=subprocess.run) -> PeerProbe | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = run(["nvidia-smi", "topo", "-p2p", "r"], capture_output=True, text=True, check=False, timeout=30)
    matrix = parse_p2p_matrix(out.stdout) if out.returncode == 0 else {}
    return (lambda a, b: matrix.get((a, b))) if matrix else None


def torch_probe() -> PeerProbe | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return lambda a, b: bool(torch.cuda.can_device_access_peer(a, b))


def peer_access_missing(devices: Sequence[str], probe: PeerProbe | None) -> bool:
    """True when some ordered pair of the devices is known to lack peer access."""
    if probe is None or len(devices) < 2:
        return False
    ids = [int(d) for d in devices]
    return any(probe(a, b) is False for a, b in itertools.permutations(ids, 2))


def nccl_env(devices: Sequence[str], probe: PeerProbe | None | str = "auto") -> dict[str, str]:
    """The env a launch on `devices` needs: multicast off always; P2P off when peer access is missing."""
    if probe == "auto":
        probe = (nvidia_smi_probe() or torch_probe()) if len(devices) > 1 else None
    env = dict(ALWAYS)
    if peer_access_missing(devices, probe):
        env["NCCL_P2P_DISABLE"] = "1"
    return env
