"""Is the adapter served on the base it was trained on? Both sides by fingerprint.

The adapter's manifest records its base's fingerprint at training time (``base.fingerprint``);
the serving side is what the router reports for the base it serves (``GET /admin/base``,
``ServingEndpoint.base()``), the same value for vLLM and the embedded server. An adapter on
another base loads without error whenever the shapes agree, and then answers badly; eval checks
this first (unverifiable blocks), and deploy checks it again before any load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qlora.modeling.base_model import checkpoint_fingerprint


@dataclass(frozen=True)
class BaseAgreement:
    passed: bool
    serving_base: str          # "<name> (fingerprint <fp>)"
    adapter_base: str          # "<base path> (fingerprint <fp>, from <manifest>)"
    serving_fingerprint: str | None
    adapter_fingerprint: str | None

    def message(self) -> str:
        verdict = "same base" if self.passed else "DIFFERENT bases"
        return f"{verdict}: serving {self.serving_base}; adapter trained on {self.adapter_base}"


def base_folder_fingerprint(base_path: str | Path) -> str:
    """A base folder's fingerprint (its record, else its files hashed); '' when it cannot be read."""
    try:
        return checkpoint_fingerprint(base_path) if Path(base_path).is_dir() else ""
    except (OSError, KeyError, ValueError):
        return ""


def adapter_manifest_base(adapter_dir: str | Path) -> dict:
    """The ``base`` section of an adapter's manifest ({} when the manifest does not say)."""
    try:
        manifest = json.loads((Path(adapter_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    base = manifest.get("base") if isinstance(manifest, dict) else None
    return base if isinstance(base, dict) else {}


def compare_bases(serving_name: str, serving_fingerprint: str, adapter_dir: str | Path) -> BaseAgreement:
    """Same base iff both fingerprints are known and equal; an unknown side does not pass."""
    base = adapter_manifest_base(adapter_dir)
    adapter_fp = str(base.get("fingerprint") or "") or None
    adapter_side = (f"{base.get('path', '?')} (fingerprint {adapter_fp or 'missing'}, "
                    f"from {Path(adapter_dir) / 'manifest.json'})")
    serving_side = f"{serving_name} (fingerprint {serving_fingerprint or 'not reported by the server'})"
    passed = bool(adapter_fp) and serving_fingerprint == adapter_fp
    return BaseAgreement(passed, serving_side, adapter_side, serving_fingerprint or None, adapter_fp)
