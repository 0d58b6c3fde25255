"""Clean one domain's raw rows: validate -> licence -> mask PII -> dedup -> language -> token bounds.

Each rejected row gets one reason (the first rule it breaks, in that order) and goes to
the quarantine; duplicates are counted apart. So, always:
    rows read = kept + quarantined (by reason) + removed as duplicates.
Dedup runs on the masked, normalised text, so rows that differ only in PII collapse
(the seed hashed before masking and kept them). Rows from the raw reader arrive masked already
(the warehouse never holds raw PII) with their `pii_spans_masked`; masking here again is a no-op
for them and still catches rows handed in unmasked (a frame built elsewhere).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from qlora.data.config import DomainRules
from qlora.data.formats import split_turns
from qlora.data.measure import count_tokens, detect_languages, render, tokenizer_name
from qlora.data.prepare import EMPTY_TURN, STATUS_REASONS, TOO_SHORT, duplicate_of, prepare_rows, prompt_ids

KEPT_COLUMNS = [
    "row_id", "prompt_id", "source_file", "line", "format", "licence", "language", "pii_spans_masked",
    "instruction_tokens", "output_tokens", "messages_json", "instruction", "output", "text",
]
QUARANTINE_COLUMNS = ["source_file", "line", "reason", "detail", "excerpt"]
DUPLICATE = "duplicate"


@dataclass
class CleanResult:
    kept: pd.DataFrame
    quarantine: pd.DataFrame  # includes the duplicates (reason 'duplicate')
    stats: dict = field(default_factory=dict)

    def accounting(self) -> dict:
        by_reason = Counter(self.quarantine["reason"])
        duplicates = by_reason.pop(DUPLICATE, 0)
        return {
            "rows_read": self.stats["rows_read"],
            "kept": len(self.kept),
            "quarantined": dict(sorted(by_reason.items())),
            "duplicates_removed": duplicates,
            "balanced": self.stats["rows_read"] == len(self.kept) + sum(by_reason.values()) + duplicates,
        }


def clean_rows(raw: pd.DataFrame, rules: DomainRules, detector_languages: list[str], tokenizer=None) -> CleanResult:
    n = len(raw)
    prepared = prepare_rows([json.loads(m) for m in raw["messages_json"]], rules.min_chars)
    masked_messages = prepared.turns.messages()
    pii_spans = prepared.pii_spans + (raw["pii_spans_masked"].to_numpy(dtype=np.int64)
                                      if "pii_spans_masked" in raw else np.zeros(n, dtype=np.int64))
    all_prompt_ids = prompt_ids(prepared)
    reason = np.array([STATUS_REASONS.get(int(s), "") for s in prepared.status], dtype=object)
    detail = np.array([""] * n, dtype=object)
    detail[prepared.status == TOO_SHORT] = "instruction < {instruction} or output < {output} characters".format(**rules.min_chars)
    detail[prepared.status == EMPTY_TURN] = "a turn is empty or whitespace only"

    allowed = raw["licence"].str.lower().isin(rules.licences_allowed).to_numpy()
    bad_licence = (reason == "") & ~allowed
    reason[bad_licence] = "licence_not_allowed"
    detail[bad_licence] = [f"licence {x!r} not in {rules.licences_allowed}" for x in raw["licence"][bad_licence]]

    eligible = reason == ""
    first = duplicate_of(prepared.digests, eligible)
    entering_dedup = int(eligible.sum())
    is_dup = first >= 0
    reason[is_dup] = DUPLICATE
    detail[is_dup] = [f"same masked text as {raw['source_file'].iat[j]}:{raw['line'].iat[j]}" for j in first[is_dup]]

    survivors = np.flatnonzero(reason == "")
    messages = [masked_messages[i] for i in survivors]
    pairs = [split_turns(m) for m in messages]
    instructions, outputs = [p[0] for p in pairs], [p[1] for p in pairs]
    languages = detect_languages([a + "\n" + b for a, b in pairs], tuple(detector_languages))
    targets = set(rules.target_languages)
    on_target = sum(lang in targets for lang in languages)
    for pos, lang in zip(survivors, languages):
        if lang not in targets and lang != "unknown":
            reason[pos], detail[pos] = "wrong_language", f"detected {lang}, want {sorted(targets)}"

    ins_tokens = np.array(count_tokens(instructions, tokenizer), dtype=np.int64)
    out_tokens = np.array(count_tokens(outputs, tokenizer), dtype=np.int64)
    (ins_lo, ins_hi), (out_lo, out_hi) = rules.token_bounds["instruction"], rules.token_bounds["output"]
    for i, pos in enumerate(survivors):
        if reason[pos]:
            continue
        if not ins_lo <= ins_tokens[i] <= ins_hi:
            reason[pos], detail[pos] = "instruction_tokens_out_of_bounds", f"{ins_tokens[i]} tokens, bounds [{ins_lo}, {ins_hi}]"
        elif not out_lo <= out_tokens[i] <= out_hi:
            reason[pos], detail[pos] = "output_tokens_out_of_bounds", f"{out_tokens[i]} tokens, bounds [{out_lo}, {out_hi}]"

    keep = [(i, lang) for i, lang in enumerate(languages) if reason[survivors[i]] == ""]
    kept = pd.DataFrame(
        {
            "row_id": [prepared.digests_hex(survivors[i]) for i, _ in keep],
            "prompt_id": [all_prompt_ids[survivors[i]] for i, _ in keep],
            "source_file": raw["source_file"].to_numpy()[[survivors[i] for i, _ in keep]],
            "line": raw["line"].to_numpy()[[survivors[i] for i, _ in keep]],
            "format": raw["format"].to_numpy()[[survivors[i] for i, _ in keep]],
            "licence": raw["licence"].str.lower().to_numpy()[[survivors[i] for i, _ in keep]],
            "language": [lang for _, lang in keep],
            "pii_spans_masked": pii_spans[[survivors[i] for i, _ in keep]],
            "instruction_tokens": ins_tokens[[i for i, _ in keep]],
            "output_tokens": out_tokens[[i for i, _ in keep]],
            "messages_json": [json.dumps(messages[i], ensure_ascii=False) for i, _ in keep],
            "instruction": [instructions[i] for i, _ in keep],
            "output": [outputs[i] for i, _ in keep],
            "text": [render(messages[i], tokenizer) for i, _ in keep],
        },
        columns=KEPT_COLUMNS,
    ).astype({"line": "int64", "pii_spans_masked": "int64", "instruction_tokens": "int64", "output_tokens": "int64"})

    rejected = np.flatnonzero(reason != "")
    quarantine = pd.DataFrame(
        {
            "source_file": raw["source_file"].to_numpy()[rejected],
            "line": raw["line"].to_numpy()[rejected],
            "reason": reason[rejected],
            "detail": detail[rejected],
            # The excerpt is the masked text: quarantine must not become a PII store.
            "excerpt": [json.dumps(masked_messages[i], ensure_ascii=False)[:200] for i in rejected],
        },
        columns=QUARANTINE_COLUMNS,
    ).astype({"line": "int64"})
    stats = {
        "rows_read": n,
        "rows_entering_dedup": entering_dedup,
        "duplicate_rate_before_dedup": float(is_dup.sum() / entering_dedup) if entering_dedup else 0.0,
        "rows_language_checked": len(languages),
        "target_language_share": float(on_target / len(languages)) if languages else 1.0,
        "pii_spans_masked": int(pii_spans.sum()),
        "rows_with_pii_masked": int((pii_spans > 0).sum()),
        "tokenizer": tokenizer_name(tokenizer),
    }
    return CleanResult(kept=kept, quarantine=quarantine, stats=stats)
