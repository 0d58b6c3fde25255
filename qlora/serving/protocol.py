"""Request bodies and errors of vLLM's OpenAI-compatible API, as the embedded server and router speak it.

Errors use vLLM's (>= 0.10) shape ``{"error": {"message", "type", "param", "code"}}``; messages for
the LoRA routes are vLLM's own (vllm/entrypoints/openai/serving_models.py, vllm/lora/peft_helper.py,
vllm/exceptions.py), and sampling limits are vLLM's ``SamplingParams._verify_args`` with its wording,
so a client sees the same text from either backend, and no value the model cannot use reaches a batch.
"""
from __future__ import annotations

import json
import math
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # vLLM bounds `seed` by torch.long
MIN_TEMPERATURE = 0.01  # vLLM clamps 0 < temperature < 0.01 up to this (below it logits overflow)
MAX_STOP_STRINGS = 16
EMPTY_PROMPT = "The decoder prompt cannot be empty"  # vLLM's processor, raised before any model work


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


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return value


class SamplingFields(StrictModel):
    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _max_tokens(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"max_tokens must be at least 1, got {value}.")
        return value

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, value: float) -> float:
        if _finite("temperature", value) < 0:
            raise ValueError(f"temperature must be non-negative, got {value}.")
        return MIN_TEMPERATURE if 0 < value < MIN_TEMPERATURE else value

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, value: float) -> float:
        if not 0 < _finite("top_p", value) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {value}.")
        return value

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int) -> int:
        if value < -1:
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {value}.")
        return value

    @field_validator("min_p")
    @classmethod
    def _min_p(cls, value: float) -> float:
        if not 0 <= _finite("min_p", value) <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {value}.")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _penalty(cls, value: float, info) -> float:
        if not -2 <= _finite(info.field_name, value) <= 2:
            raise ValueError(f"{info.field_name} must be in [-2, 2], got {value}.")
        return value

    @field_validator("repetition_penalty")
    @classmethod
    def _repetition_penalty(cls, value: float) -> float:
        if not 0 < _finite("repetition_penalty", value) <= 2:
            raise ValueError(f"repetition_penalty must be in (0, 2], got {value}.")
        return value

    @field_validator("n")
    @classmethod
    def _n(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"n must be at least 1, got {value}.")
        if value > 1:
            raise ValueError(f"n must be 1 on this server (one choice per request), got {value}.")
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int | None) -> int | None:
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"seed must be in [{INT64_MIN}, {INT64_MAX}], got {value}.")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value):
        if isinstance(value, list) and len(value) > MAX_STOP_STRINGS:
            raise ValueError(f"stop may hold at most {MAX_STOP_STRINGS} strings, got {len(value)}.")
        return value

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

    @model_validator(mode="after")
    def _one_non_empty_prompt(self) -> "CompletionRequest":
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("Only one prompt per request is supported." if self.prompt else EMPTY_PROMPT)
        if not self.prompt_text():
            raise ValueError(EMPTY_PROMPT)
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class LoadLoRAAdapterRequest(StrictModel):
    lora_name: str = ""
    lora_path: str = ""


class UnloadLoRAAdapterRequest(StrictModel):
    lora_name: str = ""
    lora_int_id: int | None = None


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> dict:
    """A JSON object from ``raw``; NaN/Infinity (which Python's json accepts) are refused like bad JSON."""
    try:
        data = json.loads(raw or b"null", parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(f"Malformed JSON body: {exc}", 400, "BadRequestError") from None
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object.", 400, "BadRequestError")
    return data


def _validate(schema: type[BaseModel], raw: bytes):
    try:
        return schema.model_validate(parse_json(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        # A validator's own ValueError carries vLLM's sentence; pydantic's type errors get the field named.
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        message = message if first["type"] == "value_error" or not field else f"{field}: {message}"
        raise ApiError(message, 400, "BadRequestError", field) from None


async def parse_body(request: Request, schema: type[BaseModel]) -> Any:
    """Read and validate a JSON body off the event loop; malformed JSON or a bad field is a 400."""
    return await run_in_threadpool(_validate, schema, await request.body())
