"""Inputs and outputs of an adapter run: the exported rows, the run key and version, the warehouse row."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pandas as pd

from qlora.core.io import read_json
from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse
from qlora.data.export import data_version as export_data_version, export_split


def export_training_data(warehouse: Warehouse, domain: str) -> dict:
    """Export train (and eval) rows under datasets/<domain>/<data_version>/; version = hash of the train file."""
    staging = paths().datasets / domain / ".staging"
    train, n_train = export_split(warehouse, domain, "train", staging)
    if n_train == 0:
        raise ValueError(f"no train rows for domain '{domain}' in warehouse table train_eval_split; "
                         "materialise train_eval_split for this partition first")
    evaluation, n_eval = export_split(warehouse, domain, "eval", staging)
    data_version = export_data_version(train.read_bytes())
    final = paths().datasets / domain / data_version
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
    manifest = read_json(work_dir / "manifest.json", "adapter manifest")
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
