"""The data assets: raw_instructions -> cleaned_dataset -> train_eval_split, one partition per domain.

Thin: each reads its input from the warehouse, calls the library (`store.py`), and returns
metadata plus the blocking checks (`schemas.py` verdicts) on what it just wrote.
"""
import hashlib

import dagster as dg
import pandas as pd

from qlora.data import schemas
from qlora_assets.data.checks import (
    CLEANED_CHECKS, RAW_CHECKS, SPLIT_CHECKS, check_result, gate_coverage_result, specs,
)
from qlora.data.config import load_data_config
from qlora.data.measure import load_base_tokenizer
from qlora.data.reader import count_domain, data_files
from qlora.data.store import store_cleaned, store_raw, store_split, stored_raw_per_file
from qlora_assets.modeling.lineage import materialized_base
from qlora_assets.partitions import domain_partitions
from qlora.core.paths import paths
from resources.warehouse import WarehouseResource


def _table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if not frame.empty else "(none)")


def _content_hash(folder) -> str:
    digest = hashlib.sha256()
    for path in data_files(folder):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        except OSError as err:  # the reader quarantines it as `unreadable`; the version still changes
            digest.update(path.name.encode() + b"\0" + str(err.errno).encode())
    return digest.hexdigest()[:16]


@dg.asset(
    partitions_def=domain_partitions, group_name="data", kinds={"python", "duckdb"},
    description="Every row of data/training/<domain>/ as read (PII masked), with source file, line and licence.",
    check_specs=specs("raw_instructions", RAW_CHECKS),
)
def raw_instructions(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain = context.partition_key
    folder = paths().training_dir / domain
    if not folder.is_dir():
        raise dg.Failure(f"no data folder for domain {domain!r}: expected {folder}")
    wh = warehouse.get()
    read = store_raw(wh, domain, folder)
    read_per_file = stored_raw_per_file(wh, domain)
    counted = count_domain(folder)
    per_file = pd.DataFrame({
        "source_file": list(counted),
        # A file that does not parse whole cannot be counted apart: fall back to the reader's count.
        "rows_in": [int(c if c is not None else read.rows_in.get(f, 0)) for f, c in counted.items()],
        "rows_read": [int(read_per_file.get(f, 0)) for f in counted],
    })
    verdict = schemas.rows_accounted(per_file)
    reasons = read.quarantine_frame().groupby("reason").size().rename("rows").reset_index()
    content_hash = _content_hash(folder)  # the data version: changes only when file contents do
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(read.rows), "rows_in": verdict.numbers["rows_in"],
            "quarantined": len(read.quarantine), "files": _table(per_file), "quarantine_by_reason": _table(reasons),
            "quarantine_sample": _table(read.quarantine_frame().head(10)), "content_hash": content_hash,
        },
        check_results=[check_result(verdict)],
        data_version=dg.DataVersion(content_hash),
    )


@dg.asset(
    partitions_def=domain_partitions, group_name="data", kinds={"python", "duckdb", "pandera"},
    deps=["raw_instructions", dg.AssetKey("base_model")],
    description="Valid, PII-masked, deduplicated rows rendered with the base chat template; rejects quarantined.",
    check_specs=specs("cleaned_dataset", CLEANED_CHECKS),
)
def cleaned_dataset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain = context.partition_key
    config = load_data_config()
    rules = config.rules(domain)
    base = materialized_base(context)  # token counts with the tokenizer of the base the adapter trains on
    tokenizer = load_base_tokenizer(base["model_path"]) if base else None
    result = store_cleaned(warehouse.get(), domain, config, tokenizer=tokenizer)
    kept, stats = result.kept, result.stats
    verdicts = [
        schemas.duplicates(kept, stats, rules), schemas.token_lengths(kept, rules, stats["tokenizer"]),
        schemas.pii_residual(kept), schemas.licences(kept, rules), schemas.target_language(kept, stats, rules),
        schemas.has_rows(kept, stats["rows_read"]),
    ]
    acc = result.accounting()
    accounting = pd.DataFrame(
        [("rows read", acc["rows_read"]), ("kept", acc["kept"]), ("removed as duplicates", acc["duplicates_removed"])]
        + [(f"quarantined: {r}", n) for r, n in acc["quarantined"].items()],
        columns=["bucket", "rows"],
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(kept), "accounting": _table(accounting), "accounting_balanced": acc["balanced"],
            "duplicate_rate_before_dedup": stats["duplicate_rate_before_dedup"],
            "target_language_share": stats["target_language_share"], "pii_spans_masked": stats["pii_spans_masked"],
            "tokenizer": stats["tokenizer"], "base_fingerprint": base["fingerprint"] if base else "none (approximate counts)",
            "quarantine_sample": _table(result.quarantine[["source_file", "line", "reason", "detail"]].head(15)),
            "kept_sample": _table(kept[["source_file", "line", "language", "instruction", "output"]].head(5)),
        },
        check_results=[check_result(v) for v in verdicts],
    )


@dg.asset(
    partitions_def=domain_partitions, group_name="data", kinds={"python", "duckdb"}, deps=["cleaned_dataset"],
    description="Deterministic train/eval split (or the domain's fixed eval set), contamination removed from train.",
    check_specs=specs("train_eval_split", SPLIT_CHECKS),
)
def train_eval_split(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    domain = context.partition_key
    wh = warehouse.get()
    result = store_split(wh, domain, load_data_config(), paths().eval_dir)
    stored = wh.query("select * from train_eval_split where domain = ?", [domain])
    verdict = schemas.no_contamination(stored, removed=len(result.contaminated))
    counts = stored.groupby("split").size()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(stored), "method": result.method, "train_rows": int(counts.get("train", 0)),
            "eval_rows": int(counts.get("eval", 0)), "contaminated_removed_from_train": len(result.contaminated),
            "removed_sample": _table(result.contaminated[["source", "instruction"]].head(10)),
        },
        check_results=[check_result(verdict), gate_coverage_result(domain, stored)],
    )
