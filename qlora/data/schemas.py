"""Pandera schemas for the seed's data-quality checklist, one per line, plus the raw and split checks.

Each `Verdict` carries the failure count and a sample of failing rows, for the asset
check's metadata and the CLI. Schemas are built per domain because bounds, licences
and languages come from `configs/domains.yaml`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pandera.pandas as pa

from qlora.data.config import DomainRules
from qlora.data.pii_scan import pii_findings


@dataclass
class Verdict:
    name: str
    passed: bool
    failures: int
    description: str
    failure_cases: pd.DataFrame = field(default_factory=pd.DataFrame)
    sample_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    numbers: dict = field(default_factory=dict)


def verdict(name: str, description: str, checks: list[tuple[pa.DataFrameSchema, pd.DataFrame]],
            numbers: dict | None = None, sample_columns: list[str] | None = None) -> Verdict:
    """Validate every (schema, frame) lazily; pass only if all pass."""
    cases, samples = [], []
    for schema, frame in checks:
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as err:
            fc = err.failure_cases
            cases.append(fc)
            index = [i for i in fc["index"].dropna().unique() if i in frame.index][:5]
            cols = [c for c in (sample_columns or list(frame.columns)) if c in frame.columns]
            samples.append(frame.loc[index, cols])
    failures = int(sum(len(c) for c in cases))
    return Verdict(
        name=name, passed=failures == 0, failures=failures, description=description,
        failure_cases=pd.concat(cases, ignore_index=True) if cases else pd.DataFrame(),
        sample_rows=pd.concat(samples) if samples else pd.DataFrame(), numbers=numbers or {},
    )


def rows_accounted(per_file: pd.DataFrame) -> Verdict:
    """per_file: source_file, rows_in (counted independently), rows_read (raw + quarantined)."""
    schema = pa.DataFrameSchema(
        {"rows_in": pa.Column(int), "rows_read": pa.Column(int)},
        checks=pa.Check(lambda df: df["rows_in"] == df["rows_read"], error="rows in != rows read"),
    )
    numbers = {"rows_in": int(per_file["rows_in"].sum()), "rows_read": int(per_file["rows_read"].sum())}
    return verdict("rows_accounted", "nothing dropped: rows in = rows read (per file)", [(schema, per_file)], numbers)


def duplicates(kept: pd.DataFrame, stats: dict, rules: DomainRules) -> Verdict:
    rate = pa.DataFrameSchema({"duplicate_rate_before_dedup": pa.Column(float, pa.Check.lt(rules.max_duplicate_rate))})
    unique = pa.DataFrameSchema({"row_id": pa.Column(str, unique=True)})
    numbers = {"duplicate_rate_before_dedup": stats["duplicate_rate_before_dedup"],
               "duplicates_after_dedup": int(kept["row_id"].duplicated().sum())}
    return verdict("duplicates", f"duplicate rate < {rules.max_duplicate_rate:.0%} before dedup, 0 after",
                   [(rate, pd.DataFrame([{"duplicate_rate_before_dedup": float(stats["duplicate_rate_before_dedup"])}])),
                    (unique, kept)], numbers, ["row_id", "source_file", "line", "instruction"])


def token_lengths(kept: pd.DataFrame, rules: DomainRules, tokenizer: str) -> Verdict:
    (ilo, ihi), (olo, ohi) = rules.token_bounds["instruction"], rules.token_bounds["output"]
    schema = pa.DataFrameSchema({
        "instruction_tokens": pa.Column(int, pa.Check.in_range(ilo, ihi)),
        "output_tokens": pa.Column(int, pa.Check.in_range(olo, ohi)),
    })
    numbers = {"instruction_tokens_min": int(kept["instruction_tokens"].min()) if len(kept) else 0,
               "instruction_tokens_max": int(kept["instruction_tokens"].max()) if len(kept) else 0,
               "output_tokens_min": int(kept["output_tokens"].min()) if len(kept) else 0,
               "output_tokens_max": int(kept["output_tokens"].max()) if len(kept) else 0, "tokenizer": tokenizer}
    return verdict("token_lengths", f"instruction {ilo}-{ihi} tokens, output {olo}-{ohi} tokens",
                   [(schema, kept)], numbers, ["source_file", "line", "instruction_tokens", "output_tokens"])


def pii_residual(kept: pd.DataFrame) -> Verdict:
    """0 rows scanned is a pass (an empty set has no residual PII); `has_rows` is what fails then."""
    found = [pii_findings(m + "\n" + t) for m, t in zip(kept["messages_json"], kept["text"])]
    frame = kept[["source_file", "line", "messages_json"]].assign(
        pii_residual=pd.Series([len(f) for f in found], index=kept.index, dtype="int64"),
        kinds=pd.Series([",".join(f) for f in found], index=kept.index, dtype=object))
    schema = pa.DataFrameSchema({"pii_residual": pa.Column(int, pa.Check.eq(0))})
    numbers = {"rows_scanned": len(frame), "rows_with_residual": int((frame["pii_residual"] > 0).sum()),
               "pii_spans_masked": int(kept["pii_spans_masked"].sum())}
    return verdict("pii_residual", "0 PII left by an independent re-scan", [(schema, frame)], numbers,
                   ["source_file", "line", "kinds", "messages_json"])


def has_rows(kept: pd.DataFrame, rows_read: int) -> Verdict:
    """The dataset is not empty: with 0 rows every other check passes vacuously, and training has nothing."""
    numbers = {"rows_kept": len(kept), "rows_read": rows_read}
    if len(kept):
        return Verdict("has_rows", True, 0, "at least one row kept", numbers=numbers)
    why = "every row was rejected" if rows_read else "no rows were read (all quarantined at read, or no data files)"
    return Verdict("has_rows", False, 1, f"at least one row kept: 0 kept, {why}", numbers=numbers)


def licences(kept: pd.DataFrame, rules: DomainRules) -> Verdict:
    schema = pa.DataFrameSchema({"licence": pa.Column(str, pa.Check.isin(rules.licences_allowed))})
    numbers = {"licences": ", ".join(sorted(kept["licence"].unique()))}
    return verdict("licences_allowed", f"100% of rows under an allowed licence {rules.licences_allowed}",
                   [(schema, kept)], numbers, ["source_file", "line", "licence"])


def target_language(kept: pd.DataFrame, stats: dict, rules: DomainRules) -> Verdict:
    share = pa.DataFrameSchema({"target_language_share": pa.Column(float, pa.Check.ge(rules.min_target_language_share))})
    kept_ok = pa.DataFrameSchema({"language": pa.Column(str, pa.Check.isin(rules.target_languages + ["unknown"]))})
    numbers = {"target_language_share": stats["target_language_share"], "rows_checked": stats["rows_language_checked"],
               "languages_kept": ", ".join(sorted(kept["language"].unique()))}
    return verdict("target_language", f"target language {rules.target_languages} >= {rules.min_target_language_share:.0%}",
                   [(share, pd.DataFrame([{"target_language_share": float(stats["target_language_share"])}])),
                    (kept_ok, kept)], numbers, ["source_file", "line", "language", "instruction"])


def no_contamination(split_rows: pd.DataFrame, removed: int) -> Verdict:
    eval_prompts = set(split_rows.loc[split_rows["split"] == "eval", "prompt_id"])
    train = split_rows[split_rows["split"] == "train"]
    schema = pa.DataFrameSchema({"prompt_id": pa.Column(str, pa.Check(lambda s: ~s.isin(eval_prompts)))})
    numbers = {"train_rows": len(train), "eval_rows": len(split_rows) - len(train), "removed_from_train": removed}
    return verdict("no_contamination", "no eval prompt's normalised hash in train", [(schema, train)], numbers,
                   ["row_id", "source", "instruction"])
