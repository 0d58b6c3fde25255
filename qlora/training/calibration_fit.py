"""Fitting the calibration's models on measured points (used by bench/train_gpu_calibrate.py).

Memory: least squares with every coefficient >= 0 (scipy's NNLS) on peak minus the exact terms
(weights, LoRA, workspace); a term no point exercises keeps its analytic 1.0. Throughput: per
shape and micro-batch size, 1 / MFU = a + b * f with f the recomputed share of the layers, on the
points without offload. Offload: the measured host bandwidth, the pinned pool's ratio to the
analytic bytes, and per shape kappa (qlora/training/offload_model.py), least squares through zero.
"""
from __future__ import annotations

import json

from qlora.training.calibration import setup_of, shape_of
from qlora.training.memory import DEFAULT_COEFFICIENTS, GIB, memory_terms

COLUMNS = [("activations", "seed"), ("activations", "fast"), ("loss", "full"), ("loss", "chunked"),
           ("loss", "fused"), ("in_flight", None)]


def _exact_and_columns(point: dict) -> tuple[float, list[float]]:
    terms = memory_terms(shape_of(point), setup_of(point))
    exact = (terms["weights"] + terms["lora"] + terms["workspace"]) / GIB
    chosen = {"activations": point["recipe"], "loss": point["loss"], "in_flight": None}
    row = [terms[kind] / GIB if key == chosen[kind] else 0.0 for kind, key in COLUMNS]
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
            if key is None:
                coefficients[kind] = round(float(value), 4)
            else:
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
        if p["recipe"] == "fast" and p.get("mfu") and not p.get("offloaded_layers"):
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




def fit_offload_model(points: list[dict], bandwidths: list[dict], throughput_model: dict) -> dict | None:
    """Bandwidth (median of the bench's probes), pinned-pool ratio and kappa per shape, from the offload points."""
    import numpy as np

    from qlora.training.calibration import mfu_fit
    from qlora.training.offload_model import kept_layer_bytes, stall_seconds

    probes = [b for b in bandwidths if b.get("d2h_gbps")]
    if not probes:
        return None
    model = {"d2h_gbps": round(float(np.median([b["d2h_gbps"] for b in probes])), 2),
             "h2d_gbps": round(float(np.median([b["h2d_gbps"] for b in probes])), 2)}
    offloaded = [p for p in points if p.get("offloaded_layers") and p.get("mfu") and p["recipe"] == "fast"]
    ratios = [p["pinned_pool_gib"] * 2**30 / (p["offloaded_layers"] * kept_layer_bytes(shape_of(p), p["micro_batch_tokens"]))
              for p in offloaded if p.get("pinned_pool_gib")]
    model["pinned_factor"] = round(max(ratios), 3) if ratios else 1.1
    by_shape: dict[str, list[tuple]] = {}
    for p in offloaded:
        shape = shape_of(p)
        fit, _ = mfu_fit(throughput_model, p["shape"], p["micro_batch_tokens"])
        if fit is None:
            continue
        tokens = p["micro_batch_tokens"]
        work = tokens * shape.flops_per_token(p.get("r", 64), list(shape.linear_shapes()), min(tokens, 4096)) / 989e12
        measured_extra = work / p["mfu"] - work * (fit[0] + fit[1] * p["recomputed_layers"] / shape.layers)
        by_shape.setdefault(p["shape"], []).append((shape, tokens, p, fit, work, measured_extra))
    model["kappa"], model["efficiency"] = {}, {}
    for name, rows in by_shape.items():
        best = None
        for step in range(26):  # efficiency 0.5 .. 1.0; kappa by least squares through zero for each
            trial = {**model, "efficiency": {name: 1.0 - 0.02 * step}}
            cols = [(*stall_seconds(s, t, p["recomputed_layers"], p["offloaded_layers"], a, b, w, trial), y)
                    for s, t, p, (a, b), w, y in rows]
            kappa = max(0.0, sum(c * (y - e) for e, c, y in cols) / sum(c * c for _, c, _ in cols))
            error = sum((e + kappa * c - y) ** 2 for e, c, y in cols)
            if best is None or error < best[0]:
                best = (error, kappa, 1.0 - 0.02 * step)
        model["kappa"][name], model["efficiency"][name] = round(best[1], 3), round(best[2], 2)
    model["points"] = len(offloaded)
    return model
