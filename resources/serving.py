"""Dagster resource ``serving``: where adapters are served, as a ServingClient on the router's public URL.

One interface, two implementations (as project_fully_featured does): the embedded server
for tests and laptops, and vLLM behind the router in production. Assets call
``serving.client()`` and never know which one they got.
"""
from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path

import dagster as dg
from pydantic import Field

from qlora.serving.client import ServingClient


class ServingResource(dg.ConfigurableResource):
    """The multi-LoRA serving endpoint (the router in front of the backend)."""

    timeout_s: float = Field(default=120.0, description="HTTP timeout of one request")

    @abstractmethod
    def client(self) -> ServingClient:
        """A client on the router's public URL, with the admin key."""

    def observer_client(self) -> ServingClient | None:
        """A client for looking only (sensors): None when nothing serves, rather than starting a server."""
        return self.client()


class EmbeddedServingResource(ServingResource):
    """Ensures one embedded server + router runs for this QLORA_HOME (a detached process; pid/port in
    ``$QLORA_HOME/serving/server.json``), starting it when needed."""

    base_model_path: str = Field(default="", description="base model folder; '' = `base_model` of the profile")
    config_path: str = Field(default="", description="serving profile; '' = configs/serving/embedded.yaml")
    port: int = Field(default=0, description="router port; 0 = any free port")
    start_timeout_s: float = Field(default=180.0, description="how long to wait for a new server to be healthy")
    # On CPU a request waits behind whole batches of 32 decodes: 120 s turned a real base's queue
    # into client timeouts that the eval scored as failed answers. The server's own limit is 300 s.
    timeout_s: float = Field(default=600.0, description="HTTP timeout of one request (CPU decoding queues)")

    def _base(self) -> Path:
        if self.base_model_path:
            return Path(self.base_model_path)
        from qlora.serving.config import load_config

        return load_config(self.config_path or None, "embedded").base_model_path()

    def client(self) -> ServingClient:
        from qlora.serving.daemon import ensure_running

        state = ensure_running(self._base(), config_path=self.config_path or None, port=self.port,
                               timeout_s=self.start_timeout_s)
        return ServingClient(state["url"], api_key=state["api_key"], timeout_s=self.timeout_s)

    def observer_client(self) -> ServingClient | None:
        from qlora.ops.endpoint import running_router

        return running_router(timeout_s=self.timeout_s)

    def stop(self) -> bool:
        from qlora.serving.daemon import stop

        return stop()


class VllmServingResource(ServingResource):
    """The router in front of vLLM (started by operations from ``qlora serve --backend vllm --print-command``).

    The prod profile binds ``url`` and ``api_key`` to dg.EnvVar("QLORA_SERVING_URL") and
    dg.EnvVar("QLORA_SERVING_API_KEY"): the Definitions load without them, and a run that needs
    serving fails at its start naming the variable that is not set.
    """

    url: str = Field(description="the router's public URL, e.g. http://serving:8000 ($QLORA_SERVING_URL in prod)")
    api_key: str = Field(default="", description="the router's admin key; '' = read the variable api_key_env")
    api_key_env: str = Field(default="QLORA_SERVING_API_KEY", description="environment variable with the admin key")

    def client(self) -> ServingClient:
        key = self.api_key or os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"VllmServingResource: environment variable {self.api_key_env} (the router's admin key) "
                             "is not set")
        return ServingClient(self.url, api_key=key, timeout_s=self.timeout_s)
