"""The router's open routes: completions through aliases, and the model list with aliases added.

The body is parsed in the threadpool (a large one never stalls other requests) and only the
``model`` field is read here: the backend validates the rest, with vLLM's limits and wording.
"""
from __future__ import annotations

import time

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from qlora.serving import protocol as p
from qlora.serving.arms import StreamSniffer, answer_of
from qlora.serving.router import BACKEND_UNAVAILABLE, router_of

api_router = APIRouter()
INFERENCE_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
UNKNOWN_MODEL = "unknown_model"  # the adapter label of requests for a model the backend does not serve


@api_router.get("/v1/models")
async def models(request: Request):
    router = router_of(request)
    cards = await router.backend_cards()
    loaded = {c["id"] for c in cards}
    for name, weights in router.aliases.all().items():
        main = max(weights, key=weights.get)
        if main in loaded:  # an alias is listed once it can answer
            cards.append({"id": name, "object": "model", "owned_by": "qlora-router", "root": main,
                          "parent": router.base_model, "alias_of": weights})
    return {"object": "list", "data": cards}


async def infer(request: Request):
    router = router_of(request)
    request_type = INFERENCE_ROUTES[request.url.path]
    started = time.perf_counter()
    try:
        body = await run_in_threadpool(p.parse_json, await request.body())
        if not isinstance(body.get("model"), str):
            raise p.ApiError("model: Field required (a string)", 400, "BadRequestError", "model")
    except p.ApiError as exc:
        router.metrics.observe(router.base_model, "unparsed", request_type, time.perf_counter() - started, 400)
        return exc.response()
    requested = body["model"]
    target, *ab = router.choose_target(requested, body, request)
    body["model"] = target
    # A version the router chose keeps its label even on a 404 (an evicted canary must show as errors
    # of that version); a name a client made up becomes one shared label, not a new series.
    error_label = target if target != requested else UNKNOWN_MODEL
    if body.get("stream"):
        return await _stream(router, body, requested, target, ab, error_label, request_type, started,
                             request.url.path)
    router.metrics.request_started(target)  # what a deploy's drain waits on before an unload
    try:
        response = await router.forward(request.url.path, body)
    except httpx.TimeoutException:
        router.metrics.observe(router.base_model, target, request_type, time.perf_counter() - started, None,
                               arm=ab[0])
        await router.journal("", requested, target, ab, time.perf_counter() - started, 504, 0, body, "")
        return p.error_response(f"The backend did not answer within {router.timeout_s}s.", 504, "Timeout")
    except httpx.HTTPError:
        router.metrics.observe(router.base_model, target, request_type, time.perf_counter() - started, 502,
                               arm=ab[0])
        raise
    finally:
        router.metrics.request_finished(target)
    tokens, response_id, answer = 0, "", ""
    if response.status_code == 200:
        answered = response.json()
        tokens = (answered.get("usage") or {}).get("completion_tokens", 0)
        response_id, answer = answered.get("id", ""), answer_of(answered)
    elif response.status_code == 404:
        target = error_label
    latency = time.perf_counter() - started
    router.metrics.observe(router.base_model, target, request_type, latency, response.status_code, tokens, arm=ab[0])
    await router.journal(response_id, requested, target, ab, latency, response.status_code, tokens, body, answer)
    return _relay(response)


def _relay(response: httpx.Response) -> Response:
    if response.status_code >= 500:  # whatever the backend said, a 5xx leaves with no internals
        return p.error_response(BACKEND_UNAVAILABLE if response.status_code in (502, 503)
                                else "The model could not complete this request.", response.status_code,
                                "InternalServerError")
    return Response(response.content, status_code=response.status_code,
                    media_type=response.headers.get("content-type"))


async def _stream(router, body: dict, requested: str, target: str, ab: list, error_label: str, request_type: str,
                  started: float, path: str):
    router.metrics.request_started(target)
    try:
        content = await run_in_threadpool(p.json.dumps, body)
        upstream = await router.http.send(router.http.build_request(
            "POST", path, content=content, headers={"content-type": "application/json"}), stream=True)
    except BaseException:
        router.metrics.request_finished(target)
        raise
    if upstream.status_code != 200:
        await upstream.aread()
        await upstream.aclose()
        router.metrics.request_finished(target)
        label = error_label if upstream.status_code == 404 else target
        router.metrics.observe(router.base_model, label, request_type, time.perf_counter() - started,
                               upstream.status_code, arm=ab[0])
        await router.journal("", requested, target, ab, time.perf_counter() - started, upstream.status_code, 0,
                             body, "")
        return _relay(upstream)

    async def relay():
        sniffer = StreamSniffer()  # the completion id and text, for the journal
        try:
            async for piece in upstream.aiter_raw():
                sniffer.feed(piece)
                yield piece
        finally:
            await upstream.aclose()
            router.metrics.request_finished(target)
            latency = time.perf_counter() - started
            router.metrics.observe(router.base_model, target, request_type, latency, 200, arm=ab[0])
            await router.journal(sniffer.response_id, requested, target, ab, latency, 200,
                                 sniffer.completion_tokens, body, sniffer.text)

    return StreamingResponse(relay(), media_type="text/event-stream")


for route in INFERENCE_ROUTES:
    api_router.add_api_route(route, infer, methods=["POST"])
