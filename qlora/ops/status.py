"""`qlora status`: per domain, what serves (from the router), the last candidate and its gate verdict,
and the last training run with its cost (from the warehouse tables adapters, gate_decisions, deployments)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from qlora.core.paths import discover_domains
from qlora.core.warehouse import Warehouse
from qlora.ops.serving_truth import AliasObservation, observe_aliases
from qlora.serving.client import ServingClient


@dataclass
class DomainStatus:
    domain: str
    serving: str                 # "v3 (90%) + v2 (10%)", "not deployed", "router unreachable"
    serving_weights: dict[str, float]
    candidate: str               # newest registered version
    trained_at: str
    train_loss: float | None
    tokens_per_second: float | None
    cost_usd: float | None
    gate: str                    # "pass", "block (rouge_l, format_compliance)", "not gated"
    last_deploy: str             # "v3 deployed", "v4 blocked: ...", ""


def _rows(warehouse: Warehouse, sql: str) -> dict[str, dict]:
    """One row per domain (the newest), keyed by domain."""
    frame = warehouse.query(sql)
    return {} if frame.empty else {row["domain"]: row for row in frame.to_dict("records")}


def _newest(table: str, order: str) -> str:
    return f"select * from {table} qualify row_number() over (partition by domain order by {order} desc) = 1"


def _gate(decision: dict | None, candidate: str) -> str:
    if decision is None or decision["adapter_version"] != candidate:
        return "not gated"
    if decision["passed"]:
        return "pass"
    blocked = [g["gate"] for g in json.loads(decision["gates_json"]) if g.get("verdict") == "block"]
    return f"block ({', '.join(blocked) or 'unknown gates'})"


def domain_statuses(warehouse: Warehouse, client: ServingClient | None,
                    domains: list[str] | None = None) -> list[DomainStatus]:
    adapters = _rows(warehouse, _newest("adapters", "created_at"))
    gates = _rows(warehouse, _newest("gate_decisions", "decided_at"))
    deploys = _rows(warehouse, _newest("deployments", "started_at"))
    names = sorted(set(domains or discover_domains()) | set(adapters) | set(deploys))
    served: dict[str, AliasObservation] = observe_aliases(client, names)
    statuses = []
    for domain in names:
        adapter = adapters.get(domain) or {}
        manifest = json.loads(adapter.get("manifest_json") or "{}")
        metrics, cost = manifest.get("metrics", {}), manifest.get("cost", {})
        deploy = deploys.get(domain)
        statuses.append(DomainStatus(
            domain=domain,
            serving=served[domain].describe(),
            serving_weights=served[domain].weights,
            candidate=str(adapter.get("version", "")),
            trained_at=str(manifest.get("created_at") or adapter.get("created_at") or ""),
            train_loss=metrics.get("train_loss"),
            tokens_per_second=metrics.get("tokens_per_second"),
            cost_usd=cost.get("usd"),
            gate=_gate(gates.get(domain), str(adapter.get("version", ""))) if adapter else "no candidate",
            last_deploy=(f"{deploy['version']} {deploy['result']}" + (f": {deploy['reason']}" if deploy["reason"] else ""))
            if deploy else "",
        ))
    return statuses


def as_json(statuses: list[DomainStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], ensure_ascii=False, indent=2, default=str)


def as_table(statuses: list[DomainStatus]) -> str:
    header = ("domain", "serving", "candidate", "gate", "trained", "loss", "tokens/s", "cost $", "last deploy")
    rows = [header] + [(
        s.domain, s.serving, s.candidate or "-", s.gate, s.trained_at[:16].replace("T", " ") or "-",
        f"{s.train_loss:.3f}" if s.train_loss is not None else "-",
        f"{s.tokens_per_second:.0f}" if s.tokens_per_second is not None else "-",
        f"{s.cost_usd:.4f}" if s.cost_usd is not None else "-", s.last_deploy[:60] or "-",
    ) for s in statuses]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
