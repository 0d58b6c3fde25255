"""The one HTTP client for serving: eval, deploy, tests, the demo and the benches use it against the
router (or vLLM itself for inference: same routes, bodies and status codes). It implements
``qlora.serving.endpoint.ServingEndpoint``; the router's state comes back as JSON, never as
Prometheus text to parse.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from qlora.serving.endpoint import AliasState, BaseInfo, Completion, ServingEndpoint  # noqa: F401 (re-exported)


class ServingError(Exception):
    """A non-2xx answer (``status`` is the HTTP code, ``body`` the raw text) or a transport failure (status 0)."""

    def __init__(self, status: int, body: str, what: str = ""):
        self.status = status
        self.body = body
        super().__init__(f"{what} -> HTTP {status}: {body[:500]}" if what else f"HTTP {status}: {body[:500]}")

    @property
    def message(self) -> str:
        """The ``error.message`` of an OpenAI-style body, else the raw body."""
        try:
            error = json.loads(self.body).get("error")
            return error.get("message", self.body) if isinstance(error, dict) else str(error or self.body)
        except (ValueError, AttributeError):
            return self.body


class ServingClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s,
                                  limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ServingClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        what = f"{method} {self.base_url}{path}"
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServingError(0, repr(exc), what) from exc
        if response.status_code >= 400:
            raise ServingError(response.status_code, response.text, what)
        return response

    def health(self) -> bool:
        """GET /health is 200 (note: vLLM can say 200 while its engine hangs; readiness = a real answer)."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[dict]:
        return self._request("GET", "/v1/models").json()["data"]

    def wait_for_model(self, name: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                if any(card["id"] == name for card in self.models()):
                    return
            except ServingError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"{name!r} not listed by {self.base_url}/v1/models after {timeout_s}s (last error: {last})")

    def load_adapter(self, name: str, path: str) -> None:
        self._request("POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})

    def unload_adapter(self, name: str) -> None:
        self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name})

    def chat(self, model: str, messages: list[dict], max_tokens: int = 64, temperature: float = 0.0,
             stop: list[str] | None = None) -> Completion:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if stop:
            body["stop"] = stop
        started = time.perf_counter()
        data = self._request("POST", "/v1/chat/completions", json=body).json()
        latency = time.perf_counter() - started
        choice, usage = data["choices"][0], data.get("usage") or {}
        return Completion(text=choice["message"]["content"] or "", model=data.get("model", model),
                          prompt_tokens=usage.get("prompt_tokens", 0),
                          completion_tokens=usage.get("completion_tokens", 0),
                          latency_s=latency, finish_reason=choice.get("finish_reason") or "")

    def stream_chat(self, model: str, messages: list[dict], max_tokens: int = 256,
                    temperature: float = 0.0) -> Iterator[dict]:
        """``stream: true``: yield each server-sent chunk as it arrives (an error sent in-band raises)."""
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "stream": True}
        what = f"POST {self.base_url}/v1/chat/completions (stream)"
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raise ServingError(response.status_code, response.read().decode(errors="replace"), what)
                for line in response.iter_lines():
                    data = line[len("data: "):] if line.startswith("data: ") else None
                    if data is None:
                        continue
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ServingError(500, data, what)
                    yield chunk
        except httpx.HTTPError as exc:
            raise ServingError(0, repr(exc), what) from exc

    def chat_many(self, model: str, conversations: list[list[dict]], concurrency: int = 16,
                  **kw) -> list[Completion | ServingError]:
        """Send all conversations ``concurrency`` at a time (the server batches them); order is kept."""

        def one(messages):
            try:
                return self.chat(model, messages, **kw)
            except ServingError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(conversations) or 1))) as pool:
            return list(pool.map(one, conversations))

    def set_alias(self, public_name: str, weights: dict[str, float]) -> None:
        self._request("PUT", f"/admin/aliases/{public_name}", json={"weights": weights})

    def get_alias(self, public_name: str) -> dict[str, float]:
        return self._request("GET", f"/admin/aliases/{public_name}").json()["weights"]

    def delete_alias(self, public_name: str) -> bool:
        """Remove the alias; False when it was not defined."""
        try:
            self._request("DELETE", f"/admin/aliases/{public_name}")
        except ServingError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def alias_state(self, public_name: str) -> AliasState | None:
        """The alias's versions, weights and whether each is loaded; None when it is not defined."""
        try:
            return AliasState.from_json(self._request("GET", f"/admin/aliases/{public_name}").json())
        except ServingError as exc:
            if exc.status == 404:
                return None
            raise

    def aliases(self) -> dict[str, AliasState]:
        data = self._request("GET", "/admin/aliases").json()["aliases"]
        return {name: AliasState.from_json(state) for name, state in data.items()}

    def in_flight(self) -> dict[str, int]:
        """Versioned name -> requests the router has sent to it and not yet answered."""
        return self._request("GET", "/admin/in_flight").json()["in_flight"]

    def request_counts(self) -> dict[str, dict[str, int]]:
        """Versioned name -> outcome (success, client_error, server_error, timeout) -> answered requests."""
        return self._request("GET", "/admin/requests").json()["requests"]

    def versions(self) -> dict[str, dict]:
        """Loaded versioned name -> {adapter, version, train_date}."""
        return self._request("GET", "/admin/versions").json()["versions"]

    def base(self) -> BaseInfo:
        data = self._request("GET", "/admin/base").json()
        return BaseInfo(data.get("model", ""), data.get("fingerprint", ""))

    def state(self) -> dict:
        """Base, aliases, in-flight counts and the last re-sync, in one answer (``qlora status``)."""
        return self._request("GET", "/admin/state").json()

    def metrics_text(self) -> str:
        """The Prometheus exposition, for scrapers and dashboards (deploy decisions use the JSON calls)."""
        return self._request("GET", "/metrics").text
