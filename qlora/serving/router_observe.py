"""What the router serves, as JSON for deploy, ``qlora status`` and the UI (never Prometheus text to parse):
aliases with their versions and weights, requests in flight and answered per version, the loaded
versions, the base model and its fingerprint, and a /health that is 200 only when every alias can answer.
"""
from __future__ import annotations

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from qlora.serving import protocol as p
from qlora.serving.metrics import split_versioned
from qlora.serving.router import router_of

api_router = APIRouter()


def alias_state(name: str, weights: dict[str, float], loaded: dict[str, str], versions: dict[str, dict]) -> dict:
    """One alias: its weights, each target's version, whether it is loaded and from where; servable when
    every target that gets traffic is loaded on the backend."""
    targets = [{"name": target, "version": split_versioned(target)[1], "weight": weight,
                "loaded": target in loaded, "path": loaded.get(target, ""),
                "train_date": versions.get(target, {}).get("train_date", "")}
               for target, weight in sorted(weights.items(), key=lambda kv: -kv[1])]
    servable = all(t["loaded"] for t in targets if t["weight"] > 0)
    return {"name": name, "weights": weights, "versions": targets, "servable": servable}


async def _loaded(router) -> dict[str, str]:
    try:
        return {c["id"]: c.get("root") or "" for c in await router.backend_cards() if c.get("parent")}
    except (httpx.HTTPError, KeyError, ValueError):
        return {}  # backend away: nothing is loaded as far as a client can tell


async def all_alias_states(router) -> dict[str, dict]:
    loaded, versions = await _loaded(router), router.metrics.versions()
    return {name: alias_state(name, weights, loaded, versions) for name, weights in router.aliases.all().items()}


@api_router.get("/health")
async def health(request: Request):
    """200 when the backend answers and every alias's versions are loaded; 503 naming what is not."""
    router = router_of(request)
    try:
        backend_up = (await router.http.get("/health")).status_code == 200
    except httpx.HTTPError:
        backend_up = False
    unservable = [] if not backend_up else \
        sorted(name for name, state in (await all_alias_states(router)).items() if not state["servable"])
    ok = backend_up and not unservable
    return JSONResponse({"status": "ok" if ok else "unavailable", "backend": backend_up,
                         "unservable_aliases": unservable}, status_code=200 if ok else 503)


async def _follow_backend(router) -> None:
    try:
        router.metrics.sync_versions(await router.backend_cards())
    except (httpx.HTTPError, KeyError, ValueError):
        pass  # backend away: keep the last known versions


@api_router.get("/metrics")
async def metrics(request: Request):
    router = router_of(request)
    await _follow_backend(router)
    router.metrics.sync_aliases(router.aliases.all())
    return Response(router.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@api_router.get("/admin/aliases")
async def list_aliases(request: Request):
    return {"aliases": await all_alias_states(router_of(request))}


@api_router.get("/admin/aliases/{name}")
async def get_alias(name: str, request: Request):
    router = router_of(request)
    weights = router.aliases.get(name)
    if weights is None:
        raise p.ApiError(f"alias {name!r} is not defined", 404, "NotFoundError")
    return alias_state(name, weights, await _loaded(router), router.metrics.versions())


@api_router.get("/admin/in_flight")
async def in_flight(request: Request):
    """Requests the router has sent to each version and not yet answered (what a drain waits on)."""
    return {"in_flight": router_of(request).metrics.in_flight_counts()}


@api_router.get("/admin/requests")
async def requests(request: Request):
    """Answered requests per version and outcome (success, client_error, server_error, timeout) since start."""
    return {"requests": router_of(request).metrics.request_counts()}


@api_router.get("/admin/versions")
async def versions(request: Request):
    """Versions loaded on the backend: public name, version and train date (llm_adapter_version_info as JSON)."""
    router = router_of(request)
    await _follow_backend(router)
    return {"versions": router.metrics.versions()}


@api_router.get("/admin/base")
async def base(request: Request):
    router = router_of(request)
    if not router.base_model:
        await _loaded(router)
    return {"model": router.base_model, "fingerprint": router.base_fingerprint}


@api_router.get("/admin/state")
async def state(request: Request):
    """Everything above in one answer (``qlora status``), plus what the last re-sync of the backend did."""
    router = router_of(request)
    return {"base": await base(request), "aliases": await all_alias_states(router),
            "in_flight": router.metrics.in_flight_counts(), "last_sync": router.last_sync}
