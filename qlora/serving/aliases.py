"""The router's alias table: public adapter name -> immutable versioned names with weights.

vLLM caches adapters by name, so new weights always get a new name (``legal-ko@v2``) and
a deploy moves the alias. The table is a JSON file written atomically (temp file + rename),
so a crash never leaves half a table and a restarted router serves the same versions.
"""
from __future__ import annotations

import random
import threading
from datetime import datetime, timezone
from pathlib import Path

from qlora.serving.state_files import atomic_write_json, read_json

MAX_TARGETS = 2  # one version, or a canary split between two


class AliasError(ValueError):
    pass


def expand_weights(public_name: str, weights: dict[str, float]) -> dict[str, float]:
    """Validate and normalise; ``{"@v1": 0.9}`` is shorthand for ``{"<public>@v1": 0.9}``."""
    if not public_name or "@" in public_name:
        raise AliasError(f"alias name {public_name!r} must be non-empty and contain no '@' (that marks a version)")
    if not isinstance(weights, dict) or not 1 <= len(weights) <= MAX_TARGETS:
        raise AliasError(f"alias {public_name!r}: weights must map 1 or {MAX_TARGETS} versioned names to weights")
    expanded = {}
    for target, weight in weights.items():
        name = f"{public_name}{target}" if target.startswith("@") else target
        if not name.startswith(f"{public_name}@") or name == f"{public_name}@":
            raise AliasError(f"alias {public_name!r}: target {target!r} is not a version of it ('{public_name}@<v>')")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise AliasError(f"alias {public_name!r}: weight of {name!r} must be a number >= 0, got {weight!r}")
        expanded[name] = float(weight)
    total = sum(expanded.values())
    if total <= 0:
        raise AliasError(f"alias {public_name!r}: weights sum to 0; at least one version must get traffic")
    return {name: weight / total for name, weight in expanded.items()}


class AliasTable:
    def __init__(self, path: str | Path, rng: random.Random | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._aliases: dict[str, dict[str, float]] = self._read()

    def _read(self) -> dict[str, dict[str, float]]:
        try:
            aliases = read_json(self.path, "alias table").get("aliases", {})
        except ValueError as exc:
            raise AliasError(str(exc)) from None
        return {name: expand_weights(name, weights) for name, weights in aliases.items()}

    def _write(self) -> None:
        atomic_write_json(self.path, {"aliases": self._aliases, "updated_at": datetime.now(timezone.utc).isoformat()})

    def set(self, public_name: str, weights: dict[str, float]) -> dict[str, float]:
        normalised = expand_weights(public_name, weights)
        with self._lock:
            self._aliases[public_name] = normalised
            self._write()
        return normalised

    def delete(self, public_name: str) -> bool:
        with self._lock:
            found = self._aliases.pop(public_name, None) is not None
            if found:
                self._write()
        return found

    def get(self, public_name: str) -> dict[str, float] | None:
        with self._lock:
            weights = self._aliases.get(public_name)
            return dict(weights) if weights else None

    def all(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: dict(w) for name, w in self._aliases.items()}

    def aliases_targeting(self, versioned_name: str) -> list[str]:
        with self._lock:
            return sorted(n for n, w in self._aliases.items() if w.get(versioned_name, 0) > 0)

    def resolve(self, name: str) -> str:
        """The versioned name to send a request for ``name`` to (``name`` itself when not an alias)."""
        with self._lock:
            weights = self._aliases.get(name)
            if not weights:
                return name
            targets = list(weights)
            return self._rng.choices(targets, weights=[weights[t] for t in targets])[0]
