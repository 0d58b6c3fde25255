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

from qlora.core.adapters import AdapterRef, registered_adapter, version_of
from qlora.core.warehouse import Warehouse
from qlora.deploy.history import deployed_versions
from qlora.modeling.base_identity import compare_bases
from qlora.serving.client import ServingError
from qlora.serving.endpoint import ServingEndpoint

DRAIN_POLL_S = 0.05


class BaseMismatch(ValueError):
    """The adapter was trained on another base than the one the server serves; the message names both."""


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
    def __init__(self, client: ServingEndpoint, warehouse: Warehouse):
        self.client, self.warehouse = client, warehouse

    def loaded(self) -> dict[str, str]:
        """Served name -> path, from /v1/models (`root` is the adapter's path)."""
        return {card["id"]: card.get("root", "") for card in self.client.models()}

    def serving(self, domain: str) -> Serving | None:
        """The version that holds (most of) the domain's alias now, or None before a first deploy."""
        alias = self.client.alias_state(domain)
        if alias is None or not alias.weights:
            return None
        return Serving(alias.serving, self._path_of(domain, alias.serving))

    def restore_lost_alias(self, domain: str, timeout_s: float) -> Serving | None:
        """The alias is undefined although the history says a version went live (the router's alias files
        were lost): put that version back on the alias, so the deploy has its rollback target again."""
        if self.warehouse is None:
            return None
        live = deployed_versions(self.warehouse, domain)
        if live.empty:
            return None
        row = live.iloc[0]
        name, path = f"{domain}@{row['version']}", str(row["path"])
        self.ensure_loaded(name, path, timeout_s)
        self.client.set_alias(domain, {name: 1.0})
        return Serving(name, path)

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
        self.client.delete_alias(domain)

    def check_base(self, adapter: AdapterRef) -> str:
        """Refuse an adapter unless its manifest's base fingerprint equals the server's: eval's rule
        (`compare_bases`), so an unknown fingerprint on either side blocks here as it does there."""
        served = self.client.base()
        agreement = compare_bases(served.model, served.fingerprint, adapter.path)
        if not agreement.passed:
            raise BaseMismatch(f"{adapter.served_name}: {agreement.message()}; retrain on the served base, "
                               f"serve the adapter's base, or rebuild a manifest that names its base")
        return f"base {served.model} fingerprint {served.fingerprint} matches the adapter's"

    def version_info(self, adapter: AdapterRef) -> str:
        """The router lists the new version as loaded, under its public name (it follows loads and unloads)."""
        info = self.client.versions().get(adapter.served_name)
        if not info or info.get("adapter") != adapter.domain or info.get("version") != adapter.version:
            raise RuntimeError(f"the router does not list {adapter.served_name} among its loaded versions")
        return f"{adapter.served_name} loaded (train_date {info.get('train_date') or 'unknown'})"

    def in_flight(self, name: str) -> int:
        """Requests the router has sent to `name` and not yet answered."""
        return int(self.client.in_flight().get(name, 0))

    def verify(self, domain: str, served_name: str, probe: list[dict], max_tokens: int) -> str:
        """A real completion through the alias, answered by `served_name` (a listed alias can still be dead)."""
        answer = self.client.chat(domain, probe, max_tokens=max_tokens)
        if answer.model != served_name:
            raise RuntimeError(f"{domain} answered by {answer.model!r}, not {served_name!r}")
        return f"{domain} answered by {served_name} ({answer.completion_tokens} tokens)"

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
