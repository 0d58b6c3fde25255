"""ASGI guards shared by the embedded server and the router: a body-size cap and a clean catch-all.

The cap answers 413 from the Content-Length header before a byte is read, and stops reading a
chunked body the moment it passes the limit, so one huge body cannot take the process's memory.
The catch-all answers 500 with a body that names no exception or backend, and does not re-raise:
Starlette's own ``exception_handler(Exception)`` re-raises after answering, which made uvicorn drop
the connection (and the router's pooled connection with it, a 502 for an unrelated request).
"""
from __future__ import annotations

import json
import logging

from qlora.serving.protocol import error_body

log = logging.getLogger(__name__)
INTERNAL_ERROR = "The server had an error while processing your request; it was logged."


class BodyTooLarge(Exception):
    pass


async def _send_json(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 413:  # the rest of the body is never read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def too_large_body(limit: int) -> dict:
    return error_body(f"Request body too large: the limit is {limit} bytes (serving config 'max_body_bytes').",
                      413, "RequestEntityTooLarge")


class GuardMiddleware:
    """Add with ``app.add_middleware(GuardMiddleware, max_body_bytes=...)``: it then sits inside
    Starlette's ServerErrorMiddleware, so endpoint exceptions reach it first and end here."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.limit = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_json(send, 413, too_large_body(self.limit))
        received = 0
        started = False

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, too_large_body(self.limit))
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, error_body(INTERNAL_ERROR, 500, "InternalServerError"))
