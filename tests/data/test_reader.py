"""The raw reader: symlinks never followed, PII masked in every row and excerpt, empty sets handled."""
import json

import pandas as pd
import pytest

from qlora.core.paths import DomainNameError
from qlora.core.warehouse import Warehouse
from qlora.data import schemas
from qlora.data.config import load_data_config
from qlora.data.reader import SYMLINK, count_domain, read_domain
from qlora.data.store import store_cleaned, store_raw

PII = ("kim.minsu@example.co.kr", "900101-1234567", "010-2345-6789")
ROW = {"instruction": "임대차 계약의 해지 절차를 자세하게 알려 주세요.", "output": "상대방에게 서면으로 해지 의사를 통지하면 됩니다.", "license": "internal"}


def write_jsonl(path, rows: list) -> None:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n")


def test_symlinked_files_and_folders_are_quarantined_unread(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = json.dumps({"instruction": "SECRET-OUTSIDE-ROW " * 3, "output": "leaked"})
    write_jsonl(outside / "secret.jsonl", [secret])
    domain = tmp_path / "training" / "legal-ko"
    domain.mkdir(parents=True)
    write_jsonl(domain / "rows.jsonl", [ROW])
    (domain / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (domain / "linked-folder").symlink_to(outside, target_is_directory=True)
    result = read_domain(domain, "legal-ko")
    assert [r["source_file"] for r in result.rows] == ["rows.jsonl"]
    assert sorted((q["source_file"], q["line"], q["reason"]) for q in result.quarantine) == [
        ("link.jsonl", 0, SYMLINK), ("linked-folder", 0, SYMLINK)]
    everything = json.dumps([result.rows, result.quarantine, result.rows_in], ensure_ascii=False)
    assert "SECRET-OUTSIDE-ROW" not in everything and "leaked" not in everything
    assert list(count_domain(domain)) == ["rows.jsonl"]  # the independent count skips links too


def test_raw_rows_and_every_quarantine_excerpt_are_pii_masked(tmp_path):
    email, rrn, phone = PII
    pii_text = f"메일 {email}, 주민번호 {rrn}, 전화 {phone} 입니다. 계약 해지 절차를 알려 주세요."
    rows = [
        {**ROW, "instruction": pii_text},
        f'{{"instruction": "{pii_text}", "output": ',  # malformed JSON
        {"instruction": pii_text, "output": 42},  # wrong type
        {"conversations": [{"from": email, "value": "x"}, {"from": "gpt", "value": "y"}]},  # PII in a detail
        {**ROW, "license": email},
    ]
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    with path.open("ab") as f:
        f.write(f'{{"instruction": "{pii_text}", "x": "'.encode("utf-8") + b'\xff"}\n')  # not UTF-8
    result = read_domain(tmp_path)
    stored = json.dumps([result.rows, result.quarantine], ensure_ascii=False)
    for value in PII:
        assert value not in stored
    assert "[EMAIL]" in result.rows[0]["messages_json"] and result.rows[0]["pii_spans_masked"] == 3
    assert {q["reason"] for q in result.quarantine} == {"malformed_json", "wrong_type", "bad_encoding"}
    assert all("[EMAIL]" in q["excerpt"] or "[EMAIL]" in q["detail"] for q in result.quarantine[:3])


def test_cleaning_counts_the_spans_masked_at_read(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{**ROW, "instruction": f"{PII[0]} 으로 계약 해지 절차를 자세하게 알려 주세요."}])
    from qlora.data.cleaning import clean_rows

    config = load_data_config()
    result = clean_rows(read_domain(tmp_path).rows_frame(), config.rules("legal-ko"), config.detector_languages())
    assert result.stats["pii_spans_masked"] == 1 and list(result.kept["pii_spans_masked"]) == [1]


def test_an_invalid_domain_name_is_refused_by_the_reader(tmp_path):
    with pytest.raises(DomainNameError, match="'Legal_KO'"):
        read_domain(tmp_path, "Legal_KO")


def test_a_domain_whose_rows_all_fail_at_read_gives_an_empty_dataset_that_fails_has_rows_only(tmp_path):
    folder = tmp_path / "broken-ko"
    folder.mkdir()
    write_jsonl(folder / "rows.jsonl", ["{not json", "[" * 5000 + "]" * 5000])
    warehouse = Warehouse(tmp_path / "w.duckdb")
    raw = store_raw(warehouse, "broken-ko", folder)
    assert raw.rows == [] and {q["reason"] for q in raw.quarantine} == {"malformed_json", "too_deep"}
    cleaned = store_cleaned(warehouse, "broken-ko", load_data_config())
    assert cleaned.kept.empty and cleaned.accounting()["balanced"]
    residual, has_rows = schemas.pii_residual(cleaned.kept), schemas.has_rows(cleaned.kept, 0)
    assert residual.passed and residual.numbers["rows_scanned"] == 0
    assert not has_rows.passed and "no rows were read" in has_rows.description


def test_an_old_warehouse_without_the_pii_spans_column_is_migrated(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    old = pd.DataFrame([{"domain": "legal-ko", "source_file": "a.jsonl", "line": 1, "format": "seed",
                         "licence": "internal", "messages_json": "[]"}])
    warehouse.replace_partition("raw_instructions", "domain", "legal-ko", old)
    (tmp_path / "legal-ko").mkdir()
    write_jsonl(tmp_path / "legal-ko" / "rows.jsonl", [ROW])
    store_raw(warehouse, "legal-ko", tmp_path / "legal-ko")
    assert warehouse.query("select pii_spans_masked from raw_instructions")["pii_spans_masked"].tolist() == [0]


def test_an_unreadable_file_is_one_quarantine_entry_and_the_others_are_read(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "a.jsonl", [ROW])
    write_jsonl(tmp_path / "b.jsonl", [ROW, ROW])
    from qlora.data import reader

    real = reader.iter_records

    def denied(path, *args):
        if path.name == "b.jsonl":
            raise PermissionError(13, "Permission denied")
        return real(path, *args)

    monkeypatch.setattr(reader, "iter_records", denied)
    result = read_domain(tmp_path)
    assert [r["source_file"] for r in result.rows] == ["a.jsonl"]
    assert [(q["source_file"], q["line"], q["reason"]) for q in result.quarantine] == [("b.jsonl", 0, "unreadable")]
    assert result.rows_in == {"a.jsonl": 1, "b.jsonl": 1}
