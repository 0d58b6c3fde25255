"""What each domain's alias serves, read from the router: the one source the UI, `qlora status`
and MLflow's `serving` alias follow, so none of them can disagree with the traffic.

The router call lives in `alias_weights` only (it reads ``GET /admin/aliases/<name>`` today).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qlora.core.adapters import version_of
from qlora.serving.client import ServingClient, ServingError

SERVING = "serving"        # the alias holds one or two versions with traffic
NOT_DEPLOYED = "not_deployed"  # the router has no alias for the domain yet
UNREACHABLE = "router_unreachable"


def alias_weights(client: ServingClient, domain: str) -> dict[str, float] | None:
    """Versioned name -> share of traffic for the domain's alias; None when the alias is not defined."""
    try:
        return client.get_alias(domain)
    except ServingError as exc:
        if exc.status == 404:
            return None
        raise


@dataclass(frozen=True)
class AliasState:
    domain: str
    status: str
    weights: dict[str, float] = field(default_factory=dict)  # version -> share, largest first
    detail: str = ""

    @property
    def primary_version(self) -> str:
        """The version with most of the traffic ('' when nothing serves)."""
        return next(iter(self.weights), "")

    def describe(self) -> str:
        if self.status != SERVING:
            return f"{self.status.replace('_', ' ')}{': ' + self.detail if self.detail else ''}"
        return " + ".join(f"{version} ({share:.0%})" for version, share in self.weights.items())

    def key(self) -> str:
        """Compact and stable, to tell whether anything changed since the last look."""
        return f"{self.status}|" + ",".join(f"{v}={w:.4f}" for v, w in self.weights.items())


def observe_alias(client: ServingClient, domain: str) -> AliasState:
    try:
        weights = alias_weights(client, domain)
    except ServingError as exc:
        return AliasState(domain, UNREACHABLE, detail=str(exc)[:200])
    if not weights:
        return AliasState(domain, NOT_DEPLOYED)
    ordered = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    return AliasState(domain, SERVING, {version_of(name): round(share, 6) for name, share in ordered if share > 0})


def observe_aliases(client: ServingClient | None, domains: list[str]) -> dict[str, AliasState]:
    """Every domain's alias; with no client (no router runs) every domain reads as unreachable."""
    if client is None:
        return {d: AliasState(d, UNREACHABLE, detail="no router runs for this QLORA_HOME") for d in domains}
    return {d: observe_alias(client, d) for d in domains}
