"""The calibration file: measured points per GPU, and the memory and throughput models fitted on them.

Reading it needs only the standard library (the training entrypoint reads it on the GPU host);
the fits live in qlora/training/calibration_fit.py (numpy, scipy). `bench/train_gpu_calibrate.py` turns the GPU bench's JSON into `configs/calibration/<gpu>.json`:
every measured point (shape, recipe, micro-batch tokens, recomputed layers, tokens/s, MFU, peak)
with the command and date it came from, the memory model's coefficients (least squares, each
coefficient >= 0, on peak minus the exact terms) and, per shape and micro-batch size, MFU as a
function of the recomputed share f of the layers: 1 / MFU = a + b * f (each recomputed layer adds
its forward pass to the step's time).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from qlora.training.memory import KNOWN_SHAPES, Setup, Shape

BENCH_SHAPES = {"8b": "llama-3.1-8b", "70b": "llama-3.1-70b"}


def gpu_key(device_name: str) -> str:
    """'NVIDIA H200' -> 'h200', 'NVIDIA A100-SXM4-80GB' -> 'a100-sxm4-80gb'."""
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower().replace("nvidia", "")).strip("-")


def calibration_path(config_dir: Path, gpu: str) -> Path:
    return Path(config_dir) / "calibration" / f"{gpu_key(gpu)}.json"


def load_calibration(config_dir: Path, gpu: str) -> dict | None:
    path = calibration_path(config_dir, gpu)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} line {exc.lineno}: not JSON ({exc.msg})") from None
    for field in ("gpu", "memory_model", "throughput_model", "points"):
        if field not in data:
            raise ValueError(f"{path}: field `{field}` missing (regenerate with bench/train_gpu_calibrate.py)")
    return data


def shape_of(point: dict) -> Shape:
    return KNOWN_SHAPES[point["shape"]]


def setup_of(point: dict) -> Setup:
    return Setup(recipe=point["recipe"], loss=point["loss"], micro_batch_tokens=point["micro_batch_tokens"],
                 recomputed_layers=point["recomputed_layers"], r=point.get("r", 64),
                 offloaded_layers=point.get("offloaded_layers", 0),
                 recompute_inputs=point.get("recompute_inputs", False))


def predicted_mfu(throughput_model: dict, shape_name: str, micro_batch_tokens: int, recomputed_share: float):
    """(MFU, basis): `measured` from this shape's fit, `estimated` from the nearest measured shape."""
    fit, basis = mfu_fit(throughput_model, shape_name, micro_batch_tokens)
    if fit is None:
        return None, basis
    a, b = fit
    return 1.0 / (a + b * recomputed_share), basis


def mfu_fit(throughput_model: dict, shape_name: str, micro_batch_tokens: int):
    """((a, b) of 1/MFU = a + b*f, basis), or (None, basis) without a throughput model."""
    basis = "measured"
    if shape_name not in throughput_model:
        if not throughput_model:
            return None, "estimated"
        target = KNOWN_SHAPES[shape_name].body_params if shape_name in KNOWN_SHAPES else 0
        shape_name = min(throughput_model, key=lambda s: abs(KNOWN_SHAPES[s].body_params - target))
        basis = "estimated"
    fits = throughput_model[shape_name]
    key = str(micro_batch_tokens)
    if key not in fits:
        key = min(fits, key=lambda k: abs(int(k) - micro_batch_tokens))
        basis = "estimated"
    return (fits[key]["a"], fits[key]["b"]), basis
