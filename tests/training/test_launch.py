"""The launcher's NCCL decision: P2P off only when the leased GPUs lack peer access; multicast always off."""
from __future__ import annotations

import subprocess

import pytest

from qlora.training.launch import ALWAYS, nccl_env, nvidia_smi_probe, parse_p2p_matrix

TOPO_NVLINK = """ \tGPU0\tGPU1\tGPU2\tGPU3\t
 GPU0\tX\tOK\tOK\tOK\t
 GPU1\tOK\tX\tOK\tOK\t
 GPU2\tOK\tOK\tX\tOK\t
 GPU3\tOK\tOK\tOK\tX\t

Legend:

  X    = Self
  OK   = Status Ok
  CNS  = Chipset not supported
  GNS  = GPU not supported
  TNS  = Topology not supported
  NS   = Not supported
  U    = Unknown
"""
TOPO_SPLIT = TOPO_NVLINK.replace(" GPU1\tOK\tX\tOK\tOK", " GPU1\tOK\tX\tOK\tCNS").replace(" GPU3\tOK\tOK\tOK\tX", " GPU3\tOK\tCNS\tOK\tX")


def fake_smi(text: str, returncode: int = 0):
    def run(cmd, **kwargs):
        assert cmd == ["nvidia-smi", "topo", "-p2p", "r"]
        return subprocess.CompletedProcess(cmd, returncode, stdout=text, stderr="")
    return run


def test_matrix_parses_every_pair():
    matrix = parse_p2p_matrix(TOPO_SPLIT)
    assert len(matrix) == 12 and matrix[(1, 3)] is False and matrix[(3, 1)] is False and matrix[(0, 1)] is True


@pytest.mark.parametrize("topo, devices, disabled", [
    (TOPO_NVLINK, ["0", "1", "2", "3"], False),
    (TOPO_SPLIT, ["0", "1"], False),         # the pair leased has peer access
    (TOPO_SPLIT, ["1", "3"], True),          # it does not: route NCCL through host memory
    (TOPO_SPLIT, ["0", "1", "2", "3"], True),
])
def test_p2p_disabled_exactly_when_a_leased_pair_lacks_peer_access(monkeypatch, topo, devices, disabled):
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/nvidia-smi")
    env = nccl_env(devices, nvidia_smi_probe(run=fake_smi(topo)))
    assert ("NCCL_P2P_DISABLE" in env) is disabled
    assert all(env[k] == v for k, v in ALWAYS.items())


def test_unknown_topology_assumes_nothing_and_one_gpu_needs_no_probe():
    assert "NCCL_P2P_DISABLE" not in nccl_env(["0", "1"], probe=None)
    calls = []
    assert nccl_env(["0"], probe=lambda a, b: calls.append((a, b)) or False) == ALWAYS and not calls


def test_torch_style_probe_is_asked_both_directions():
    asked = []

    def probe(a, b):
        asked.append((a, b))
        return not (a == 5 and b == 4)  # one-way missing access still breaks NCCL's ring

    assert nccl_env(["4", "5"], probe)["NCCL_P2P_DISABLE"] == "1" and set(asked) == {(4, 5), (5, 4)}


def test_failed_nvidia_smi_is_no_answer(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/nvidia-smi")
    assert nvidia_smi_probe(run=fake_smi("", returncode=9)) is None


def test_gpu_lease_env_carries_the_nccl_decision(monkeypatch):
    from resources.gpu import GpuLease

    monkeypatch.setattr("qlora.training.launch.nvidia_smi_probe", lambda: (lambda a, b: False))
    lease = GpuLease(owner="run:op", devices=("0", "1"), host="h", simulated=False, acquired_at=0.0, waited_s=0.0)
    assert lease.env["CUDA_VISIBLE_DEVICES"] == "0,1" and lease.env["NCCL_P2P_DISABLE"] == "1"
    simulated = GpuLease(owner="run:op", devices=("0",), host="h", simulated=True, acquired_at=0.0, waited_s=0.0)
    assert simulated.env == {"CUDA_VISIBLE_DEVICES": "0"}
