"""Inputs and outputs of an adapter run: the exported rows, the run key and version, the warehouse row."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd

from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse


def export_split(warehouse: Warehouse, domain: str, split: str, out_dir: Path) -> tuple[Path, int]:
    """Write one split of ``train_eval_split`` as ``{"messages": [...]}`` lines, ordered by row_id."""
    rows = warehouse.query(
        'select row_id, messages_json from "train_eval_split" where domain = ? and split = ? order by row_id',
        [domain, split],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{split}.jsonl"
    lines = [json.dumps({"messages": json.loads(m)}, ensure_ascii=False) for m in rows.get("messages_json", [])]
    target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return target, len(lines)


def export_training_data(warehouse: Warehouse, domain: str) -> dict:
    """Export train (and eval) rows under datasets/<domain>/<data_version>/; version = hash of the train file."""
    staging = paths().home / "datasets" / domain / ".staging"
    train, n_train = export_split(warehouse, domain, "train", staging)
    if n_train == 0:
        raise ValueError(f"no train rows for domain '{domain}' in warehouse table train_eval_split; "
                         "materialise train_eval_split for this partition first")
    evaluation, n_eval = export_split(warehouse, domain, "eval", staging)
    data_version = hashlib.sha256(train.read_bytes()).hexdigest()[:16]
    final = paths().home / "datasets" / domain / data_version
    final.mkdir(parents=True, exist_ok=True)
    for f in (train, evaluation):
        f.replace(final / f.name)
    return {"data_version": data_version, "train": final / "train.jsonl", "eval": final / "eval.jsonl" if n_eval else None,
            "train_rows": n_train, "eval_rows": n_eval}


def run_key(data_version: str, config_hash: str, base_fingerprint: str) -> str:
    """Same inputs -> same key -> same work folder, so a killed run resumes from its checkpoints."""
    return hashlib.sha256(f"{data_version}|{config_hash}|{base_fingerprint}".encode()).hexdigest()[:12]


def new_version(key: str, now: dt.datetime | None = None) -> str:
    """Sortable and unique: UTC timestamp plus the run key."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{key[:8]}"


def publish_adapter(work_dir: Path, domain: str, version: str, warehouse: Warehouse) -> Path:
    """Move a finished run to artifacts/adapters/<domain>/<version>/ (never overwritten) and record it."""
    target = paths().adapters / domain / version
    if target.exists():
        raise FileExistsError(f"adapter version {target} already exists; versions are never overwritten")
    manifest = json.loads((work_dir / "manifest.json").read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    work_dir.rename(target)
    warehouse.append("adapters", pd.DataFrame([{
        "domain": domain,
        "version": version,
        "path": str(target),
        "manifest_json": json.dumps(manifest, ensure_ascii=False),
        "created_at": dt.datetime.now(dt.timezone.utc),
    }]))
    return target
