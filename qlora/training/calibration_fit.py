"""Fitting the calibration's models on measured points (used by bench/train_gpu_calibrate.py).

Memory: least squares with every coefficient >= 0 (scipy's NNLS) on peak minus the exact terms
(weights, LoRA, workspace); a term no point exercises keeps its analytic 1.0. Throughput: per
shape and micro-batch size, 1 / MFU = a + b * f with f the recomputed share of the layers.
"""
from __future__ import annotations

import json

from qlora.training.calibration import setup_of, shape_of
from qlora.training.memory import DEFAULT_COEFFICIENTS, GIB, memory_terms

COLUMNS = [("activations", "seed"), ("activations", "fast"), ("loss", "full"), ("loss", "chunked"),
           ("loss", "fused")]


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


