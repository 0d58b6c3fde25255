"""Feedback export: chosen/rejected pairs and thumbs-up answers become training rows the raw reader
reads and the cleaning accepts; thumbs-down answers go to review; no raw PII is written."""
from __future__ import annotations

import json
from datetime import datetime

from qlora.ab.export import export_candidates
from qlora.ab.records import ExperimentRecord, ingest_journal
from qlora.core.warehouse import Warehouse
from qlora.data.cleaning import clean_rows
from qlora.data.config import load_data_config
from qlora.data.reader import read_domain

EXP = "legal-ko-v2-abc"
PROMPT = "안녕하세요. 계약서를 읽다가 '증여' 라는 말이 나왔습니다. 제 메일은 kim@example.com 입니다. 그 뜻을 짧게 설명해 주세요."


def response(rid: str, arm: str, answer: str) -> dict:
    return {"seq": 0, "response_id": rid, "alias": "legal-ko", "served": f"legal-ko@{'v2' if arm == 'candidate' else 'v1'}",
            "arm": arm, "experiment_id": EXP, "user_hash": "u", "created_at": 1.0, "latency_ms": 10.0, "status": 200,
            "completion_tokens": 5, "prompt_json": json.dumps([{"role": "user", "content": PROMPT}], ensure_ascii=False),
            "answer": answer}


def fb(rid: str, kind: str, **kw) -> dict:
    row = {"seq": 0, "response_id": rid, "other_response_id": "", "kind": kind, "rating": "", "score": None,
           "preferred_response_id": "", "created_at": float(len(rid))}
    row.update(kw)
    return row


def test_export_goes_through_the_same_cleaning(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    good = "증여는 자기 재산을 대가 없이 상대방에게 주기로 하는 계약입니다. 문의는 010-1234-5678 로 하세요."
    bad = "잘 모르겠습니다만 아마 선물 같은 것입니다."
    responses = [response("a1", "candidate", good), response("b1", "control", bad),
                 response("a2", "candidate", good + " 추가 설명입니다."), response("b2", "control", bad + " 다시."),
                 response("c1", "control", "증여란 무상으로 재산을 주는 계약을 말합니다."), response("d1", "candidate", bad)]
    feedback = [fb("b1", "pair", other_response_id="a1", preferred_response_id="a1"),
                fb("a2", "pair", other_response_id="b2", preferred_response_id=""),  # a tie: not exported
                fb("c1", "score", score=5), fb("d1", "rating", rating="down")]
    assert ingest_journal(warehouse, responses, feedback) == (6, 4)
    assert ingest_journal(warehouse, responses, feedback) == (0, 0)  # re-ingesting adds nothing
    experiment = ExperimentRecord(EXP, "legal-ko", "legal-ko@v1", "legal-ko@v2", "/x", 20, "{}", datetime(2026, 1, 1))
    result = export_candidates(warehouse, experiment, tmp_path / "data")
    assert (result.pairs, result.thumbs_up, result.thumbs_down) == (1, 1, 1) and result.pii_spans_masked >= 2
    written = result.training_file.read_text(encoding="utf-8") + result.review_file.read_text(encoding="utf-8")
    assert "kim@example.com" not in written and "010-1234-5678" not in written
    rows = [json.loads(line) for line in result.training_file.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["messages"][-1]["content"].startswith("증여는") and rows[0]["rejected"] == bad
    assert not (tmp_path / "data" / "training" / "legal-ko" / "feedback").joinpath("x").exists()
    # The raw reader finds the file under the domain folder; the cleaning keeps both rows.
    read = read_domain(tmp_path / "data" / "training" / "legal-ko")
    config = load_data_config()
    cleaned = clean_rows(read.rows_frame(), config.rules("legal-ko"), config.detector_languages())
    assert len(read.rows_frame()) == 2 and not read.quarantine
    assert len(cleaned.kept) == 2, cleaned.quarantine.to_dict("records")
    review = json.loads(result.review_file.read_text(encoding="utf-8"))
    assert review["answer"] == bad and review["messages"][-1]["role"] == "user"
