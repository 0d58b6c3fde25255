"""The quality gate: every gate of `configs/quality_gate.yaml` gets a value, threshold, verdict and reason.

Verdicts: ``pass``, ``block``, ``skipped``. A gate whose metric was not
measured blocks, unless the config lists it under the domain's
``skip_when_not_measured``; the seed let such gates pass as "N/A".
No-regression compares the candidate with the adapter deployed now; with
nothing deployed it is skipped (a first deployment has nothing to regress from).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from qlora.evaluation.config import Gate, GateConfig
from qlora.evaluation.metrics import is_measured
from qlora.evaluation.results import EvalResults


@dataclass(frozen=True)
class GateVerdict:
    gate: str
    value: float | None
    threshold: str
    verdict: str
    reason: str


@dataclass(frozen=True)
class GateDecision:
    domain: str
    adapter_version: str
    verdicts: list[GateVerdict]

    @property
    def passed(self) -> bool:
        return all(v.verdict != "block" for v in self.verdicts)

    @property
    def blocked_gates(self) -> list[str]:
        return [v.gate for v in self.verdicts if v.verdict == "block"]

    def gates_json(self) -> str:
        return json.dumps([asdict(v) for v in self.verdicts], ensure_ascii=False)

    def markdown_table(self) -> str:
        lines = ["| gate | value | threshold | verdict | reason |", "|---|---|---|---|---|"]
        for v in self.verdicts:
            value = "—" if v.value is None else f"{v.value:.4g}"
            lines.append(f"| {v.gate} | {value} | {v.threshold} | **{v.verdict}** | {v.reason} |")
        return "\n".join(lines)

    def summary(self) -> str:
        if self.passed:
            return f"{self.domain}@{self.adapter_version}: PASS ({len(self.verdicts)} gates)"
        return f"{self.domain}@{self.adapter_version}: BLOCK by {', '.join(self.blocked_gates)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "adapter_version": self.adapter_version,
            "passed": self.passed,
            "blocked_gates": self.blocked_gates,
            "gates": [asdict(v) for v in self.verdicts],
        }


def _threshold_gate(name: str, gate: Gate, results: EvalResults, skippable: set[str]) -> GateVerdict:
    value = results.metric("candidate", name)
    bound = gate.min if gate.higher_is_better else gate.max
    threshold = f">= {bound:g}" if gate.higher_is_better else f"<= {bound:g}"
    if not is_measured(value):
        if name in skippable:
            return GateVerdict(name, None, threshold, "skipped", f"not measured ({value.reason}); skipping allowed for {results.domain}")
        return GateVerdict(name, None, threshold, "block", f"not measured ({value.reason}); a missing measurement blocks")
    ok = value >= bound if gate.higher_is_better else value <= bound
    reason = "" if ok else (gate.description or f"{name} {value:.4g} misses {threshold}")
    return GateVerdict(name, float(value), threshold, "pass" if ok else "block", reason)


def _regression_gates(config: GateConfig, results: EvalResults, skippable: set[str]) -> list[GateVerdict]:
    regression = config.regression
    if regression is None:
        return []
    if "deployed" not in results.reports:
        return [GateVerdict("no_regression", None, "vs deployed", "skipped", f"no adapter deployed for {results.domain}: nothing to regress from")]
    verdicts = []
    for name in regression.metrics:
        higher = config.gates[name].higher_is_better
        gate_name = f"no_regression.{name}"
        candidate, deployed = results.metric("candidate", name), results.metric("deployed", name)
        if not is_measured(deployed) or not is_measured(candidate):
            missing = "candidate" if not is_measured(candidate) else "deployed"
            reason = f"{missing} {name} not measured ({(candidate if missing == 'candidate' else deployed).reason})"
            allowed = "no_regression" in skippable or name in skippable
            verdicts.append(GateVerdict(gate_name, None, "vs deployed", "skipped" if allowed else "block", reason))
            continue
        limit = deployed - regression.tolerance if higher else deployed + regression.tolerance
        threshold = f"{'>=' if higher else '<='} {limit:.4g} (deployed {deployed:.4g} {'-' if higher else '+'} {regression.tolerance:g})"
        ok = candidate >= limit if higher else candidate <= limit
        reason = "" if ok else f"regressed from deployed {results.deployed_model or ''} {deployed:.4g} to {candidate:.4g}"
        verdicts.append(GateVerdict(gate_name, float(candidate), threshold, "pass" if ok else "block", reason))
    return verdicts


def decide(results: EvalResults, config: GateConfig) -> GateDecision:
    """Evaluate every configured gate on the candidate's metrics (and against the deployed adapter)."""
    skippable = config.skippable(results.domain)
    verdicts = [_threshold_gate(name, gate, results, skippable) for name, gate in config.gates.items()]
    verdicts += _regression_gates(config, results, skippable)
    return GateDecision(results.domain, results.adapter_version, verdicts)
