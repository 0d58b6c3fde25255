"""What the router and server hold for a domain, and the idempotent moves the deployer makes on them.

Every move here is safe to repeat, because a rollback retries them while a
server restarts: loading a name that is already loaded with the same weights,
or unloading one that is gone, is not an error.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from prometheus_client.parser import text_string_to_metric_families

from qlora.core.adapters import AdapterRef, registered_adapter, version_of
from qlora.deploy.history import deployed_versions
from qlora.serving.client import ServingError
from qlora.core.warehouse import Warehouse


VERSION_INFO = "llm_adapter_version_info"
IN_FLIGHT = "llm_requests_in_flight"
DRAIN_POLL_S = 0.05


def _same_path(a: str | None, b: str) -> bool:
    return bool(a) and Path(a).resolve() == Path(b).resolve()


@dataclass(frozen=True)
class Serving:
    """Who serves a domain's alias: the versioned name and where its weights are."""
    name: str
    path: str


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ServingError):
        if exc.status == 0:  # the shared client's code for a transport failure
            return f"server unreachable or not answering ({exc.body[:200]})"
        return f"server answered {exc.status}: {exc.message.strip()[:300]}"
    if isinstance(exc, httpx.TransportError):
        return f"server unreachable ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}"


class ServingState:
    def __init__(self, client, warehouse: Warehouse):
        self.client, self.warehouse = client, warehouse

    def loaded(self) -> dict[str, str]:
        """Served name -> path, from /v1/models (`root` is the adapter's path)."""
        return {card["id"]: card.get("root", "") for card in self.client.models()}

    def serving(self, domain: str) -> Serving | None:
        """The version that holds (most of) the domain's alias now, or None before a first deploy."""
        try:
            weights = self.client.get_alias(domain)
        except ServingError as exc:
            if exc.status == 404:
                return None
            raise
        if not weights:
            return None
        name = max(sorted(weights), key=lambda n: weights[n])
        return Serving(name, self._path_of(domain, name))

    def _path_of(self, domain: str, name: str) -> str:
        path = self.loaded().get(name)
        if path:
            return path
        # Not loaded (a restarted server forgets runtime loads): the history knows where it came from.
        version = version_of(name)
        live = deployed_versions(self.warehouse, domain)
        match = live[live["version"] == version] if not live.empty else live
        if not match.empty:
            return str(match.iloc[0]["path"])
        ref = registered_adapter(self.warehouse, domain, version)
        return ref.path if ref else ""

    def load(self, name: str, path: str) -> str:
        try:
            self.client.load_adapter(name, path)
        except ServingError as exc:
            # vLLM answers 400 for a name already loaded: fine if it is these very weights.
            if exc.status == 400 and _same_path(self.loaded().get(name), path):
                return f"{name} was already loaded from {path}"
            raise
        return f"loaded {name} from {path}"

    def unload(self, name: str) -> str:
        try:
            self.client.unload_adapter(name)
        except ServingError as exc:
            if exc.status == 404:
                return f"{name} was not loaded"
            raise
        return f"unloaded {name}"

    def ensure_loaded(self, name: str, path: str, timeout_s: float) -> None:
        if name not in self.loaded():
            if not path:
                raise RuntimeError(f"{name} is not loaded and no path for it is known")
            self.load(name, path)
            self.client.wait_for_model(name, timeout_s=timeout_s)

    def clear_alias(self, domain: str) -> None:
        """Remove the alias (a failed first deploy must not leave it on a version about to go)."""
        # The shared client has no delete call; the router's admin route is DELETE /admin/aliases/<name>.
        headers = {"Authorization": f"Bearer {self.client.api_key}"} if self.client.api_key else {}
        response = httpx.delete(f"{self.client.base_url}/admin/aliases/{domain}", headers=headers, timeout=30)
        if response.status_code not in (200, 404):
            raise ServingError(response.status_code, response.text, f"DELETE /admin/aliases/{domain}")

    def version_info(self, adapter: AdapterRef) -> str:
        """The router's `llm_adapter_version_info` names the new version (it follows loads and unloads)."""
        for family in text_string_to_metric_families(self.client.metrics_text()):
            for sample in family.samples:
                if (sample.name == VERSION_INFO and sample.value == 1
                        and sample.labels.get("adapter") == adapter.domain
                        and sample.labels.get("version") == adapter.version):
                    return f"{VERSION_INFO}{{adapter={adapter.domain},version={adapter.version},train_date={sample.labels.get('train_date')}}}"
        raise RuntimeError(f"the router's {VERSION_INFO} has no series for {adapter.served_name}")

    def in_flight(self, name: str) -> int:
        """Requests the router has sent to `name` and not yet answered (its llm_requests_in_flight)."""
        for family in text_string_to_metric_families(self.client.metrics_text()):
            for sample in family.samples:
                if sample.name == IN_FLIGHT and sample.labels.get("adapter") == name:
                    return int(sample.value)
        return 0

    def drain(self, name: str | None, seconds: float) -> str:
        """Wait, at most `seconds`, until the router has no request on `name` left before it is unloaded.

        The alias no longer points at `name` when this runs, so the count only falls. After the
        limit the unload goes ahead and the requests still running are named in the step's detail.
        """
        if name is None:
            return "nothing to drain"
        started = time.monotonic()
        left = self.in_flight(name)
        while left and time.monotonic() - started < seconds:
            time.sleep(DRAIN_POLL_S)
            left = self.in_flight(name)
        waited = time.monotonic() - started
        if left:
            return f"{left} request(s) still on {name} after the {seconds:.1f}s drain limit"
        return f"no request left on {name} after {waited:.2f}s"
