"""The response journal: durable across reopening, named by an id, and ingested without loss or doubles."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from qlora.ab.journal import FeedbackRecord, Journal, ResponseRecord
from qlora.ab.records import held_seq, ingest_journal
from qlora.core.warehouse import Warehouse


def response(i: int) -> ResponseRecord:
    return ResponseRecord(f"chatcmpl-{i}", "legal-ko", "legal-ko@v1", "control", "e1", "u", 12.0, 200, 3, "[]", "a")


def tagged(journal: Journal, rows: list[dict]) -> list[dict]:
    return [{**row, "journal_id": journal.journal_id} for row in rows]


def test_rows_survive_reopening_and_the_id_names_the_file(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    for i in range(3):
        journal.record_response(response(i))
    journal.record_feedback(FeedbackRecord("chatcmpl-1", "rating", rating="up"))
    journal.record_response(response(1))  # a replayed id is ignored, never a second row
    first_id = journal.journal_id
    journal.close()
    reopened = Journal(tmp_path / "journal.sqlite")
    assert reopened.journal_id == first_id and len(reopened.responses_after(0)) == 3
    assert reopened.feedback_after(0)[0]["rating"] == "up" and reopened.response("chatcmpl-2")["arm"] == "control"
    assert (tmp_path / "journal.sqlite").stat().st_mode & 0o077 == 0  # prompts and answers: owner only
    assert Journal(tmp_path / "other.sqlite").journal_id != first_id


def test_a_recreated_journal_is_ingested_from_its_own_start(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    old = Journal(tmp_path / "old.sqlite")
    for i in range(5):
        old.record_response(response(i))
    ingest_journal(warehouse, tagged(old, old.responses_after(0)), [])
    new = Journal(tmp_path / "new.sqlite")  # the state dir was wiped: seq starts at 1 again
    new.record_response(response(100))
    assert held_seq(warehouse, old.journal_id) == (5, 0) and held_seq(warehouse, new.journal_id) == (0, 0)
    added, _ = ingest_journal(warehouse, tagged(new, new.responses_after(held_seq(warehouse, new.journal_id)[0])), [])
    assert added == 1 and len(warehouse.query("select * from ab_responses")) == 6


def test_concurrent_ingests_never_store_a_row_twice(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    journal = Journal(tmp_path / "j.sqlite")
    for i in range(50):
        journal.record_response(response(i))
        journal.record_feedback(FeedbackRecord(f"chatcmpl-{i}", "score", score=1 + i % 5, created_at=float(i)))
    rows, fb = tagged(journal, journal.responses_after(0)), tagged(journal, journal.feedback_after(0))
    with ThreadPoolExecutor(4) as pool:
        added = list(pool.map(lambda _: ingest_journal(warehouse, rows, fb), range(4)))
    assert sum(a for a, _ in added) == 50 and sum(b for _, b in added) == 50
    assert len(warehouse.query("select * from ab_feedback")) == 50
