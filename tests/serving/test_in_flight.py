"""The router counts requests in flight per version, and a deploy's drain waits for that count.

The backend is a mock whose answers are held until the test releases them, so "in flight" is a
state the test controls rather than a race with a fast model.
"""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from qlora.deploy.serving_state import ServingState
from qlora.serving.aliases import AliasTable
from qlora.serving.router import Router, create_router_app

VERSION = "cs-support@r1"
ANSWER = {"id": "x", "object": "chat.completion", "model": VERSION, "choices": [],
          "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


class HeldBackend:
    """Answers chat requests only once `release` is set; lists one adapter version."""

    def __init__(self):
        self.release = threading.Event()
        self.arrived = threading.Semaphore(0)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "base"}, {"id": VERSION, "parent": "base", "root": "/a"}]})
        self.arrived.release()
        while not self.release.is_set():  # the app's event loop runs in TestClient's thread
            await asyncio.sleep(0.01)
        return httpx.Response(200, json=ANSWER)


class InFlightOnly:
    """The one call of the serving client that ServingState.drain makes (the router's JSON, not Prometheus)."""

    def __init__(self, client: TestClient):
        self.client = client

    def in_flight(self) -> dict[str, int]:
        return self.client.get("/admin/in_flight", headers={"Authorization": "Bearer k"}).json()["in_flight"]


@pytest.fixture()
def held(tmp_path):
    backend = HeldBackend()
    router = Router("http://backend", api_key="k", aliases=AliasTable(tmp_path / "aliases.json"),
                    adapters_root=tmp_path)
    with TestClient(create_router_app(router)) as client:
        router.http = httpx.AsyncClient(transport=httpx.MockTransport(backend), base_url="http://backend")
        yield backend, client, ServingState(InFlightOnly(client), warehouse=None)
        backend.release.set()


def _post_in_background(client: TestClient, model: str, results: list) -> threading.Thread:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    thread = threading.Thread(target=lambda: results.append(client.post("/v1/chat/completions", json=body)))
    thread.start()
    return thread


def test_in_flight_count_rises_and_falls_with_held_requests(held):
    backend, client, state = held
    results: list = []
    threads = [_post_in_background(client, VERSION, results) for _ in range(2)]
    for _ in threads:
        assert backend.arrived.acquire(timeout=10)
    assert state.in_flight(VERSION) == 2
    backend.release.set()
    for thread in threads:
        thread.join(10)
    assert [r.status_code for r in results] == [200, 200]
    assert state.in_flight(VERSION) == 0


def test_drain_waits_for_the_last_request_then_returns(held):
    backend, client, state = held
    results: list = []
    request = _post_in_background(client, VERSION, results)
    assert backend.arrived.acquire(timeout=10)

    started = time.monotonic()
    assert state.drain(VERSION, 0.3) == f"1 request(s) still on {VERSION} after the 0.3s drain limit"
    assert time.monotonic() - started >= 0.3

    outcome: dict = {}
    drain = threading.Thread(target=lambda: outcome.update(message=state.drain(VERSION, 30)))
    drain.start()
    time.sleep(0.3)
    assert drain.is_alive(), "drain returned while a request was still running"
    backend.release.set()
    drain.join(10)
    request.join(10)
    assert outcome["message"].startswith(f"no request left on {VERSION} after")
    assert results[0].status_code == 200


def test_names_clients_make_up_leave_no_in_flight_series(held):
    backend, client, state = held
    backend.release.set()
    assert client.post("/v1/chat/completions", json={"model": "made-up@x", "messages": []}).status_code == 200
    assert 'adapter="made-up@x"' not in "\n".join(
        line for line in client.get("/metrics").text.splitlines() if line.startswith("llm_requests_in_flight"))
    assert state.drain(None, 5) == "nothing to drain"
