"""The data area's warehouse reads and writes (tables of docs/architecture.md), one domain at a time.

Every write replaces one partition's rows (`replace_partition`), so re-materialising a
domain never touches another. The quarantine holds three stages per domain (raw: unreadable
rows; cleaned: rejected and duplicate rows; split: train rows removed as eval contamination);
its partition column is `stage_domain` so each asset replaces only its own stage.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qlora.data.cleaning import CleanResult, clean_rows
from qlora.data.config import DataConfig
from qlora.data.reader import RAW_COLUMNS, SYMLINK, ReadResult, read_domain
from qlora.data.split import SplitResult, split_rows
from qlora.core.warehouse import Warehouse


_NOT_TEXT = {"line", "pii_spans_masked", "instruction_tokens", "output_tokens", "should_refuse"}


def _with_domain(frame: pd.DataFrame, domain: str, **leading: str) -> pd.DataFrame:
    """``frame`` with `domain` (and any ``leading`` constant columns) in front, text typed as text:
    an empty object column would reach DuckDB typed NULL, and a table first created from an
    empty partition would then refuse every later row."""
    frame = frame.astype({c: "string" for c in frame.columns
                          if c not in _NOT_TEXT and (frame[c].dtype == object or frame.empty)})
    for position, (name, value) in enumerate({"domain": domain, **leading}.items()):
        frame.insert(position, name, pd.Series([value] * len(frame), index=frame.index, dtype="string"))
    return frame


def write_quarantine(warehouse: Warehouse, domain: str, stage: str, frame: pd.DataFrame) -> None:
    frame = _with_domain(frame, domain, stage=stage, stage_domain=f"{stage}:{domain}")
    warehouse.replace_partition("quarantine", "stage_domain", f"{stage}:{domain}", frame)


def _add_pii_spans_column(warehouse: Warehouse) -> None:
    """Warehouses written before raw rows were masked at read lack `pii_spans_masked`: add it."""
    with warehouse.connect() as con:
        if warehouse.table_exists(con, "raw_instructions"):
            con.execute('alter table raw_instructions add column if not exists pii_spans_masked bigint default 0')


def store_raw(warehouse: Warehouse, domain: str, folder: Path) -> ReadResult:
    result = read_domain(folder, domain)
    _add_pii_spans_column(warehouse)
    warehouse.replace_partition("raw_instructions", "domain", domain, _with_domain(result.rows_frame(), domain))
    write_quarantine(warehouse, domain, "raw", result.quarantine_frame())
    return result


def stored_raw_per_file(warehouse: Warehouse, domain: str) -> pd.Series:
    """Records stored per source file (raw rows + raw quarantine entries), read back for the
    'rows in = rows read' check; links not followed are files, not records, and are left out."""
    stored = warehouse.query(
        "select source_file, count(*) as n from raw_instructions where domain = ? group by 1 union all "
        "select source_file, count(*) from quarantine where stage_domain = ? and reason <> ? group by 1",
        [domain, f"raw:{domain}", SYMLINK],
    )
    return stored.groupby("source_file")["n"].sum() if not stored.empty else pd.Series(dtype="int64")


def store_cleaned(warehouse: Warehouse, domain: str, config: DataConfig, tokenizer=None) -> CleanResult:
    raw = warehouse.query(
        "select * from raw_instructions where domain = ? order by source_file, line", [domain]
    )
    if raw.empty:  # none read (or raw_instructions not materialised): an empty dataset, and has_rows fails
        raw = pd.DataFrame({c: pd.Series(dtype="int64" if c in ("line", "pii_spans_masked") else object)
                            for c in RAW_COLUMNS})
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

