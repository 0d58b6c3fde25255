"""Start the embedded server and its router in this process (two uvicorn servers on loopback threads).

``start_embedded`` is what tests, eval, deploy and the demo use; ``handle.url`` is the
router (the public URL), ``handle.backend_url`` the embedded vLLM-compatible server.
"""
from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import uvicorn

from qlora.serving.aliases import AliasTable
from qlora.serving.arms import ArmRouting
from qlora.serving.config import EmbeddedConfig
from qlora.serving.engine import BatchingEngine
from qlora.serving.model_store import ModelStore
from qlora.serving.router import Router, create_router_app
from qlora.serving.server import EmbeddedBackend, create_app
from qlora.serving.state_files import LoadedAdapters
from qlora.core.paths import paths


@dataclass
class EmbeddedHandle:
    url: str
    backend_url: str
    api_key: str
    engine: BatchingEngine
    router: Router
    _servers: list = field(default_factory=list, repr=False)

    def stop(self) -> None:
        for server, thread in self._servers:
            server.should_exit = True
            thread.join(timeout=10)
        self._servers.clear()
        self.engine.stop()

    def wait(self) -> None:
        """Block until a server thread ends (the foreground ``qlora serve``)."""
        while all(thread.is_alive() for _, thread in self._servers):
            time.sleep(0.5)

    def __enter__(self) -> "EmbeddedHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _serve(app, sock: socket.socket, name: str) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start on {sock.getsockname()}")
        time.sleep(0.01)
    return server, thread


def start_embedded(
    base_model_path: str | Path | None = None,
    port: int = 0,
    api_key: str | None = None,
    state_dir: str | Path | None = None,
    adapters_root: str | Path | None = None,
    config: EmbeddedConfig | None = None,
    host: str = "127.0.0.1",
) -> EmbeddedHandle:
    """Load the base (NF4 when configured), start the batching engine, the server and the router.

    ``api_key`` guards the router's admin routes (a random one is made when None: read
    ``handle.api_key``). Aliases persist in ``state_dir/aliases.json``.
    """
    config = replace(config or EmbeddedConfig())
    if base_model_path is not None:
        config.base_model = str(base_model_path)
    base_path = config.base_model_path()
    if not (base_path / "config.json").is_file():
        raise FileNotFoundError(f"base model not found: {base_path}/config.json (serving config field 'base_model')")
    state = Path(state_dir) if state_dir else paths().serving_state
    root = Path(adapters_root) if adapters_root else paths().adapters
    api_key = api_key or secrets.token_urlsafe(24)
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)

    store = ModelStore(base_path, config.quantization, config.compute_dtype, config.max_lora_rank, config.max_loras)
    engine = BatchingEngine(store, config.max_batch_size, config.batch_window_ms)
    max_len = config.max_model_len or int(getattr(store.config, "max_position_embeddings", 2048))
    backend = EmbeddedBackend(engine, config.served_model_name or base_path.name, max_len, config.default_max_tokens)
    servers = []
    try:
        backend_sock = _bind(config.backend_host, config.backend_port)
        servers.append(_serve(create_app(backend), backend_sock, "qlora-embedded-server"))
        backend_url = f"http://{config.backend_host}:{backend_sock.getsockname()[1]}"
        aliases = AliasTable(state / "aliases.json")
        router = Router(backend_url, api_key, aliases, root, timeout_s=config.router.request_timeout_s,
                        loaded=LoadedAdapters(state / "adapters.json"), arm_routing=ArmRouting.in_state_dir(state, aliases))
        router_sock = _bind(host, port)
        servers.append(_serve(create_router_app(router), router_sock, "qlora-router"))
    except BaseException:
        for server, thread in servers:
            server.should_exit = True
            thread.join(timeout=10)
        engine.stop()
        raise
    url = f"http://{host}:{router_sock.getsockname()[1]}"
    return EmbeddedHandle(url, backend_url, api_key, engine, router, servers)
