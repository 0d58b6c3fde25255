"""Readers: every format normalised to messages; every bad row quarantined with file, line and reason."""
import json

import pytest

from qlora.data.formats import RowError, normalise
from qlora.data.reader import count_records, read_domain, read_file


def test_the_four_formats_normalise_to_the_same_messages():
    want = [{"role": "user", "content": "질문\n\n입력"}, {"role": "assistant", "content": "답"}]
    assert normalise({"instruction": "질문", "input": "입력", "output": "답"}) == ("alpaca", want)
    assert normalise({"instruction": "질문\n\n입력", "output": "답"}) == ("seed", want)
    assert normalise({"messages": want}) == ("chat", want)
    sharegpt = {"conversations": [{"from": "human", "value": "질문\n\n입력"}, {"from": "gpt", "value": "답"}]}
    assert normalise(sharegpt) == ("sharegpt", want)


@pytest.mark.parametrize("row, reason, field", [
    ({"instruction": "q"}, "missing_field", "output"),
    ({"instruction": "q", "output": 42}, "wrong_type", "output"),
    ({"messages": "hello"}, "wrong_type", "messages"),
    ({"conversations": [{"from": "bot", "value": "x"}]}, "wrong_type", "conversations[0].from"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "missing_field", "messages"),
    ("a string", "wrong_type", "JSON object"),
])
def test_bad_rows_raise_a_reason_naming_the_field(row, reason, field):
    with pytest.raises(RowError) as err:
        normalise(row)
    assert err.value.reason == reason and field in err.value.detail


def test_jsonl_problems_are_quarantined_with_file_and_line(tmp_path):
    good = json.dumps({"instruction": "계약 해지 절차를 알려 주세요.", "output": "서면으로 통지합니다.", "license": "internal"},
                      ensure_ascii=False)
    lines = [good.encode(), b'{"instruction": "cut', "".join(['{"instruction": "', "한글", '", "output": "x"}']).encode("cp949"),
             b"", json.dumps({"instruction": "q", "output": ["x"]}).encode(), json.dumps({"output": "x"}).encode()]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\n".join(lines))
    result = read_file(path)
    assert [(r["line"], r["licence"]) for r in result.rows] == [(1, "internal")]
    got = {(q["source_file"], q["line"], q["reason"]) for q in result.quarantine}
    assert got == {("rows.jsonl", 2, "malformed_json"), ("rows.jsonl", 3, "bad_encoding"),
                   ("rows.jsonl", 5, "wrong_type"), ("rows.jsonl", 6, "missing_field")}
    assert result.rows_in["rows.jsonl"] == 5 == count_records(path)


def test_json_array_rows_keep_their_line_and_a_syntax_error_stops_only_that_file(tmp_path):
    (tmp_path / "a.json").write_text('[\n{"instruction": "q1", "output": "a1"},\n\n{"instruction": "q2", "output": "a2"}\n]\n')
    (tmp_path / "b.json").write_text('[\n{"instruction": "q1", "output": "a1"},\n{"instruction": oops}\n]\n')
    (tmp_path / "b.json.license").write_text("cc0-1.0\n")
    result = read_domain(tmp_path)
    assert [(r["source_file"], r["line"], r["licence"]) for r in result.rows] == [
        ("a.json", 2, "unknown"), ("a.json", 4, "unknown"), ("b.json", 2, "cc0-1.0")]
    assert [(q["source_file"], q["line"], q["reason"]) for q in result.quarantine] == [("b.json", 3, "malformed_json")]
