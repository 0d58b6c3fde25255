"""Is the adapter served on the base it was trained on? Both sides by fingerprint.

The adapter's manifest records its base's fingerprint at training time; the serving side is
the base card of ``/v1/models`` (the card without a ``parent``; its ``root`` is the base's
folder, in vLLM and in the embedded server alike). An adapter on another base loads without
error whenever the shapes agree, and then answers badly; this check catches that first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qlora.modeling.base_model import checkpoint_fingerprint


@dataclass(frozen=True)
class BaseAgreement:
    passed: bool
    serving_base: str          # "<root> (fingerprint <fp>)"
    adapter_base: str          # "<manifest path> (fingerprint <fp>)"
    serving_fingerprint: str | None
    adapter_fingerprint: str | None

    def message(self) -> str:
        verdict = "same base" if self.passed else "DIFFERENT bases"
        return f"{verdict}: serving {self.serving_base}; adapter trained on {self.adapter_base}"


def serving_base_root(cards: list[dict]) -> str:
    for card in cards:
        card = card if isinstance(card, dict) else vars(card)
        if not card.get("parent"):
            return str(card.get("root") or card["id"])
    raise ValueError("the server lists no base model in /v1/models")


def compare_bases(serving_root: str, adapter_dir: str | Path) -> BaseAgreement:
    manifest_path = Path(adapter_dir) / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    adapter_fp = (manifest.get("base") or {}).get("fingerprint")
    adapter_side = f"{(manifest.get('base') or {}).get('path', '?')} (fingerprint {adapter_fp or 'missing'}, from {manifest_path})"
    root = Path(serving_root)
    serving_fp = checkpoint_fingerprint(root) if root.is_dir() else None
    serving_side = f"{serving_root} (fingerprint {serving_fp or 'unreadable here: not a folder on this host'})"
    passed = bool(adapter_fp) and serving_fp == adapter_fp
    return BaseAgreement(passed, serving_side, adapter_side, serving_fp, adapter_fp)
