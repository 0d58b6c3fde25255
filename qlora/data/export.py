"""What the training and evaluation areas read from the data area.

`export_split` writes one split of a domain as `{"messages": [...]}` lines, sorted by row id, so
the same rows always give the same bytes; `data_version` is the hash of the train file. Training
(`qlora.training.publish.export_training_data`) exports through these two, so the version in an
adapter's manifest is this hash. `load_eval_rows` gives the evaluation area its eval rows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from qlora.core.io import write_bytes_atomic
from qlora.core.paths import paths
from qlora.core.warehouse import Warehouse
from qlora.data.formats import split_turns


def split_payload(warehouse: Warehouse, domain: str, split: str) -> tuple[bytes, int]:
    """One split of ``train_eval_split`` as JSONL bytes (ordered by row id) and its row count."""
    rows = warehouse.query(
        'select messages_json from "train_eval_split" where domain = ? and split = ? order by row_id', [domain, split]
    )
    lines = [json.dumps({"messages": json.loads(m)}, ensure_ascii=False) for m in rows.get("messages_json", [])]
    return "".join(line + "\n" for line in lines).encode("utf-8"), len(lines)


def data_version(train_payload: bytes) -> str:
    return hashlib.sha256(train_payload).hexdigest()[:16]


def export_split(warehouse: Warehouse, domain: str, split: str, out_dir: Path) -> tuple[Path, int]:
    """Write one split as ``out_dir/<split>.jsonl`` (atomically); returns the path and its row count."""
    payload, count = split_payload(warehouse, domain, split)
    return write_bytes_atomic(Path(out_dir) / f"{split}.jsonl", payload), count


def export_train_jsonl(warehouse: Warehouse, domain: str, out_path: str | Path | None = None) -> tuple[Path, str]:
    """Write train rows; with no out_path, to $QLORA_HOME/datasets/<domain>/<data_version>/train.jsonl."""
    payload, count = split_payload(warehouse, domain, "train")
    if count == 0:
        raise ValueError(f"no train rows for domain {domain!r}: materialise train_eval_split first")
    version = data_version(payload)
    path = Path(out_path) if out_path else paths().datasets / domain / version / "train.jsonl"
    return write_bytes_atomic(path, payload), version


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
    else:
        from qlora.data.split import eval_set_rows

        path = Path(source)
        if path.is_dir():
            path = path / "eval" / f"{domain}.jsonl" if (path / "eval").is_dir() else path / f"{domain}.jsonl"
        frame = eval_set_rows(path)
    return [
        _eval_dict(json.loads(r.messages_json), r.expected_output, r.expected_format, r.should_refuse, r.row_id)
        for r in frame.itertuples()
    ]
