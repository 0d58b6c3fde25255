"""The bounded JSON/JSONL reader (file:line errors, depth and row-size limits, BOM) and atomic writes."""
import json
import os
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlora.core import io
from qlora.core.io import JsonInputError, iter_records, read_json, read_records, too_deep, write_json_atomic


def records(path, **kw):
    return [(r.line, r.value, r.error.reason if r.error else None) for r in iter_records(path, **kw)]


def test_a_utf8_bom_costs_no_row(tmp_path):
    jsonl, array = tmp_path / "a.jsonl", tmp_path / "a.json"
    jsonl.write_bytes(io.UTF8_BOM + b'{"n": 1}\n{"n": 2}\n')
    array.write_bytes(io.UTF8_BOM + b'[{"n": 1}, {"n": 2}]')
    assert records(jsonl) == [(1, {"n": 1}, None), (2, {"n": 2}, None)]
    assert records(array) == [(1, {"n": 1}, None), (1, {"n": 2}, None)]


def test_a_row_nested_10000_deep_is_an_error_for_that_row_only(tmp_path):
    deep = "[" * 10_000 + "]" * 10_000
    path = tmp_path / "deep.jsonl"
    path.write_text(f'{{"n": 1}}\n{deep}\n{{"n": 3}}\n')
    assert records(path) == [(1, {"n": 1}, None), (2, None, "too_deep"), (3, {"n": 3}, None)]
    array = tmp_path / "deep.json"
    array.write_text(f'[\n{{"n": 1}},\n{deep},\n{{"n": 3}}\n]')
    assert records(array) == [(2, {"n": 1}, None), (3, None, "too_deep"), (4, {"n": 3}, None)]
    with pytest.raises(JsonInputError, match=r"deep.jsonl:2: nested deeper than 64 levels"):
        read_records(path)


def test_brackets_inside_strings_are_not_nesting():
    text = json.dumps({"s": "[" * 500 + '\\"{' * 100})
    assert not too_deep(text) and json.loads(text)


def test_a_60mb_row_is_refused_while_streaming_and_only_its_head_is_kept(tmp_path):
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.write(b'{"n": 1}\n{"text": "')
        for _ in range(60):
            f.write(b"x" * (1 << 20))
        f.write(b'"}\n{"n": 3}\n')
    tracemalloc.start()
    got = list(iter_records(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(r.line, r.value, r.error and r.error.reason) for r in got] == [
        (1, {"n": 1}, None), (2, None, "row_too_large"), (3, {"n": 3}, None)]
    assert "62,914,572 bytes" in got[1].error.detail and len(got[1].text) <= io.HEAD_BYTES
    assert peak < 8 * io.MAX_ROW_BYTES  # a few buffers of the limit, never the 60 MB row


def test_an_oversized_array_element_is_refused_and_the_file_goes_on(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"n": 1}, {"t": "가" * 400_000}, {"n": 3}]))  # 1.2 MB in UTF-8, 400k characters
    assert records(path) == [(1, {"n": 1}, None), (1, None, "row_too_large"), (1, {"n": 3}, None)]


def test_invalid_utf8_and_utf16_are_reported_by_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"n": 1}\n{"t": "\xff"}\n{"n": 3}\n')
    assert records(path) == [(1, {"n": 1}, None), (2, None, "bad_encoding"), (3, {"n": 3}, None)]
    utf16 = tmp_path / "b.jsonl"
    utf16.write_bytes('{"n": 1}\n{"n": 2}\n'.encode("utf-16"))
    got = list(iter_records(utf16))
    assert {r.error.reason for r in got} == {"bad_encoding"} and "UTF-16" in got[0].error.detail


def test_a_json_syntax_error_ends_the_file_at_its_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"n": 1},\n{"n": oops},\n{"n": 3}\n]')
    assert records(path) == [(2, {"n": 1}, None), (3, None, "malformed_json")]
    with pytest.raises(JsonInputError, match=r"a.json:3: not valid JSON"):
        read_records(path)


def test_auto_layout_reads_an_array_or_lines_by_content(tmp_path):
    (tmp_path / "rows").write_text('[{"n": 1},\n {"n": 2}]')
    (tmp_path / "lines").write_text('{"n": 1}\n\n{"n": 2}\n')
    assert read_records(tmp_path / "rows") == [(1, {"n": 1}), (2, {"n": 2})]
    assert read_records(tmp_path / "lines") == [(1, {"n": 1}), (3, {"n": 2})]
    (tmp_path / "pretty.jsonl").write_text('[\n  {"n": 1}\n]')  # an eval set saved as an array
    assert read_records(tmp_path / "pretty.jsonl") == [(2, {"n": 1})]


def test_read_json_names_file_line_and_what_it_is(tmp_path):
    path = tmp_path / "state.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}')
    with pytest.raises(JsonInputError, match=r"state.json:4: server state: not valid JSON"):
        read_json(path, "server state")
    path.write_text("[1]")
    with pytest.raises(JsonInputError, match="server state must be a JSON object, got list"):
        read_json(path, "server state")
    path.write_text("")
    with pytest.raises(JsonInputError, match="server state is empty"):
        read_json(path, "server state")


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1}, mode=0o600)
    assert read_json(path) == {"v": 1} and (path.stat().st_mode & 0o777) == 0o600

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json_atomic(path, {"v": 2})
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {}, mode=0o640)
    write_json_atomic(path, {"v": 2})
    assert (path.stat().st_mode & 0o777) == 0o640
    write_json_atomic(tmp_path / "new.json", {})
    assert ((tmp_path / "new.json").stat().st_mode & 0o777) == 0o644


def depth(value) -> int:
    if isinstance(value, (list, dict)):
        children = value.values() if isinstance(value, dict) else value
        return 1 + max((depth(c) for c in children), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(JSON, st.integers(min_value=0, max_value=8))
def test_the_depth_scan_agrees_with_the_real_depth_and_parsing_round_trips(value, limit):
    text = json.dumps(value, ensure_ascii=False)
    assert too_deep(text, limit) == (depth(value) > limit)
    if depth(value) <= limit:
        assert io.parse(text, "x", 1, limit) == value
