"""The router: public names -> versioned adapters, per-adapter metrics, and the guarded admin API.

It sits in front of any backend that speaks vLLM's API (the embedded server, or vLLM).
Inference routes are open; loading/unloading adapters and moving aliases need the
bearer API key, and adapter paths must lie under the adapters root.
"""
from __future__ import annotations

import hmac
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from qlora.serving import protocol as p
from qlora.serving.aliases import AliasTable
from qlora.serving.metrics import RouterMetrics
from qlora.serving.router_admin import add_admin_routes, restore_adapters
from qlora.serving.state_files import LoadedAdapters

INFERENCE_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
UNKNOWN_MODEL = "unknown_model"  # the adapter label of requests for a model the backend does not serve


class Router:
    def __init__(self, backend_url: str, api_key: str, aliases: AliasTable, adapters_root: Path,
                 backend_api_key: str | None = None, timeout_s: float = 300.0, max_lora_rank: int | None = None,
                 loaded: LoadedAdapters | None = None):
        if not api_key:
            raise ValueError("the router needs an API key for its admin routes")
        self.backend_url = backend_url.rstrip("/")
        self.api_key = api_key
        self.aliases = aliases
        self.adapters_root = Path(adapters_root)
        self.backend_headers = {"Authorization": f"Bearer {backend_api_key}"} if backend_api_key else {}
        self.timeout_s = timeout_s
        self.max_lora_rank = max_lora_rank  # set in front of vLLM: refuse early, naming why
        self.loaded = loaded  # adapters to load again after a backend restart
        self.metrics = RouterMetrics()
        self.http: httpx.AsyncClient | None = None
        self.base_model = ""

    def authorized(self, request: Request) -> bool:
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())

    async def backend_cards(self) -> list[dict]:
        response = await self.http.get("/v1/models")
        response.raise_for_status()
        cards = response.json()["data"]
        self.base_model = next((c["id"] for c in cards if not c.get("parent")), self.base_model)
        return cards

    async def forward(self, path: str, payload: dict) -> httpx.Response:
        return await self.http.post(path, json=payload)


def create_router_app(router: Router) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        router.http = httpx.AsyncClient(base_url=router.backend_url, headers=router.backend_headers,
                                        timeout=router.timeout_s, limits=httpx.Limits(max_connections=256))
        try:
            await restore_adapters(router)
            router.metrics.sync_versions(await router.backend_cards())
        except (httpx.HTTPError, KeyError, ValueError):
            pass  # the backend may start after the router; /metrics syncs again
        yield
        await router.http.aclose()

    app = FastAPI(title="qlora router", lifespan=lifespan)
    app.state.router = router

    @app.exception_handler(p.ApiError)
    async def _api_error(_: Request, exc: p.ApiError):
        return exc.response()

    @app.exception_handler(httpx.HTTPError)
    async def _backend_down(_: Request, exc: httpx.HTTPError):
        return p.error_response(f"backend {router.backend_url} unreachable: {exc!r}", 502, "BadGateway")

    @app.middleware("http")
    async def _admin_auth(request: Request, call_next):
        path = request.url.path
        if (path.startswith("/admin") or path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")) \
                and not router.authorized(request):
            return JSONResponse(p.error_body("admin routes need 'Authorization: Bearer <api key>'", 401,
                                             "Unauthorized"), status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        response = await router.http.get("/health")
        return Response(status_code=200 if response.status_code == 200 else 503)

    @app.get("/v1/models")
    async def models():
        cards = await router.backend_cards()
        loaded = {c["id"] for c in cards}
        for name, weights in router.aliases.all().items():
            main = max(weights, key=weights.get)
            if main in loaded:  # an alias is listed once it can answer
                cards.append({"id": name, "object": "model", "owned_by": "qlora-router", "root": main,
                              "parent": router.base_model, "alias_of": weights})
        return {"object": "list", "data": cards}

    @app.get("/metrics")
    async def metrics():
        try:
            router.metrics.sync_versions(await router.backend_cards())
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        router.metrics.sync_aliases(router.aliases.all())
        return Response(router.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def infer(request: Request):
        request_type = INFERENCE_ROUTES[request.url.path]
        started = time.perf_counter()
        try:
            body = json.loads(await request.body() or b"null")
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                raise ValueError("the body must be a JSON object with a string 'model'")
        except (ValueError, UnicodeDecodeError) as exc:
            router.metrics.observe(router.base_model, "unparsed", request_type, time.perf_counter() - started, 400)
            return p.error_response(f"Malformed request body: {exc}", 400, "BadRequestError")
        requested = body["model"]
        body["model"] = target = router.aliases.resolve(requested)
        # A version the router chose keeps its label even on a 404 (an evicted canary must show as errors
        # of that version); a name a client made up becomes one shared label, not a new series.
        error_label = target if target != requested else UNKNOWN_MODEL
        if body.get("stream"):
            return await _stream(body, target, error_label, request_type, started, request.url.path)
        router.metrics.request_started(target)  # what a deploy's drain waits on before an unload
        try:
            response = await router.forward(request.url.path, body)
        except httpx.TimeoutException:
            router.metrics.observe(router.base_model, target, request_type, time.perf_counter() - started, None)
            return p.error_response(f"backend timed out after {router.timeout_s}s", 504, "Timeout")
        finally:
            router.metrics.request_finished(target)
        tokens = 0
        if response.status_code == 200:
            tokens = (response.json().get("usage") or {}).get("completion_tokens", 0)
        elif response.status_code == 404:
            target = error_label
        router.metrics.observe(router.base_model, target, request_type, time.perf_counter() - started,
                               response.status_code, tokens)
        return Response(response.content, status_code=response.status_code,
                        media_type=response.headers.get("content-type"))

    async def _stream(body: dict, target: str, error_label: str, request_type: str, started: float, path: str):
        router.metrics.request_started(target)
        try:
            upstream = await router.http.send(router.http.build_request("POST", path, json=body), stream=True)
        except BaseException:
            router.metrics.request_finished(target)
            raise
        if upstream.status_code != 200:
            content = await upstream.aread()
            await upstream.aclose()
            router.metrics.request_finished(target)
            label = error_label if upstream.status_code == 404 else target
            router.metrics.observe(router.base_model, label, request_type, time.perf_counter() - started,
                                   upstream.status_code)
            return Response(content, status_code=upstream.status_code, media_type="application/json")

        async def relay():
            try:
                async for piece in upstream.aiter_raw():
                    yield piece
            finally:
                await upstream.aclose()
                router.metrics.request_finished(target)
                router.metrics.observe(router.base_model, target, request_type, time.perf_counter() - started, 200)

        return StreamingResponse(relay(), media_type="text/event-stream")

    for route in INFERENCE_ROUTES:
        app.add_api_route(route, infer, methods=["POST"])

    add_admin_routes(app, router)
    return app

