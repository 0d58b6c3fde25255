"""Blocking asset checks of the data assets, from the Pandera verdicts in `schemas.py`.

The checks are declared on the assets (`check_specs`) and evaluated inside them, on
the frames the asset just wrote: a failure (ERROR) stops every downstream asset.
"""
from __future__ import annotations

import dagster as dg
import pandas as pd

from qlora.data.schemas import Verdict

RAW_CHECKS = {"rows_accounted": "nothing dropped: rows in = rows read"}
CLEANED_CHECKS = {
    "duplicates": "duplicate rate < 5% before dedup and 0 after (seed checklist)",
    "token_lengths": "instruction 10-2048 and output 5-4096 base-tokenizer tokens (seed checklist)",
    "pii_residual": "0 PII left, by an independent re-scan (seed checklist)",
    "licences_allowed": "every row under a licence allowed for the domain (seed checklist)",
    "target_language": "target language share >= 95% (seed checklist)",
    "has_rows": "at least one row kept (with none, the checks above pass vacuously)",
}
SPLIT_CHECKS = {
    "no_contamination": "no eval row's normalised prompt hash in train",
    "eval_rows_cover_gates": "the eval rows can measure every gate in use (checked before any training)",
}


def specs(asset: str, checks: dict[str, str]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, description=text, blocking=True) for name, text in checks.items()]


def _markdown(frame: pd.DataFrame, limit: int = 5) -> str:
    if frame.empty:
        return "(none)"
    shown = frame.head(limit).astype(str).apply(lambda col: col.str.slice(0, 120))
    return shown.to_markdown(index=False)


def check_result(v: Verdict) -> dg.AssetCheckResult:
    metadata: dict = {"failures": dg.MetadataValue.int(v.failures), "rule": v.description}
    for key, value in v.numbers.items():
        metadata[key] = value if isinstance(value, (int, float, str)) else str(value)
    if not v.passed:
        cases = v.failure_cases
        keep = [c for c in ("column", "check", "failure_case", "index") if c in cases.columns]
        metadata["failure_cases"] = dg.MetadataValue.md(_markdown(cases[keep], 10))
        metadata["sample_failing_rows"] = dg.MetadataValue.md(_markdown(v.sample_rows))
    return dg.AssetCheckResult(
        check_name=v.name, passed=v.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )


def gate_coverage_result(domain: str, stored: pd.DataFrame) -> dg.AssetCheckResult:
    """Blocks training when the eval split lacks the rows a gate needs (qlora/ops/eval_coverage.py)."""
    from qlora.evaluation.config import gate_config_path, load_gate_config
    from qlora.ops.eval_coverage import filled_rows, gate_shortfalls, shortfall_message

    evals = stored[stored["split"] == "eval"]
    gates_file = gate_config_path()
    short = gate_shortfalls(evals, load_gate_config(gates_file), domain)
    todo = len(evals) - len(filled_rows(evals))
    message = shortfall_message(domain, "train_eval_split", short, str(gates_file), todo) if short else ""
    return dg.AssetCheckResult(
        check_name="eval_rows_cover_gates", passed=not short, severity=dg.AssetCheckSeverity.ERROR,
        description=message or None,
        metadata={"gates_file": str(gates_file), "eval_rows": len(evals), "todo_rows": todo,
                  "shortfalls": dg.MetadataValue.md(message.replace("\n", "  \n") or "none")},
    )
