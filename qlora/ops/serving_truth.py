"""What each domain's alias serves, read from the router: the one source the UI, `qlora status`
and MLflow's `serving` alias follow, so none of them can disagree with the traffic.

It reads the router's JSON alias state (`ServingClient.alias_state`, the `AliasState` of
`qlora.serving.endpoint`) and adds what an observer needs beside it: whether the router could
be asked at all, and the versions ordered by their share of the traffic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qlora.core.adapters import version_of
from qlora.serving.client import ServingClient, ServingError
from qlora.serving.endpoint import AliasState

SERVING = "serving"        # the alias holds one or two versions with traffic
NOT_DEPLOYED = "not_deployed"  # the router has no alias for the domain yet
UNREACHABLE = "router_unreachable"


@dataclass(frozen=True)
class AliasObservation:
    """One look at a domain's alias: serving (with versions by share), not deployed, or unreachable."""
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


def observation_of(domain: str, state: AliasState | None) -> AliasObservation:
    """The observer's view of the router's alias state (None: the alias is not defined)."""
    if state is None or not any(share > 0 for share in state.weights.values()):
        return AliasObservation(domain, NOT_DEPLOYED)
    ordered = sorted(state.weights.items(), key=lambda item: (-item[1], item[0]))
    return AliasObservation(domain, SERVING, {version_of(name): round(share, 6) for name, share in ordered if share > 0})


def observe_alias(client: ServingClient, domain: str) -> AliasObservation:
    try:
        return observation_of(domain, client.alias_state(domain))
    except ServingError as exc:
        return AliasObservation(domain, UNREACHABLE, detail=str(exc)[:200])


def observe_aliases(client: ServingClient | None, domains: list[str]) -> dict[str, AliasObservation]:
    """Every domain's alias; with no client (no router runs) every domain reads as unreachable."""
    if client is None:
        return {d: AliasObservation(d, UNREACHABLE, detail="no router runs for this QLORA_HOME") for d in domains}
    return {d: observe_alias(client, d) for d in domains}
