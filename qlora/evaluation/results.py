"""The eval report: metrics per model role (candidate / base / deployed), as JSON, markdown and rows.

The JSON file is what `qlora evaluate --output` writes and `qlora quality-gate
--results` reads. A metric is stored as ``{"value": x, "measured": true}`` or
``{"value": null, "measured": false, "reason": "..."}`` so that "not measured"
survives the round trip and can never be mistaken for a pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from qlora.core.io import read_json, write_json_atomic
from qlora.evaluation.metrics import MetricValue, NotMeasured, is_measured
from qlora.evaluation.scoring import METRIC_NAMES, RowScore

ROLES = ("candidate", "base", "deployed")


@dataclass
class ModelReport:
    role: str
    model: str
    metrics: dict[str, MetricValue]
    rows: int
    wall_s: float


@dataclass
class EvalResults:
    domain: str
    adapter_version: str
    eval_data: str
    concurrency: int
    reports: dict[str, ModelReport]
    candidate_rows: list[RowScore] = field(default_factory=list)
    deployed_model: str | None = None

    def metric(self, role: str, name: str) -> MetricValue:
        report = self.reports.get(role)
        if report is None:
            return NotMeasured(f"no {role} model was evaluated")
        return report.metrics.get(name, NotMeasured(f"{name} missing from the {role} report"))

    # --- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "adapter_version": self.adapter_version,
            "eval_data": self.eval_data,
            "concurrency": self.concurrency,
            "deployed_model": self.deployed_model,
            "models": {
                role: {
                    "model": r.model,
                    "rows": r.rows,
                    "wall_s": r.wall_s,
                    "metrics": {name: _encode(v) for name, v in r.metrics.items()},
                }
                for role, r in self.reports.items()
            },
            "candidate_rows": [asdict(row) for row in self.candidate_rows],
        }

    def write(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "results") -> "EvalResults":
        try:
            reports = {
                role: ModelReport(
                    role=role,
                    model=body["model"],
                    rows=int(body["rows"]),
                    wall_s=float(body["wall_s"]),
                    metrics={name: _decode(v, f"{source}: field 'models.{role}.metrics.{name}'") for name, v in body["metrics"].items()},
                )
                for role, body in raw["models"].items()
            }
            return cls(
                domain=raw["domain"],
                adapter_version=raw["adapter_version"],
                eval_data=raw.get("eval_data", ""),
                concurrency=int(raw.get("concurrency", 1)),
                reports=reports,
                candidate_rows=[RowScore(**row) for row in raw.get("candidate_rows", [])],
                deployed_model=raw.get("deployed_model"),
            )
        except KeyError as exc:
            raise ValueError(f"{source}: field {exc} is missing; write results with `qlora evaluate`") from None

    @classmethod
    def read(cls, path: str | Path) -> "EvalResults":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: results file not found")
        return cls.from_dict(read_json(path, "eval results"), str(path))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "EvalResults":
        """Rebuild from `eval_reports` rows of one domain, adapter version and evaluation run."""
        first = frame.iloc[0]
        reports = {}
        for role, rows in frame.groupby("model_role", sort=False):
            metrics: dict[str, MetricValue] = {
                r.metric: float(r.value) if r.measured else NotMeasured(r.reason or "no reason recorded")
                for r in rows.itertuples()
            }
            reports[role] = ModelReport(role, rows.iloc[0]["model"], metrics, rows=0, wall_s=0.0)
        deployed = reports.get("deployed")
        return cls(
            domain=first["domain"],
            adapter_version=first["adapter_version"],
            eval_data="warehouse:eval_reports",
            concurrency=0,
            reports=reports,
            deployed_model=deployed.model if deployed else None,
        )

    # --- views ----------------------------------------------------------------
    def markdown_table(self) -> str:
        roles = [r for r in ROLES if r in self.reports]
        header = "| metric | " + " | ".join(f"{r} (`{self.reports[r].model}`)" for r in roles) + " |"
        lines = [header, "|---|" + "---|" * len(roles)]
        for name in METRIC_NAMES:
            cells = [_cell(self.metric(r, name)) for r in roles]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def warehouse_frame(self) -> pd.DataFrame:
        """Rows of the `eval_reports` table: one per (model role, metric)."""
        rows = []
        for role, report in self.reports.items():
            for name in METRIC_NAMES:
                value = report.metrics.get(name, NotMeasured("not computed"))
                rows.append(
                    {
                        "domain": self.domain,
                        "adapter_version": self.adapter_version,
                        "model_role": role,
                        "model": report.model,
                        "metric": name,
                        "value": float(value) if is_measured(value) else None,
                        "measured": is_measured(value),
                        "reason": "" if is_measured(value) else value.reason,
                    }
                )
        return pd.DataFrame(rows)


def _encode(value: MetricValue) -> dict[str, Any]:
    if is_measured(value):
        return {"value": float(value), "measured": True}
    return {"value": None, "measured": False, "reason": value.reason}


def _decode(raw: Any, where: str) -> MetricValue:
    if not isinstance(raw, dict) or "measured" not in raw:
        raise ValueError(f"{where}: expected {{'value', 'measured'[, 'reason']}}, got {raw!r}")
    if raw["measured"]:
        if not isinstance(raw.get("value"), (int, float)):
            raise ValueError(f"{where}: measured but value is {raw.get('value')!r}")
        return float(raw["value"])
    return NotMeasured(str(raw.get("reason") or "no reason recorded"))


def _cell(value: MetricValue) -> str:
    return f"{value:.4g}" if is_measured(value) else f"not measured ({value.reason})"
