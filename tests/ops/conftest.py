"""A real router with no backend behind it: enough for what reads aliases (status, the observation sensor)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from qlora.serving.aliases import AliasTable
from qlora.serving.embedded import _bind, _serve
from qlora.serving.router import Router, create_router_app

API_KEY = "ops-test-key"


@dataclass
class AliasRouter:
    url: str
    router: Router

    def move(self, domain: str, weights: dict[str, float]) -> None:
        """Move an alias as `qlora rollback` / `qlora ab` would, without Dagster knowing."""
        self.router.aliases.set(domain, weights)


@pytest.fixture()
def alias_router(tmp_path: Path):
    state = tmp_path / "router"
    state.mkdir()
    (state / "aliases.json").write_text(json.dumps({"aliases": {"legal-ko": {"legal-ko@v2": 1.0}}}))
    router = Router("http://127.0.0.1:9", API_KEY, AliasTable(state / "aliases.json"), tmp_path / "adapters")
    server, thread = _serve(create_router_app(router), _bind("127.0.0.1", 0), "ops-test-router")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield AliasRouter(f"http://127.0.0.1:{port}", router)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
