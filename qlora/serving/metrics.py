"""The router's Prometheus metrics, with the seed's names and labels.

vLLM labels no metric by adapter, so per-adapter latency and errors are measured here.
Labels: ``model`` is the base model; ``adapter`` is the versioned name that answered
(``legal-ko@v2``, or the base name), so a canary's two versions are told apart;
``llm_adapter_version_info`` has ``adapter`` = the public name (``legal-ko``).
``arm`` is ``control``/``candidate`` for requests in an A/B experiment, empty otherwise;
``llm_feedback_total{adapter,rating}`` counts user feedback per version (up, down, score_1..5,
and win/loss/tie for each side of a pairwise preference).
Each router gets its own registry, so several routers can live in one process (tests).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from qlora.core.io import read_json

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def status_label(http_status: int | None) -> str:
    if http_status is None:
        return "timeout"
    if http_status < 400:
        return "success"
    return "client_error" if http_status < 500 else "server_error"


def split_versioned(name: str) -> tuple[str, str]:
    public, _, version = name.partition("@")
    return public, version


def train_date_of(adapter_path: str) -> str:
    """From the adapter's manifest.json (training writes it); else the folder's modification date."""
    folder = Path(adapter_path)
    try:
        manifest = read_json(folder / "manifest.json", "adapter manifest")
        date = manifest.get("train_date") or manifest.get("created_at") or ""
        if date:
            return str(date)[:10]
    except (OSError, ValueError, AttributeError):  # JsonInputError is a ValueError
        pass
    try:
        return datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc).date().isoformat()
    except OSError:
        return "unknown"


class RouterMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.duration = Histogram(
            "llm_inference_duration_seconds", "LLM inference latency seen by the router",
            ["model", "adapter", "request_type", "arm"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter(
            "llm_request_total", "Requests per adapter version and outcome", ["adapter", "status", "arm"],
            registry=self.registry)
        self.tokens = Counter(
            "llm_generated_tokens_total", "Completion tokens per adapter version (for tokens/s)", ["adapter"],
            registry=self.registry)
        self.version_info = Gauge(
            "llm_adapter_version_info", "Adapter versions loaded on the backend (1 = loaded)",
            ["adapter", "version", "train_date"], registry=self.registry)
        self.in_flight = Gauge(
            "llm_requests_in_flight", "Requests the router has sent to an adapter version and not yet answered",
            ["adapter"], registry=self.registry)
        self.feedback = Counter(
            "llm_feedback", "User feedback per adapter version (POST /v1/feedback)", ["adapter", "rating"],
            registry=self.registry)
        self.alias_weight = Gauge(
            "llm_alias_weight", "Share of an alias's traffic each version gets (what serves, not what is loaded)",
            ["alias", "version"], registry=self.registry)
        self._alias_series: set[tuple[str, str]] = set()
        self._versions: dict[str, tuple[str, str, str]] = {}  # versioned name -> its label values
        self._in_flight: dict[str, int] = {}
        self._requests: dict[str, dict[str, int]] = {}  # adapter -> status -> count (the JSON view of the counter)

    def observe(self, base_model: str, adapter: str, request_type: str, seconds: float,
                http_status: int | None, completion_tokens: int = 0, arm: str = "") -> None:
        self.duration.labels(base_model, adapter, request_type, arm).observe(seconds)
        status = status_label(http_status)
        self.requests.labels(adapter, status, arm).inc()
        by_status = self._requests.setdefault(adapter, {})
        by_status[status] = by_status.get(status, 0) + 1
        if completion_tokens:
            self.tokens.labels(adapter).inc(completion_tokens)

    def request_started(self, adapter: str) -> None:
        self._in_flight[adapter] = self._in_flight.get(adapter, 0) + 1
        self.in_flight.labels(adapter).set(self._in_flight[adapter])

    def request_finished(self, adapter: str) -> None:
        """Count a request down; a name that is not a loaded version loses its series at zero,
        so names clients make up cannot grow the metric without bound."""
        left = self._in_flight.get(adapter, 1) - 1
        if left > 0 or adapter in self._versions:
            self._in_flight[adapter] = max(left, 0)
            self.in_flight.labels(adapter).set(max(left, 0))
        else:
            self._in_flight.pop(adapter, None)
            try:
                self.in_flight.remove(adapter)
            except KeyError:
                pass

    def version_loaded(self, versioned_name: str, adapter_path: str) -> None:
        public, version = split_versioned(versioned_name)
        labels = (public, version or "unversioned", train_date_of(adapter_path))
        old = self._versions.get(versioned_name)
        if old and old != labels:
            self.version_info.remove(*old)
        self._versions[versioned_name] = labels
        self.version_info.labels(*labels).set(1)

    def version_unloaded(self, versioned_name: str) -> None:
        labels = self._versions.pop(versioned_name, None)
        if labels:
            self.version_info.remove(*labels)

    def sync_versions(self, cards: list[dict]) -> None:
        """Match the gauge to the backend's adapter cards (after a router restart, or loads made directly)."""
        adapters = {c["id"]: c.get("root") or "" for c in cards if c.get("parent")}
        for name in set(self._versions) - set(adapters):
            self.version_unloaded(name)
        for name, root in adapters.items():
            if name not in self._versions:
                self.version_loaded(name, root)

    def in_flight_counts(self) -> dict[str, int]:
        return {name: n for name, n in self._in_flight.items()}

    def request_counts(self) -> dict[str, dict[str, int]]:
        return {adapter: dict(by_status) for adapter, by_status in self._requests.items()}

    def versions(self) -> dict[str, dict]:
        """Loaded versioned name -> {adapter (public name), version, train_date}."""
        return {name: {"adapter": public, "version": version, "train_date": date}
                for name, (public, version, date) in self._versions.items()}
    def sync_aliases(self, aliases: dict[str, dict[str, float]]) -> None:
        """Match ``llm_alias_weight`` to the alias table; a version that left an alias loses its series,
        so a rollback shows as one line ending and another starting."""
        current = {(alias, split_versioned(name)[1] or name): weight
                   for alias, weights in aliases.items() for name, weight in weights.items()}
        for labels in self._alias_series - set(current):
            self.alias_weight.remove(*labels)
        for labels, weight in current.items():
            self.alias_weight.labels(*labels).set(weight)
        self._alias_series = set(current)

    def render(self) -> bytes:
        return generate_latest(self.registry)
