"""The router an operator command talks to: ``--server``/QLORA_SERVING_URL, else the one `qlora serve`
(or a Dagster run) started for this QLORA_HOME. Looking never starts a server."""
from __future__ import annotations

from qlora.core.paths import paths
from qlora.serving.client import ServingClient


class NoRouterError(RuntimeError):
    """No router to talk to; the message says how to start one."""


def running_router(server: str | None = None, api_key: str | None = None,
                   timeout_s: float = 30.0) -> ServingClient | None:
    """A client on the given or the local router, or None when no local router runs."""
    from qlora.serving.daemon import is_serving, read_state

    if server:
        return ServingClient(server, api_key=api_key, timeout_s=timeout_s)
    state = read_state(paths().serving_state)
    if not is_serving(state):
        return None
    return ServingClient(state["url"], api_key=api_key or state.get("api_key"), timeout_s=timeout_s)


def require_router(server: str | None = None, api_key: str | None = None, timeout_s: float = 300.0) -> ServingClient:
    client = running_router(server, api_key, timeout_s)
    if client is None:
        raise NoRouterError(f"no router runs for {paths().serving_state}: start one with `qlora serve` "
                            "(or run `qlora demo`), or pass --server URL")
    return client
