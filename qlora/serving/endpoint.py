"""The serving endpoint as a type: what eval, deploy, the demo, ``qlora status`` and the benches may ask
of a server. ``ServingClient`` implements it over HTTP against the router (or vLLM itself for the
inference part); tests may pass any object with these methods.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Completion:
    text: str
    model: str            # the name that answered: through the router, the versioned adapter
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    finish_reason: str


@dataclass(frozen=True)
class VersionState:
    name: str             # versioned name, e.g. legal-ko@v2
    version: str
    weight: float
    loaded: bool          # on the backend now
    path: str = ""
    train_date: str = ""


@dataclass(frozen=True)
class AliasState:
    """Who serves a public name: its versions, their weights, whether each is loaded."""
    name: str
    weights: dict[str, float]
    versions: list[VersionState] = field(default_factory=list)
    servable: bool = True  # every version that gets traffic is loaded

    @property
    def serving(self) -> str:
        """The version with the most traffic (ties: the first by name)."""
        return max(sorted(self.weights), key=lambda n: self.weights[n])

    @classmethod
    def from_json(cls, data: dict) -> "AliasState":
        return cls(data["name"], dict(data["weights"]), [VersionState(**v) for v in data.get("versions", [])],
                   bool(data.get("servable", True)))


@dataclass(frozen=True)
class BaseInfo:
    model: str            # the served base name
    fingerprint: str      # '' when the server cannot tell


@runtime_checkable
class ServingEndpoint(Protocol):
    """Inference, adapter and alias moves, and JSON observation of the router's state."""

    def health(self) -> bool: ...
    def models(self) -> list[dict]: ...
    def wait_for_model(self, name: str, timeout_s: float = 60) -> None: ...
    def chat(self, model: str, messages: list[dict], max_tokens: int = 64, temperature: float = 0.0,
             stop: list[str] | None = None) -> Completion: ...
    def chat_many(self, model: str, conversations: list[list[dict]], concurrency: int = 16,
                  **kw) -> list: ...
    def load_adapter(self, name: str, path: str) -> None: ...
    def unload_adapter(self, name: str) -> None: ...
    def set_alias(self, public_name: str, weights: dict[str, float]) -> None: ...
    def get_alias(self, public_name: str) -> dict[str, float]: ...
    def delete_alias(self, public_name: str) -> bool: ...
    def alias_state(self, public_name: str) -> AliasState | None: ...
    def aliases(self) -> dict[str, AliasState]: ...
    def in_flight(self) -> dict[str, int]: ...
    def request_counts(self) -> dict[str, dict[str, int]]: ...
    def versions(self) -> dict[str, dict]: ...
    def base(self) -> BaseInfo: ...
    def state(self) -> dict: ...
