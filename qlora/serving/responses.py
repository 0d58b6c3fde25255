"""OpenAI response bodies: chat and text completions, whole or streamed as server-sent events."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi.responses import StreamingResponse

from qlora.serving.engine import GenerationResult
from qlora.serving.protocol import error_body


def _usage(result: GenerationResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def chat_response(model: str, result: GenerationResult) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": _usage(result),
    }


def completion_response(model: str, result: GenerationResult) -> dict:
    return {
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": _usage(result),
    }


def sse_stream(engine, gen, body, chat: bool) -> StreamingResponse:
    """Tokens reach the client as the engine makes them; the queue bridges engine thread and event loop."""
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue = asyncio.Queue()
    gen.on_delta = lambda text: loop.call_soon_threadsafe(deltas.put_nowait, text)
    future = engine.submit(gen)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(deltas.put_nowait, None))
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str | None, finish_reason: str | None = None, role: bool = False) -> str:
        if chat:
            content = {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish_reason}
        payload = {"id": rid, "object": kind, "created": created, "model": body.model, "choices": [choice]}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def events():
        if chat:
            yield chunk(None, role=True)
        while (delta := await deltas.get()) is not None:
            yield chunk(delta)
        try:
            result = future.result()
        except Exception:  # the stream already said 200; report the failure in-band, as vLLM does (no internals)
            yield f"data: {json.dumps(error_body('The model could not complete this request.', 500, 'InternalServerError'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        yield chunk(None, finish_reason=result.finish_reason)
        if body.include_usage():
            usage = {"id": rid, "object": kind, "created": created, "model": body.model, "choices": [],
                     "usage": _usage(result)}
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
