"""The embedded server: vLLM's OpenAI-compatible routes over the batching engine.

Same routes, bodies and status codes as ``vllm serve --enable-lora --api-key KEY`` with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, so the router, eval and deploy code cannot tell
the two apart. It listens on loopback only (the router is the public entrance), every /v1
route needs the key as vLLM's ``--api-key`` does, and adapters load only from the adapters root.
Parsing and tokenisation run in the threadpool, so a large body never stalls the event loop.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from qlora.serving import protocol as p
from qlora.serving.adapters import AdapterOutsideRoot, AdapterPathError, AdapterRefused, adapter_path_under_root
from qlora.serving.engine import AdapterGone, BatchingEngine, GenerationRequest, RowFailed
from qlora.serving.http_guards import GuardMiddleware
from qlora.serving.responses import chat_response, completion_response, sse_stream

DEFAULT_MAX_BODY_BYTES = 1 << 20


class EmbeddedBackend:
    def __init__(self, engine: BatchingEngine, served_model_name: str, max_model_len: int, default_max_tokens: int,
                 adapters_root: Path | None = None):
        self.engine = engine
        self.store = engine.store
        self.name = served_model_name
        self.max_model_len = max_model_len
        self.default_max_tokens = default_max_tokens
        self.adapters_root = Path(adapters_root) if adapters_root else None

    def model_cards(self) -> list[dict]:
        now = int(time.time())
        base = {"id": self.name, "object": "model", "created": now, "owned_by": "vllm",
                "root": str(self.store.base_path), "parent": None, "max_model_len": self.max_model_len}
        adapters = [{"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": path,
                     "parent": self.name, "max_model_len": None}
                    for name, path in list(self.store.adapter_paths.items())]
        return [base, *adapters]

    def adapter_for(self, model: str) -> str | None:
        if model == self.name:
            return None
        if model in self.store.adapter_paths:
            return model
        raise p.model_not_found(model)

    def make_request(self, body: p.SamplingFields, prompt_ids: list[int]) -> GenerationRequest:
        adapter = self.adapter_for(body.model)
        n_prompt = len(prompt_ids)
        if n_prompt == 0:  # bitsandbytes' CPU 4-bit kernel dies (SIGFPE) on a zero-token batch
            raise p.ApiError(p.EMPTY_PROMPT, 400, "BadRequestError", "prompt")
        if n_prompt >= self.max_model_len:
            raise p.ApiError(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your request has "
                f"{n_prompt} input tokens. Please reduce the length of the input messages.", 400, "BadRequestError",
                "messages")
        requested = body.requested_max_tokens()
        if requested is not None and n_prompt + requested > self.max_model_len:
            raise p.ApiError(
                f"'max_tokens' is too large: {requested}. This model's maximum context length is "
                f"{self.max_model_len} tokens and your request has {n_prompt} input tokens "
                f"({requested} > {self.max_model_len} - {n_prompt}).", 400, "BadRequestError", "max_tokens")
        max_tokens = requested or min(self.default_max_tokens, self.max_model_len - n_prompt)
        return GenerationRequest(prompt_ids=prompt_ids, adapter=adapter, max_tokens=max_tokens,
                                 temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                                 stop=body.stop_list(), seed=body.seed)

    def chat_prompt_ids(self, body: p.ChatCompletionRequest) -> list[int]:
        messages = [m.model_dump(include={"role", "content"}) for m in body.messages]
        text = self.store.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # The template already writes <|begin_of_text|>; don't let the tokenizer add a second one.
        return self.store.tokenizer(text, add_special_tokens=False)["input_ids"]

    def completion_prompt_ids(self, body: p.CompletionRequest) -> list[int]:
        return self.store.tokenizer(body.prompt_text())["input_ids"]

    def checked_path(self, body: p.LoadLoRAAdapterRequest) -> str:
        if self.adapters_root is None:
            return body.lora_path
        try:
            return str(adapter_path_under_root(body.lora_path, self.adapters_root))
        except AdapterOutsideRoot as exc:
            raise p.ApiError(str(exc), 403, "PermissionDenied", "lora_path") from None

    async def load(self, body: p.LoadLoRAAdapterRequest) -> str:
        if not body.lora_name or not body.lora_path:
            raise p.ApiError("Both 'lora_name' and 'lora_path' must be provided.", 400, "InvalidUserInput")
        if body.lora_name in self.store.adapter_paths or body.lora_name == self.name:
            raise p.adapter_already_loaded(body.lora_name)
        path = self.checked_path(body)
        call = lambda: self.store.load_adapter(body.lora_name, path)  # noqa: E731
        try:
            await asyncio.wrap_future(self.engine.run_exclusive(call))
        except AdapterPathError:
            raise p.adapter_path_not_found(body.lora_name, body.lora_path) from None
        except (AdapterRefused, ValueError) as exc:
            raise p.ApiError(str(exc), 400, "BadRequestError") from None
        return f"Success: LoRA adapter '{body.lora_name}' added successfully."

    async def unload(self, body: p.UnloadLoRAAdapterRequest) -> str:
        if not body.lora_name and body.lora_int_id is None:
            raise p.ApiError("either 'lora_name' and 'lora_int_id' needs to be provided.", 400, "InvalidUserInput")
        if body.lora_name not in self.store.adapter_paths:
            raise p.adapter_not_found(body.lora_name)
        await asyncio.wrap_future(self.engine.run_exclusive(lambda: self.store.unload_adapter(body.lora_name)))
        return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


def create_app(backend: EmbeddedBackend, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="qlora embedded server (vLLM API)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.add_middleware(GuardMiddleware, max_body_bytes=max_body_bytes)

    @app.exception_handler(p.ApiError)
    async def _api_error(_: Request, exc: p.ApiError):
        return exc.response()

    @app.exception_handler(AdapterGone)
    async def _adapter_gone(_: Request, exc: AdapterGone):
        return p.model_not_found(str(exc)).response()

    @app.exception_handler(RowFailed)
    async def _row_failed(_: Request, exc: RowFailed):
        # This request alone failed inside the model; its batch-mates were answered. No internals leave.
        return p.error_response("The model could not complete this request.", 500, "InternalServerError")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        # vLLM's --api-key guards every /v1 route with a bearer token.
        if api_key and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": backend.model_cards()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await p.parse_body(request, p.ChatCompletionRequest)
        return await _generate(body, await run_in_threadpool(backend.chat_prompt_ids, body), chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await p.parse_body(request, p.CompletionRequest)
        return await _generate(body, await run_in_threadpool(backend.completion_prompt_ids, body), chat=False)

    async def _generate(body, prompt_ids: list[int], chat: bool):
        gen = backend.make_request(body, prompt_ids)
        if body.stream:
            return sse_stream(backend.engine, gen, body, chat)
        result = await asyncio.wrap_future(backend.engine.submit(gen))
        return (chat_response if chat else completion_response)(body.model, result)

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request):
        return PlainTextResponse(await backend.load(await p.parse_body(request, p.LoadLoRAAdapterRequest)))

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request):
        return PlainTextResponse(await backend.unload(await p.parse_body(request, p.UnloadLoRAAdapterRequest)))

    return app
