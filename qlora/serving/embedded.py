"""Start the embedded server and its router in this process (two uvicorn servers on loopback threads).

``start_embedded`` is what tests, eval, deploy and the demo use; ``handle.url`` is the
router (the public URL), ``handle.backend_url`` the embedded vLLM-compatible server, which
listens on loopback and answers only callers with the admin key (the router).
"""
from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from qlora.core.paths import paths
from qlora.serving.aliases import AliasTable
from qlora.serving.base_identity import base_fingerprint
from qlora.serving.arms import ArmRouting
from qlora.serving.config import EmbeddedConfig, load_config
from qlora.serving.engine import BatchingEngine
from qlora.serving.model_store import ModelStore
from qlora.serving.router import Router, create_router_app
from qlora.serving.server import EmbeddedBackend, create_app
from qlora.serving.state_files import LoadedAdapters


@dataclass
class _Backend:
    """One embedded server: its model, engine and uvicorn thread (replaced whole by a restart)."""
    config: EmbeddedConfig
    base_path: Path
    api_key: str
    adapters_root: Path
    port: int = 0
    engine: BatchingEngine | None = None
    server: EmbeddedBackend | None = None
    served: tuple | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.backend_host}:{self.port}"

    def start(self) -> "_Backend":
        c = self.config
        numerics = c.numerics()
        store = ModelStore(self.base_path, numerics.quantization, numerics.compute_dtype, c.max_lora_rank, c.max_loras)
        self.engine = BatchingEngine(store, c.max_batch_size, c.batch_window_ms)
        max_len = c.max_model_len or int(getattr(store.config, "max_position_embeddings", 2048))
        backend = self.server = EmbeddedBackend(self.engine, c.served_model_name or self.base_path.name, max_len,
                                                c.default_max_tokens, self.adapters_root)
        try:
            sock = _bind(c.backend_host, self.port or c.backend_port)
            app = create_app(backend, api_key=self.api_key, max_body_bytes=c.router.max_body_bytes)
            self.served = _serve(app, sock, "qlora-embedded-server")
        except BaseException:
            self.engine.stop()
            raise
        self.port = sock.getsockname()[1]
        return self

    def stop(self) -> None:
        if self.served:
            _shutdown(*self.served)
            self.served = None
        if self.engine:
            self.engine.stop()


@dataclass
class EmbeddedHandle:
    url: str
    api_key: str
    router: Router
    _backend: _Backend = field(repr=False)
    _router_server: tuple | None = field(default=None, repr=False)

    @property
    def backend_url(self) -> str:
        return self._backend.url

    @property
    def engine(self) -> BatchingEngine:
        return self._backend.engine

    @property
    def backend(self) -> EmbeddedBackend:
        return self._backend.server

    def stop_backend(self) -> None:
        """Stop the backend alone (the router stays up): what a crashed vLLM looks like to the router."""
        self._backend.stop()

    def start_backend(self) -> None:
        """Start a fresh backend on the same port: no adapter loaded, as after a process restart."""
        self._backend.start()

    def stop(self) -> None:
        if self._router_server:
            _shutdown(*self._router_server)
            self._router_server = None
        self._backend.stop()

    def wait(self) -> None:
        """Block until a server thread ends (the foreground ``qlora serve``)."""
        while self._router_server and self._router_server[1].is_alive():
            time.sleep(0.5)

    def __enter__(self) -> "EmbeddedHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
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


def _shutdown(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=10)


def start_embedded(
    base_model_path: str | Path | None = None,
    port: int = 0,
    api_key: str | None = None,
    state_dir: str | Path | None = None,
    adapters_root: str | Path | None = None,
    config: EmbeddedConfig | None = None,
    host: str = "127.0.0.1",
) -> EmbeddedHandle:
    """Load the base as configured, start the batching engine, the server and the router.

    ``config`` None means ``configs/serving/embedded.yaml`` (under QLORA_CONFIG_DIR), as `qlora serve`
    and the serving resource promise: the daemon and eval's own server read that profile too.

    ``api_key`` guards the router's admin routes and the backend (a random one is made when None:
    read ``handle.api_key``). Aliases persist in ``state_dir/aliases.json``.
    """
    config = (config or load_config(None, "embedded")).model_copy(deep=True)  # none given: the shipped profile
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

    backend = _Backend(config, base_path, api_key, root).start()
    try:
        aliases = AliasTable(state / "aliases.json")
        router = Router(backend.url, api_key, aliases, root, backend_api_key=api_key,
                        timeout_s=config.router.request_timeout_s, loaded=LoadedAdapters(state / "adapters.json"),
                        base_fingerprint=base_fingerprint(base_path), router_config=config.router,
                        arm_routing=ArmRouting.in_state_dir(state, aliases))
        router_sock = _bind(host, port)
        router_server = _serve(create_router_app(router), router_sock, "qlora-router")
    except BaseException:
        backend.stop()
        raise
    url = f"http://{host}:{router_sock.getsockname()[1]}"
    return EmbeddedHandle(url, api_key, router, backend, router_server)
