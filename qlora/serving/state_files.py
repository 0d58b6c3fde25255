"""Router state on disk: JSON files replaced atomically (temp file + fsync + rename).

A crash mid-write leaves the old file, never half of a new one, so a restarted router
reads a whole alias table and a whole list of loaded adapters.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path


def atomic_write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} must be a JSON object")
    return data


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
