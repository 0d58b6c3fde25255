"""Train/eval split: the domain's fixed eval set, or a deterministic hash split.

Contamination is judged on the prompt (everything before the answer, PII-masked and
normalised): a train row asking an eval question is removed from train and reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qlora.core.io import read_records
from qlora.data.config import DomainRules
from qlora.data.formats import split_turns
from qlora.data.pii import mask_pii
from qlora.data.textkeys import conversation_id, prompt_id

SPLIT_COLUMNS = [
    "row_id", "prompt_id", "split", "source", "messages_json", "instruction", "expected_output",
    "expected_format", "should_refuse",
]


@dataclass
class SplitResult:
    rows: pd.DataFrame  # SPLIT_COLUMNS
    contaminated: pd.DataFrame  # train rows removed because their prompt is an eval prompt
    method: str


def eval_set_rows(path: Path) -> pd.DataFrame:
    """A fixed eval set (`data/eval/<domain>.jsonl`) as split rows; bad lines fail naming file and line."""
    records = []
    for number, row in read_records(path, "jsonl"):  # a line that is not JSON fails naming file:line
        try:
            prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            expected = row.get("expected_output", "")
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: bad eval row ({type(err).__name__}: {err}); "
                             "need a JSON object with 'instruction' and 'expected_output'") from None
        messages = [{"role": "user", "content": mask_pii(prompt)[0]}, {"role": "assistant", "content": expected}]
        records.append({
            "row_id": conversation_id(messages), "prompt_id": prompt_id(messages), "split": "eval",
            "source": f"{path.name}:{number}", "messages_json": json.dumps(messages, ensure_ascii=False),
            "instruction": messages[0]["content"], "expected_output": expected,
            "expected_format": row.get("expected_format") or "text", "should_refuse": bool(row.get("should_refuse", False)),
        })
    return pd.DataFrame(records, columns=SPLIT_COLUMNS)


def _looks_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except (json.JSONDecodeError, TypeError):
        return False


def _from_cleaned(cleaned: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    outputs = [split_turns(json.loads(m))[1] for m in cleaned["messages_json"]]
    return pd.DataFrame({
        "row_id": cleaned["row_id"].to_numpy(), "prompt_id": cleaned["prompt_id"].to_numpy(),
        "split": split.to_numpy(), "source": (cleaned["source_file"] + ":" + cleaned["line"].astype(str)).to_numpy(),
        "messages_json": cleaned["messages_json"].to_numpy(), "instruction": cleaned["instruction"].to_numpy(),
        "expected_output": outputs, "expected_format": ["json" if _looks_json(o) else "text" for o in outputs],
        "should_refuse": [False] * len(cleaned),
    }, columns=SPLIT_COLUMNS)


def hash_bucket(row_ids: pd.Series) -> pd.Series:
    """A stable number in [0, 1) per row from its content id: the split never reshuffles."""
    return row_ids.str[:8].apply(int, base=16) / 16**8


def split_rows(cleaned: pd.DataFrame, rules: DomainRules, eval_file: Path | None) -> SplitResult:
    method = rules.split.method
    if method == "auto":
        method = "fixed" if eval_file is not None and eval_file.is_file() else "hash"
    if method == "fixed":
        if eval_file is None or not eval_file.is_file():
            raise FileNotFoundError(f"split.method is 'fixed' but the eval set {eval_file} does not exist")
        evals = eval_set_rows(eval_file)
        train = _from_cleaned(cleaned, pd.Series(["train"] * len(cleaned), dtype=object))
    else:
        is_eval = hash_bucket(cleaned["row_id"]) < rules.split.eval_ratio
        both = _from_cleaned(cleaned, is_eval.map({True: "eval", False: "train"}))
        evals, train = both[both["split"] == "eval"], both[both["split"] == "train"]
    leaked = train["prompt_id"].isin(set(evals["prompt_id"]))
    rows = pd.concat([train[~leaked], evals], ignore_index=True)
    return SplitResult(rows=rows, contaminated=train[leaked].reset_index(drop=True), method=method)
