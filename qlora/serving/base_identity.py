"""The fingerprint of the base a server serves: the same value training writes to an adapter's manifest
(``manifest.json`` ``base.fingerprint``), so a deploy can refuse an adapter trained on another base."""
from __future__ import annotations

import json
from pathlib import Path


def base_fingerprint(base_path: str | Path) -> str:
    """The base folder's recorded fingerprint (fingerprint.json), else the hash of its files; '' if unreadable."""
    folder = Path(base_path)
    record = folder / "fingerprint.json"
    try:
        if record.is_file():
            return str(json.loads(record.read_text(encoding="utf-8"))["fingerprint"])
        if folder.is_dir():
            from qlora.modeling.base_model import files_fingerprint

            return files_fingerprint(folder)
    except (OSError, KeyError, ValueError):
        pass
    return ""


def adapter_base_fingerprint(adapter_path: str | Path) -> str:
    """What the adapter's manifest says its base was ('' when the manifest does not say)."""
    try:
        manifest = json.loads((Path(adapter_path) / "manifest.json").read_text(encoding="utf-8"))
        base = manifest.get("base") or {}
        return str(base.get("fingerprint") or "") if isinstance(base, dict) else ""
    except (OSError, ValueError, AttributeError):
        return ""
