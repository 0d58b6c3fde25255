"""The calibration file: measured points per GPU, and the memory and throughput models fitted on them.

`bench/train_gpu_calibrate.py` turns the GPU bench's JSON into `configs/calibration/<gpu>.json`:
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

from qlora.training.memory import DEFAULT_COEFFICIENTS, GIB, KNOWN_SHAPES, Setup, Shape, memory_terms

BENCH_SHAPES = {"8b": "llama-3.1-8b", "70b": "llama-3.1-70b"}
COLUMNS = [("activations", "seed"), ("activations", "fast"), ("loss", "full"), ("loss", "chunked"),
           ("loss", "fused")]


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
                 recomputed_layers=point["recomputed_layers"], r=point.get("r", 64))


def _exact_and_columns(point: dict) -> tuple[float, list[float]]:
    terms = memory_terms(shape_of(point), setup_of(point))
    exact = (terms["weights"] + terms["lora"] + terms["workspace"]) / GIB
    row = [terms[kind] / GIB if key == (point["recipe"] if kind == "activations" else point["loss"]) else 0.0
           for kind, key in COLUMNS]
    return exact, row


def fit_memory_model(points: list[dict]) -> dict:
    """Coefficients of the calibrated terms; a term no point exercises keeps its analytic 1.0."""
    import numpy as np
    from scipy.optimize import nnls

    usable = [p for p in points if p.get("peak_allocated_gib")]
    if not usable:
        return {"coefficients": DEFAULT_COEFFICIENTS, "points": 0, "max_abs_error_gib": None}
    rows, targets = [], []
    for point in usable:
        exact, row = _exact_and_columns(point)
        rows.append(row + [1.0])
        targets.append(point["peak_allocated_gib"] - exact)
    matrix = np.array(rows)
    active = [i for i in range(matrix.shape[1]) if matrix[:, i].any()]
    solution, _ = nnls(matrix[:, active], np.array(targets))
    coefficients = json.loads(json.dumps(DEFAULT_COEFFICIENTS))
    for index, value in zip(active, solution):
        if index == len(COLUMNS):
            coefficients["constant_gib"] = round(float(value), 3)
        else:
            kind, key = COLUMNS[index]
            coefficients[kind][key] = round(float(value), 4)
    errors = [float(matrix[i, active] @ solution - targets[i]) for i in range(len(usable))]
    return {"coefficients": coefficients, "points": len(usable),
            "max_abs_error_gib": round(max(abs(e) for e in errors), 2)}


def fit_throughput_model(points: list[dict]) -> dict:
    """Per shape and micro-batch: 1/MFU = a + b*f over the fast recipe's points (f = recomputed share).

    A group whose points span less than a quarter of the layers borrows b/a from the others
    (their median), fitting only a, so it still predicts other recompute counts.
    """
    import numpy as np

    groups: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for p in points:
        if p["recipe"] == "fast" and p.get("mfu"):
            f = p["recomputed_layers"] / shape_of(p).layers
            groups.setdefault((p["shape"], p["micro_batch_tokens"]), []).append((f, 1.0 / p["mfu"]))
    fitted, ratios = {}, []
    for key, values in groups.items():
        fs = [f for f, _ in values]
        if max(fs) - min(fs) >= 0.25:  # a slope from nearby points only would extrapolate noise
            b, a = np.polyfit([f for f, _ in values], [y for _, y in values], 1)
            fitted[key] = (float(a), float(b))
            ratios.append(b / a)
    ratio = float(np.median(ratios)) if ratios else 0.5  # no pair: a recomputed forward ~ half a step
    model: dict = {}
    for (shape, tokens), values in groups.items():
        if (shape, tokens) in fitted:
            a, b = fitted[(shape, tokens)]
        else:
            a = float(np.mean([y / (1 + ratio * f) for f, y in values]))
            b = ratio * a
        model.setdefault(shape, {})[str(tokens)] = {"a": round(a, 4), "b": round(b, 4), "points": len(values)}
    return model


def predicted_mfu(throughput_model: dict, shape_name: str, micro_batch_tokens: int, recomputed_share: float):
    """(MFU, basis): `measured` from this shape's fit, `estimated` from the nearest measured shape."""
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
    a, b = fits[key]["a"], fits[key]["b"]
    return 1.0 / (a + b * recomputed_share), basis
