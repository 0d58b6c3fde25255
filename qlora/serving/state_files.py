"""Router state on disk: JSON files replaced atomically (temp file + fsync + rename).

A crash mid-write leaves the old file, never half of a new one, so a restarted router
reads a whole alias table and a whole list of loaded adapters.
"""
from __future__ import annotations

import threading
from pathlib import Path

from qlora.core import io


def atomic_write_json(path: Path, payload: dict) -> None:
    io.write_json_atomic(path, payload, mode=0o600, sort_keys=True)


def read_json(path: Path, what: str) -> dict:
    """The JSON object in ``path`` ({} when there is none); errors name file, line and ``what``."""
    if not path.exists():
        return {}
    return io.read_json(path, what)


class LoadedAdapters:
    """Adapters loaded through the router (name -> path): a backend restart loses runtime loads
    (vLLM's too), so the router loads them again, and aliases keep pointing at served versions."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._adapters: dict[str, str] = dict(read_json(self.path, "loaded adapter list").get("adapters", {}))

    def record(self, name: str, adapter_path: str) -> None:
        with self._lock:
            self._adapters[name] = adapter_path
            atomic_write_json(self.path, {"adapters": self._adapters})

    def forget(self, name: str) -> None:
        with self._lock:
            if self._adapters.pop(name, None) is not None:
                atomic_write_json(self.path, {"adapters": self._adapters})

    def all(self) -> dict[str, str]:
        with self._lock:
            return dict(self._adapters)
