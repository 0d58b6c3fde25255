"""What the training and evaluation areas read from the data area.

`export_train_jsonl` writes a domain's train rows as `{"messages": [...]}` lines (sorted
by row id, so the same rows always give the same bytes) and returns the file's content
hash: the data version recorded in the adapter manifest.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from qlora.data.formats import split_turns
from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse


def export_train_jsonl(warehouse: Warehouse, domain: str, out_path: str | Path | None = None) -> tuple[Path, str]:
    """Write train rows; with no out_path, to $QLORA_HOME/datasets/<domain>/<data_version>/train.jsonl."""
    rows = warehouse.query(
        "select messages_json from train_eval_split where domain = ? and split = 'train' order by row_id", [domain]
    )
    if rows.empty:
        raise ValueError(f"no train rows for domain {domain!r}: materialise train_eval_split first")
    lines = [json.dumps({"messages": json.loads(m)}, ensure_ascii=False) for m in rows["messages_json"]]
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    version = hashlib.sha256(payload).hexdigest()[:16]
    path = Path(out_path) if out_path else paths().home / "datasets" / domain / version / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path, version


def _eval_dict(messages: list[dict], expected: str, fmt: str, refuse: bool, row_id: str = "") -> dict:
    prompt = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
    return {
        "row_id": row_id,
        "messages": prompt,
        "instruction": split_turns(prompt + [{"role": "assistant", "content": ""}])[0],
        "expected_output": expected,
        "expected_format": fmt,
        "should_refuse": bool(refuse),
    }


def load_eval_rows(source: Warehouse | str | Path, domain: str) -> list[dict]:
    """Eval rows of a domain from the warehouse split, or from an eval JSONL file (or a data dir)."""
    if isinstance(source, Warehouse):
        frame = source.query(
            "select * from train_eval_split where domain = ? and split = 'eval' order by row_id", [domain]
        )
        return [
            _eval_dict(json.loads(r.messages_json), r.expected_output, r.expected_format, r.should_refuse, r.row_id)
            for r in frame.itertuples()
        ]
    from qlora.data.split import eval_set_rows

    path = Path(source)
    if path.is_dir():
        path = path / "eval" / f"{domain}.jsonl" if (path / "eval").is_dir() else path / f"{domain}.jsonl"
    frame = eval_set_rows(path)
    return [
        _eval_dict(json.loads(r.messages_json), r.expected_output, r.expected_format, r.should_refuse, r.row_id)
        for r in frame.itertuples()
    ]
