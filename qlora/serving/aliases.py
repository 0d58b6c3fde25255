"""The router's alias table: public adapter name -> immutable versioned names with weights.

vLLM caches adapters by name, so new weights always get a new name (``legal-ko@v2``) and
a deploy moves the alias. The table is a JSON file written atomically (temp file + rename),
so a crash never leaves half a table and a restarted router serves the same versions. Each
write also refreshes a last-good copy beside it: a deleted or damaged ``aliases.json`` is
restored from that copy (and logged), and with neither readable the router refuses to start
rather than serve an empty table while deployments exist.
"""
from __future__ import annotations

import logging
import math
import random
import threading
from datetime import datetime, timezone
from pathlib import Path

from qlora.serving.state_files import atomic_write_json, read_json

log = logging.getLogger(__name__)
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
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
                or weight < 0:
            raise AliasError(f"alias {public_name!r}: weight of {name!r} must be a finite number >= 0, got {weight!r}")
        expanded[name] = float(weight)
    total = sum(expanded.values())
    if not math.isfinite(total) or total <= 0:
        raise AliasError(f"alias {public_name!r}: weights sum to 0; at least one version must get traffic")
    return {name: weight / total for name, weight in expanded.items()}


class AliasTable:
    def __init__(self, path: str | Path, rng: random.Random | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._rng = rng or random.Random()
        self._aliases: dict[str, dict[str, float]] = self._read()

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.last-good.json")

    def _parse(self, path: Path) -> dict[str, dict[str, float]]:
        aliases = read_json(path, "alias table").get("aliases", {})
        if not isinstance(aliases, dict):
            raise AliasError(f"{path}: 'aliases' must be an object")
        try:
            return {name: expand_weights(name, weights) for name, weights in aliases.items()}
        except AliasError as exc:
            raise AliasError(f"{path}: {exc}") from None

    def _read(self) -> dict[str, dict[str, float]]:
        if not self.path.exists() and not self.backup_path.exists():
            return {}  # a first start
        try:
            return self._parse(self.path) if self.path.exists() else self._restore("is missing")
        except ValueError as exc:  # AliasError is one
            return self._restore(f"is unreadable ({exc})")

    def _restore(self, problem: str) -> dict[str, dict[str, float]]:
        try:
            aliases = self._parse(self.backup_path) if self.backup_path.exists() else None
        except ValueError as exc:
            raise AliasError(f"{self.path} {problem}, and its last good copy {self.backup_path} is unreadable too "
                             f"({exc}); restore one of them from a backup or rebuild the aliases with `qlora deploy`"
                             ) from None
        if aliases is None:
            raise AliasError(f"{self.path} {problem} and there is no last good copy {self.backup_path}; refusing to "
                             "start with an empty alias table. Restore the file, or remove it only if no deployment "
                             "should be served")
        log.warning("%s %s: restored %d alias(es) from %s", self.path, problem, len(aliases), self.backup_path)
        self._aliases = aliases
        self._write()
        return aliases

    def _write(self) -> None:
        payload = {"aliases": self._aliases, "updated_at": datetime.now(timezone.utc).isoformat()}
        atomic_write_json(self.path, payload)
        atomic_write_json(self.backup_path, payload)

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
