"""Adjust and repeat: an ended experiment's feedback becomes next cycle's data candidates.

Training candidates (``data/training/<domain>/feedback/<experiment>.jsonl``, chat rows the raw
reader picks up, so the whole cleaning applies: validation, licence, PII masking, dedup,
language, token bounds, quarantine with reasons):
  - the preferred answer of every decisive pair, with the losing answer kept as ``rejected``
    (a chosen/rejected pair for preference tuning; SFT reads the chosen turn);
  - answers rated up (or scored >= thumbs_up_min_score).
Review candidates (``data/feedback/<domain>/<experiment>.thumbs_down.jsonl``, not read by
training): thumbs-down answers with their prompts, for a person to write the right answer;
a bad answer must never become a training target.
PII is masked here already (qlora.data.pii, the cleaning's own masker), so no raw e-mail or
phone number from live traffic is written to either folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qlora.ab.records import ExperimentRecord, journal_frames
from qlora.core.warehouse import Warehouse
from qlora.data.pii import mask_pii

LICENCE = "internal"  # feedback on our own service's answers


@dataclass
class ExportResult:
    training_file: Path
    review_file: Path
    pairs: int
    thumbs_up: int
    thumbs_down: int
    pii_spans_masked: int


def _messages(prompt_json: str) -> list[dict]:
    try:
        prompt = json.loads(prompt_json)
    except (TypeError, json.JSONDecodeError):
        prompt = prompt_json
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m.get("role", "user"), "content": str(m.get("content", ""))}
            for m in prompt if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")]


class _Masker:
    def __init__(self):
        self.spans = 0

    def __call__(self, text: str) -> str:
        masked, n = mask_pii(text)
        self.spans += n
        return masked

    def turns(self, messages: list[dict]) -> list[dict]:
        return [{"role": m["role"], "content": self(m["content"])} for m in messages]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)  # a half-written file never reaches the reader


def export_candidates(warehouse: Warehouse, experiment: ExperimentRecord, data_dir: Path,
                      thumbs_up_min_score: int = 4) -> ExportResult:
    responses, feedback = journal_frames(warehouse, experiment.experiment_id)
    by_id = {row["response_id"]: row for _, row in responses.iterrows()} if not responses.empty else {}
    mask, source = _Masker(), f"ab:{experiment.experiment_id}"
    training, review = [], []
    counts = {"pairs": 0, "up": 0, "down": 0}
    for _, fb in (feedback.iterrows() if not feedback.empty else iter(())):
        if fb["kind"] == "pair":
            if not fb["preferred_response_id"]:
                continue  # a tie says nothing about which answer to learn
            loser_id = fb["other_response_id"] if fb["preferred_response_id"] == fb["response_id"] else fb["response_id"]
            chosen, rejected = by_id.get(fb["preferred_response_id"]), by_id.get(loser_id)
            if chosen is None or rejected is None:
                continue
            training.append({"messages": mask.turns(_messages(chosen["prompt_json"]))
                             + [{"role": "assistant", "content": mask(chosen["answer"])}],
                             "rejected": mask(rejected["answer"]), "license": LICENCE, "source": f"{source}:pair"})
            counts["pairs"] += 1
            continue
        answered = by_id.get(fb["response_id"])
        if answered is None:
            continue
        score = None if pd.isna(fb["score"]) else int(fb["score"])
        up = fb["rating"] == "up" or (score is not None and score >= thumbs_up_min_score)
        prompt = mask.turns(_messages(answered["prompt_json"]))
        if up:
            training.append({"messages": prompt + [{"role": "assistant", "content": mask(answered["answer"])}],
                             "license": LICENCE, "source": f"{source}:up"})
            counts["up"] += 1
        else:
            review.append({"messages": prompt, "answer": mask(answered["answer"]), "score": score,
                           "served": answered["served"], "source": f"{source}:down"})
            counts["down"] += 1
    training_file = data_dir / "training" / experiment.domain / "feedback" / f"{experiment.experiment_id}.jsonl"
    review_file = data_dir / "feedback" / experiment.domain / f"{experiment.experiment_id}.thumbs_down.jsonl"
    if training:
        _write_jsonl(training_file, training)
    if review:
        _write_jsonl(review_file, review)
    return ExportResult(training_file, review_file, counts["pairs"], counts["up"], counts["down"], mask.spans)
