"""The data area's warehouse reads and writes (tables of docs/architecture.md), one domain at a time.

Every write replaces one partition's rows (`replace_partition`), so re-materialising a
domain never touches another. The quarantine holds two stages (raw, cleaned) per domain;
its partition column is `stage_domain` so each asset replaces only its own stage.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qlora.data.cleaning import CleanResult, clean_rows
from qlora.data.config import DataConfig
from qlora.data.reader import ReadResult, read_domain
from qlora.data.split import SplitResult, split_rows
from qlora.core.warehouse import Warehouse


def _with_domain(frame: pd.DataFrame, domain: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "domain", domain)
    return frame


def write_quarantine(warehouse: Warehouse, domain: str, stage: str, frame: pd.DataFrame) -> None:
    frame = _with_domain(frame, domain)
    frame.insert(1, "stage", stage)
    frame.insert(2, "stage_domain", f"{stage}:{domain}")
    warehouse.replace_partition("quarantine", "stage_domain", f"{stage}:{domain}", frame)


def store_raw(warehouse: Warehouse, domain: str, folder: Path) -> ReadResult:
    result = read_domain(folder)
    warehouse.replace_partition("raw_instructions", "domain", domain, _with_domain(result.rows_frame(), domain))
    write_quarantine(warehouse, domain, "raw", result.quarantine_frame())
    return result


def store_cleaned(warehouse: Warehouse, domain: str, config: DataConfig, tokenizer=None) -> CleanResult:
    raw = warehouse.query(
        "select * from raw_instructions where domain = ? order by source_file, line", [domain]
    )
    if raw.empty:
        raise ValueError(f"no raw rows for domain {domain!r}: materialise raw_instructions first")
    result = clean_rows(raw, config.rules(domain), config.detector_languages(), tokenizer=tokenizer)
    warehouse.replace_partition("cleaned_dataset", "domain", domain, _with_domain(result.kept, domain))
    write_quarantine(warehouse, domain, "cleaned", result.quarantine)
    return result


def store_split(warehouse: Warehouse, domain: str, config: DataConfig, eval_dir: Path) -> SplitResult:
    cleaned = warehouse.query("select * from cleaned_dataset where domain = ? order by row_id", [domain])
    if cleaned.empty:
        raise ValueError(f"no cleaned rows for domain {domain!r}: materialise cleaned_dataset first")
    result = split_rows(cleaned, config.rules(domain), eval_dir / f"{domain}.jsonl")
    warehouse.replace_partition("train_eval_split", "domain", domain, _with_domain(result.rows, domain))
    quarantined = pd.DataFrame({
        "source_file": result.contaminated["source"].str.rsplit(":", n=1).str[0],
        "line": result.contaminated["source"].str.rsplit(":", n=1).str[1].astype("int64"),
        "reason": "eval_contamination",
        "detail": "prompt also in the eval set; removed from train",
        "excerpt": result.contaminated["messages_json"].str[:200],
    })
    write_quarantine(warehouse, domain, "split", quarantined)
    return result

