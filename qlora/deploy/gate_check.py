"""A deploy runs only for the exact version whose latest gate decision passed (and, where an online A/B
runs or is required, on its decision: qlora/ab/guard.py)."""
from __future__ import annotations

from qlora.evaluation.decisions import latest_gate_decision
from qlora.core.warehouse import Warehouse


def gate_verdict(warehouse: Warehouse, domain: str, version: str) -> tuple[bool, str]:
    """(passed, reason); a version that was never gated does not pass."""
    decision = latest_gate_decision(warehouse, domain, version)
    if decision is None:
        return False, f"no gate decision for {domain}@{version}: run gate_decision (qlora quality-gate) first"
    if not decision.passed:
        return False, (f"gate blocked {domain}@{version} at {decision.decided_at:%Y-%m-%d %H:%M:%S} "
                       f"by {', '.join(decision.blocked_gates) or 'unknown gates'}")
    from qlora.ab.guard import promotion_verdict  # here, not at import: qlora.ab imports the deploy area

    allowed, why = promotion_verdict(warehouse, domain, version)
    if not allowed:
        return False, why
    return True, f"gate passed at {decision.decided_at:%Y-%m-%d %H:%M:%S}"
