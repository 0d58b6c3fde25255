"""The router's admin API (bearer key checked by the router's middleware): load/unload adapters
under the adapters root, and move aliases between versions."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from qlora.serving import protocol as p
from qlora.serving.adapters import (
    AdapterOutsideRoot, AdapterPathError, AdapterRefused, adapter_path_under_root, validate_adapter,
)
from qlora.serving.aliases import AliasError, expand_weights
from qlora.serving.router import router_of

api_router = APIRouter()


def checked_path(lora_path: str, root) -> str:
    try:
        return str(adapter_path_under_root(lora_path, root))
    except AdapterOutsideRoot as exc:
        raise p.ApiError(str(exc), 403, "PermissionDenied", "lora_path") from None


def _passthrough(response) -> Response:
    return Response(response.content, status_code=response.status_code, media_type=response.headers.get("content-type"))


@api_router.post("/v1/load_lora_adapter")
async def load_lora_adapter(request: Request):
    router = router_of(request)
    body = await p.parse_body(request, p.LoadLoRAAdapterRequest)
    if not body.lora_name or not body.lora_path:
        raise p.ApiError("Both 'lora_name' and 'lora_path' must be provided.", 400, "InvalidUserInput")
    path = checked_path(body.lora_path, router.adapters_root)
    if router.max_lora_rank is not None:
        try:
            validate_adapter(path, router.max_lora_rank)
        except AdapterPathError:
            raise p.adapter_path_not_found(body.lora_name, body.lora_path) from None
        except AdapterRefused as exc:
            raise p.ApiError(str(exc), 400, "BadRequestError") from None
    async with router.state_lock:
        response = await router.forward("/v1/load_lora_adapter", {"lora_name": body.lora_name, "lora_path": path})
        if response.status_code == 200:
            router.metrics.version_loaded(body.lora_name, path)
            if router.loaded is not None:
                router.loaded.record(body.lora_name, path)
    return _passthrough(response)


@api_router.post("/v1/unload_lora_adapter")
async def unload_lora_adapter(request: Request):
    router = router_of(request)
    body = await p.parse_body(request, p.UnloadLoRAAdapterRequest)
    if holders := router.aliases.aliases_targeting(body.lora_name):
        raise p.ApiError(f"The lora adapter '{body.lora_name}' still serves alias(es) {holders}; move the "
                         "alias first.", 409, "Conflict")
    async with router.state_lock:
        response = await router.forward("/v1/unload_lora_adapter", body.model_dump(exclude_none=True))
        if response.status_code in (200, 404) and router.loaded is not None:
            router.loaded.forget(body.lora_name)  # gone either way: a re-sync must not bring it back
        if response.status_code == 200:
            router.metrics.version_unloaded(body.lora_name)
    return _passthrough(response)


@api_router.put("/admin/aliases/{name}")
async def set_alias(name: str, request: Request):
    router = router_of(request)
    weights = (await p.parse_body(request, p.StrictModel)).model_extra.get("weights")
    try:
        loaded = {c["id"] for c in await router.backend_cards()}
        missing = [t for t, w in expand_weights(name, weights).items() if w > 0 and t not in loaded]
        if missing:
            raise AliasError(f"alias {name!r}: {missing} not loaded on the backend; load it first")
        return {"name": name, "weights": router.aliases.set(name, weights)}
    except AliasError as exc:
        raise p.ApiError(str(exc), 400, "BadRequestError", "weights") from None


@api_router.delete("/admin/aliases/{name}")
async def delete_alias(name: str, request: Request):
    if not router_of(request).aliases.delete(name):
        raise p.ApiError(f"alias {name!r} is not defined", 404, "NotFoundError")
    return PlainTextResponse(f"Success: alias '{name}' removed.")
