"""Request bodies and errors of vLLM's OpenAI-compatible API, as the embedded server and router speak it.

Errors use vLLM's (>= 0.10) shape ``{"error": {"message", "type", "param", "code"}}``; messages for
the LoRA routes are vLLM's own (vllm/entrypoints/openai/serving_models.py, vllm/lora/peft_helper.py,
vllm/exceptions.py), so a client sees the same text from either backend.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """An error that becomes an OpenAI-style JSON response with ``status``."""

    def __init__(self, message: str, status: int = 400, type_: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.param = message, status, type_, param

    def response(self) -> JSONResponse:
        return error_response(self.message, self.status, self.type, self.param)


def error_body(message: str, status: int, type_: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


def error_response(message: str, status: int = 400, type_: str = "BadRequestError", param: str | None = None):
    return JSONResponse(error_body(message, status, type_, param), status_code=status)


def model_not_found(name: str) -> ApiError:
    return ApiError(f"The model `{name}` does not exist.", 404, "NotFoundError", "model")


def adapter_already_loaded(name: str) -> ApiError:
    return ApiError(f"The lora adapter '{name}' has already been loaded.", 400, "InvalidUserInput")


def adapter_not_found(name: str) -> ApiError:
    return ApiError(f"The lora adapter '{name}' cannot be found.", 404, "NotFoundError")


def adapter_path_not_found(name: str, path: str) -> ApiError:
    return ApiError(f"Loading lora {name} failed: No adapter found for {path}", 404, "NotFoundError")


class StrictModel(BaseModel):
    # OpenAI clients send fields we ignore (user, logprobs=false, ...); accept them like vLLM does.
    model_config = ConfigDict(extra="allow")


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class SamplingFields(StrictModel):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(SamplingFields):
    prompt: str | list[str]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ApiError("Only one prompt per request is supported.", 400, "BadRequestError", "prompt")
        return self.prompt[0]


class LoadLoRAAdapterRequest(StrictModel):
    lora_name: str = ""
    lora_path: str = ""


class UnloadLoRAAdapterRequest(StrictModel):
    lora_name: str = ""
    lora_int_id: int | None = None


async def parse_body(request: Request, schema: type[BaseModel]) -> Any:
    """Read and validate a JSON body; malformed JSON or a bad field is a 400 naming what was wrong."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(f"Malformed JSON body: {exc}", 400, "BadRequestError") from None
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object.", 400, "BadRequestError")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(f"{field}: {first['msg']}" if field else first["msg"], 400, "BadRequestError", field) from None
