"""The router: public names -> versioned adapters, per-adapter metrics, and the guarded admin API.

It sits in front of any backend that speaks vLLM's API (the embedded server, or vLLM).
``Router`` holds the state (aliases, what was loaded, metrics, the backend connection);
each endpoint module (inference, admin, observe) is an ``APIRouter`` mounted on the app by
``create_router_app``, as vLLM's api_router + attach_router do, so a new area (feedback, arms)
adds a module and one ``include_router`` line. Inference routes are open; load/unload, alias
moves and the state endpoints need the bearer API key. A background task re-loads on the
backend whatever the router's state says should be there (a restarted backend loses runtime loads).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable, Sequence

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from qlora.serving import protocol as p
from qlora.serving.aliases import AliasTable
from qlora.serving.arms import ArmRouting
from qlora.serving.config import RouterConfig
from qlora.serving.feedback_routes import DEFAULT_TTL_S, add_feedback_routes
from qlora.serving.http_guards import GuardMiddleware
from qlora.serving.metrics import RouterMetrics
from qlora.serving.state_files import LoadedAdapters

log = logging.getLogger(__name__)
ADMIN_PATHS = ("/admin", "/v1/load_lora_adapter", "/v1/unload_lora_adapter")
BACKEND_UNAVAILABLE = "The model backend is unavailable; retry shortly."


class Router:
    def __init__(self, backend_url: str, api_key: str, aliases: AliasTable, adapters_root: Path,
                 backend_api_key: str | None = None, timeout_s: float = 300.0, max_lora_rank: int | None = None,
                 loaded: LoadedAdapters | None = None, base_fingerprint: str = "",
                 router_config: RouterConfig | None = None, arm_routing: ArmRouting | None = None,
                 feedback_ttl_s: float = DEFAULT_TTL_S):
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
        self.base_fingerprint = base_fingerprint
        self.config = router_config or RouterConfig(request_timeout_s=timeout_s)
        self.metrics = RouterMetrics()
        self.arm_routing = arm_routing  # A/B arms + the response journal that /v1/feedback checks ids against
        self.feedback_ttl_s = feedback_ttl_s
        self.http: httpx.AsyncClient | None = None
        self.base_model = ""
        self.last_sync: dict = {}  # what the last re-sync found and did (shown by /admin/state)
        # Held by loads, unloads and the re-sync, so a re-sync never reloads a version being unloaded.
        self.state_lock = asyncio.Lock()
        # Consulted before the alias table, first answer wins (None: no opinion). An A/B arm assignment
        # plugs in here: (requested name, request) -> versioned name.
        self.target_resolvers: list[Callable[[str, Request], str | None]] = []

    def target_for(self, requested: str, request: Request) -> str:
        """The versioned name a request for ``requested`` goes to."""
        for resolve in self.target_resolvers:
            if (target := resolve(requested, request)) is not None:
                return target
        return self.aliases.resolve(requested)

    def choose_target(self, requested: str, body: dict, request: Request) -> tuple[str, str, str, str]:
        """(versioned target, arm, experiment id, user hash): sticky arms for an alias in an experiment."""
        if self.arm_routing is None or any(True for _ in self.target_resolvers):
            return self.target_for(requested, request), "", "", ""
        client = request.client.host if request.client else None
        return self.arm_routing.choose(requested, body, request.headers, client)

    async def journal(self, response_id: str, requested: str, target: str, ab: tuple[str, str, str],
                      latency_s: float, status: int, tokens: int, body: dict, answer: str) -> None:
        """Bind the completion id to its arm and version (fsync'd) before the client can rate it."""
        if self.arm_routing is None or not (status == 200 or ab[0]):
            return
        try:
            await run_in_threadpool(self.arm_routing.record, response_id, requested, target, *ab, latency_s,
                                    status, tokens, body.get("messages", body.get("prompt")), answer)
        except Exception:  # a full disk must not fail an answer already made; its feedback is refused (404)
            log.exception("response journal write failed for %s", response_id or target)

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
        content = await run_in_threadpool(json.dumps, payload)  # a large body is serialised off the loop
        return await self.http.post(path, content=content, headers={"content-type": "application/json"})


def router_of(request: Request) -> Router:
    return request.app.state.router


def create_router_app(router: Router, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The app: the core endpoint modules plus ``extra_routers`` (each an APIRouter using ``router_of``)."""
    from qlora.serving import router_admin, router_inference, router_observe
    from qlora.serving.resync import resync, resync_forever

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        router.http = httpx.AsyncClient(base_url=router.backend_url, headers=router.backend_headers,
                                        timeout=router.timeout_s, limits=httpx.Limits(max_connections=256))
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            await resync(router)  # the backend may start after the router; the task below retries
        task = asyncio.create_task(resync_forever(router, router.config.resync_interval_s))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await router.http.aclose()

    # The public entrance: no generated docs or schema (they list the admin API to anyone).
    app = FastAPI(title="qlora router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.router = router
    app.add_middleware(GuardMiddleware, max_body_bytes=router.config.max_body_bytes)

    @app.exception_handler(p.ApiError)
    async def _api_error(_: Request, exc: p.ApiError):
        return exc.response()

    @app.exception_handler(httpx.HTTPError)
    async def _backend_down(request: Request, exc: httpx.HTTPError):
        log.warning("backend %s failed on %s: %r", router.backend_url, request.url.path, exc)
        return p.error_response(BACKEND_UNAVAILABLE, 502, "BadGateway")

    @app.middleware("http")
    async def _admin_auth(request: Request, call_next):
        if request.url.path.startswith(ADMIN_PATHS) and not router.authorized(request):
            return JSONResponse(p.error_body("admin routes need 'Authorization: Bearer <api key>'", 401,
                                             "Unauthorized"), status_code=401)
        return await call_next(request)

    for api_router in (router_inference.api_router, router_admin.api_router, router_observe.api_router,
                       *extra_routers):
        app.include_router(api_router)
    add_feedback_routes(app, router)
    return app
