"""The router's admin API (bearer key checked by the router's middleware): load/unload adapters
under the adapters root, and move aliases between versions."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from qlora.serving import protocol as p
from qlora.serving.adapters import AdapterPathError, AdapterRefused, validate_adapter
from qlora.serving.aliases import AliasError, expand_weights

log = logging.getLogger(__name__)


def adapter_path_under_root(lora_path: str, root: Path) -> Path:
    """Resolve symlinks and refuse anything outside the adapters root (no '..', no symlink escape)."""
    raw = Path(lora_path)
    if ".." in raw.parts:
        raise p.ApiError(f"lora_path {lora_path!r} must not contain '..'", 403, "PermissionDenied", "lora_path")
    resolved = (raw if raw.is_absolute() else root / raw).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise p.ApiError(f"lora_path {lora_path!r} resolves to {resolved}, outside the adapters root {root}",
                         403, "PermissionDenied", "lora_path")
    return resolved


async def restore_adapters(router) -> None:
    """Load again what was loaded through the router before the backend restarted."""
    if router.loaded is None:
        return
    present = {c["id"] for c in await router.backend_cards()}
    for name, path in router.loaded.all().items():
        if name not in present:
            response = await router.forward("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
            if response.status_code != 200:
                log.warning("could not restore adapter %s from %s: %s", name, path, response.text)


def _passthrough(response) -> Response:
    return Response(response.content, status_code=response.status_code, media_type=response.headers.get("content-type"))


def add_admin_routes(app: FastAPI, router) -> None:
    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request):
        body = await p.parse_body(request, p.LoadLoRAAdapterRequest)
        if not body.lora_name or not body.lora_path:
            raise p.ApiError("Both 'lora_name' and 'lora_path' must be provided.", 400, "InvalidUserInput")
        path = adapter_path_under_root(body.lora_path, router.adapters_root)
        if router.max_lora_rank is not None:
            try:
                validate_adapter(path, router.max_lora_rank)
            except AdapterPathError:
                raise p.adapter_path_not_found(body.lora_name, body.lora_path) from None
            except AdapterRefused as exc:
                raise p.ApiError(str(exc), 400, "BadRequestError") from None
        response = await router.forward("/v1/load_lora_adapter", {"lora_name": body.lora_name,
                                                                  "lora_path": str(path)})
        if response.status_code == 200:
            router.metrics.version_loaded(body.lora_name, str(path))
            if router.loaded is not None:
                router.loaded.record(body.lora_name, str(path))
        return _passthrough(response)

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request):
        body = await p.parse_body(request, p.UnloadLoRAAdapterRequest)
        if holders := router.aliases.aliases_targeting(body.lora_name):
            raise p.ApiError(f"The lora adapter '{body.lora_name}' still serves alias(es) {holders}; move the "
                             "alias first.", 409, "Conflict")
        response = await router.forward("/v1/unload_lora_adapter", body.model_dump(exclude_none=True))
        if response.status_code == 200:
            router.metrics.version_unloaded(body.lora_name)
            if router.loaded is not None:
                router.loaded.forget(body.lora_name)
        return _passthrough(response)

    @app.get("/admin/aliases")
    async def list_aliases():
        return {"aliases": router.aliases.all()}

    @app.get("/admin/aliases/{name}")
    async def get_alias(name: str):
        weights = router.aliases.get(name)
        if weights is None:
            raise p.ApiError(f"alias {name!r} is not defined", 404, "NotFoundError")
        return {"name": name, "weights": weights}

    @app.put("/admin/aliases/{name}")
    async def set_alias(name: str, request: Request):
        try:
            weights = json.loads(await request.body() or b"{}").get("weights")
            loaded = {c["id"] for c in await router.backend_cards()}
            missing = [t for t, w in expand_weights(name, weights).items() if w > 0 and t not in loaded]
            if missing:
                raise AliasError(f"alias {name!r}: {missing} not loaded on the backend; load it first")
            return {"name": name, "weights": router.aliases.set(name, weights)}
        except (AliasError, ValueError, AttributeError) as exc:
            raise p.ApiError(str(exc), 400, "BadRequestError", "weights") from None

    @app.delete("/admin/aliases/{name}")
    async def delete_alias(name: str):
        if not router.aliases.delete(name):
            raise p.ApiError(f"alias {name!r} is not defined", 404, "NotFoundError")
        return PlainTextResponse(f"Success: alias '{name}' removed.")

