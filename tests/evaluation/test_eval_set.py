"""Eval set loading: the formats the runner accepts, and errors that name file, line and field."""
import json
from pathlib import Path

import pytest

from qlora.evaluation.eval_set import EvalSetError, load_eval_cases

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, lines) -> Path:
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l, ensure_ascii=False) for l in lines), encoding="utf-8")
    return path


def test_instruction_input_and_messages_rows(tmp_path):
    cases = load_eval_cases(_write(tmp_path, [
        {"instruction": "요약해 주세요", "input": "계약서 본문", "expected_output": "요약"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "정답"}], "expected_format": "json"},
        {"instruction": "불법 요청", "should_refuse": True},
    ]))
    assert cases[0].messages == ({"role": "user", "content": "요약해 주세요\n\n계약서 본문"},)
    assert [m["role"] for m in cases[1].messages] == ["system", "user"]  # the answer is not sent
    assert cases[1].expected_output == "정답" and cases[1].expects_json
    assert cases[2].should_refuse and cases[2].expected_output is None
    assert [c.line for c in cases] == [1, 2, 3]


@pytest.mark.parametrize("line, field", [
    ('{"instruction": "q"}', "expected_output"),
    ('{"expected_output": "a"}', "instruction"),
    ('{"instruction": "q", "expected_output": "a", "should_refuse": "yes"}', "should_refuse"),
    ('{"instruction": "q", "expected_output": "a", "expected_format": "xml"}', "expected_format"),
    ('{"instruction": "q", "expected_output": "a"', "not valid JSON"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, line, field):
    path = _write(tmp_path, [{"instruction": "ok", "expected_output": "ok"}, line])
    with pytest.raises(EvalSetError) as err:
        load_eval_cases(path)
    assert f"{path}:2" in str(err.value) and field in str(err.value)


def test_sample_eval_sets_load():
    paths = sorted((REPO / "data" / "eval").glob("*.jsonl"))
    assert paths, "data/eval/*.jsonl missing: run `qlora sample-data`"
    for path in paths:
        cases = load_eval_cases(path)
        assert any(c.expects_json for c in cases) and any(c.should_refuse for c in cases), path


def test_eval_report_prefers_the_split_in_the_warehouse(tmp_path, monkeypatch):
    """eval_report reads the domain's eval rows from train_eval_split; the fixed file only before a split exists."""
    import pandas as pd

    from qlora_assets.evaluation.assets import eval_cases_for
    from qlora.core.warehouse import Warehouse

    monkeypatch.setenv("QLORA_DATA_DIR", str(REPO / "data"))
    warehouse = Warehouse(tmp_path / "wh.duckdb")
    from_file, source = eval_cases_for(warehouse, "legal-ko")
    assert source.endswith("legal-ko.jsonl") and len(from_file) == 30

    split = pd.DataFrame([
        {"domain": "legal-ko", "row_id": "b", "split": "eval", "expected_format": "json", "should_refuse": False,
         "messages_json": json.dumps([{"role": "user", "content": "JSON으로"}, {"role": "assistant", "content": "{}"}]),
         "expected_output": "{}"},
        {"domain": "legal-ko", "row_id": "a", "split": "eval", "expected_format": "text", "should_refuse": True,
         "messages_json": json.dumps([{"role": "user", "content": "불법 요청"}]), "expected_output": "죄송합니다"},
        {"domain": "legal-ko", "row_id": "c", "split": "train", "expected_format": "text", "should_refuse": False,
         "messages_json": json.dumps([{"role": "user", "content": "학습"}]), "expected_output": "x"},
    ])
    warehouse.append("train_eval_split", split)
    cases, source = eval_cases_for(warehouse, "legal-ko")
    assert "train_eval_split" in source and len(cases) == 2  # train rows never evaluated
    refuse, as_json = cases  # ordered by row_id
    assert refuse.should_refuse and not refuse.expects_json
    assert as_json.expects_json and as_json.messages == ({"role": "user", "content": "JSON으로"},)
