"""Chunked, threaded and streamed preparation gives exactly what the plain definitions give."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from qlora.data.columnar import read_seed_jsonl, seed_record_chunks, seed_records_to_turns, utf8_array
from qlora.data.pii import mask_pii
from qlora.data.prepare import (
    EMPTY_TURN, OK, TOO_SHORT, Prepared, Turns, duplicate_of, prepare_stream, prepare_turns, prompt_ids,
)
from qlora.data.textkeys import conversation_id, digests, join_turns, prompt_id, turn_keys

TEXTS = ["", " ", "가", "가 ", " 가", "\u3000가", "x\u00a0", "\t탭", "é", "Hello World", "ＦＵＬＬ width", "두  칸",
         "메일 Kim@Example.com ", "010-1234-5678", "+82 10-1234-5678", "(02) 123-4567", "주민 900101-1234567",
         "카드 4111 1111 1111 1111", "주문번호 4111 1111 1111 1112", "０１０-１２３４-５６７８", "제12조 1990년",
         "긴 질문입니다 이것은 충분히 깁니다", "답변입니다", "emoji 😀 끝", "nul\x00안", "\ud7a3\ud7a4 끝 글자",
         "\ua000\uabff\uac00", "줄\n바꿈"]
MIN_CHARS = {"instruction": 3, "output": 2}


def _conversations() -> list[list[dict]]:
    rng = np.random.default_rng(3)
    roles = ["system", "user", "assistant"]
    conversations = []
    for i in range(120):  # 1 to 5 turns, duplicates among them
        turns = rng.integers(1, 6)
        conversations.append([{"role": roles[(j + i) % 3], "content": TEXTS[rng.integers(len(TEXTS))]}
                              for j in range(turns)])
    return conversations + conversations[:20]


def _reference(turns: Turns) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """Masked contents, keys, digests and spans per row, every turn masked and normalised."""
    masked_pairs = [mask_pii(t) for t in turns.contents.to_pylist()]
    masked = pa.array([t for t, _ in masked_pairs], pa.large_string())
    keys = turn_keys(turns.roles, masked)
    counts = np.array([n for _, n in masked_pairs], dtype=np.int64)
    spans = np.array([counts[a:b].sum() for a, b in zip(turns.offsets[:-1], turns.offsets[1:])], dtype=np.int64)
    return masked, keys, digests(join_turns(turns.offsets, keys)), spans


def _reference_status(turns: Turns, min_chars: dict) -> np.ndarray:
    """Every turn trimmed and counted."""
    lengths = pc.utf8_length(pc.utf8_trim_whitespace(turns.contents)).to_numpy(zero_copy_only=False)
    status = []
    for a, b in zip(turns.offsets[:-1], turns.offsets[1:]):
        if (lengths[a:b] == 0).any():
            status.append(EMPTY_TURN)
        elif lengths[a:b - 1].sum() < min_chars["instruction"] or lengths[b - 1] < min_chars["output"]:
            status.append(TOO_SHORT)
        else:
            status.append(OK)
    return np.array(status, dtype=np.int8)


@pytest.mark.parametrize("min_chars", [MIN_CHARS, {"instruction": 10, "output": 5}, {"instruction": 0, "output": 0}])
def test_validation_counts_characters_where_bytes_do_not_decide(min_chars):
    turns = Turns.from_conversations(_conversations())
    expected = _reference_status(turns, min_chars)
    assert len(set(expected.tolist())) == (3 if min_chars["output"] else 2)
    assert (prepare_turns(turns, min_chars, rows_per_chunk=16).status == expected).all()


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 64, 100_000])
def test_chunked_preparation_matches_the_plain_definitions(rows_per_chunk):
    turns = Turns.from_conversations(_conversations())
    masked, keys, expected_digests, spans = _reference(turns)
    prepared = prepare_turns(turns, MIN_CHARS, rows_per_chunk=rows_per_chunk)
    assert prepared.turns.contents.equals(masked)
    assert prepared.keys.equals(keys)
    assert (prepared.digests == expected_digests).all()
    assert (prepared.pii_spans == spans).all()
    assert (prepared.status == _reference_status(turns, MIN_CHARS)).all()
    assert prompt_ids(prepared) == [prompt_id(m) for m in prepared.turns.messages()]
    assert [prepared.digests_hex(i) for i in range(len(turns))] == [conversation_id(m) for m in prepared.turns.messages()]


def test_streamed_preparation_keeps_verdicts_digests_and_the_masked_turns():
    turns = Turns.from_conversations(_conversations())
    whole = prepare_turns(turns, MIN_CHARS)
    streamed = prepare_stream(turns.chunks(9), MIN_CHARS, workers=2)
    assert (streamed.status == whole.status).all() and (streamed.digests == whole.digests).all()
    assert (streamed.pii_spans == whole.pii_spans).all()
    masked_turns = whole.turns.contents.take(pa.array(streamed.masked_index))
    assert masked_turns.equals(streamed.masked_texts) and len(streamed.masked_index) >= 5
    with pytest.raises(ValueError, match="streamed"):
        streamed.turns  # noqa: B018 (the text itself was not kept)
    assert Prepared.concat([], None).digests.shape == (0, 2)


def test_seed_record_chunks_and_the_jsonl_reader_give_the_same_turns(tmp_path):
    records = [{"row": i, "instruction": a, "output": b} for i, (a, b) in enumerate(zip(TEXTS, TEXTS[::-1]))]
    whole = seed_records_to_turns(records)
    assert whole.contents.to_pylist()[:4] == [TEXTS[0], TEXTS[-1], TEXTS[1], TEXTS[-2]]
    assert list(whole.roles.to_pylist()[:2]) == ["user", "assistant"]
    chunks = list(seed_record_chunks(records, rows=4))
    assert pa.concat_arrays([c.contents for c in chunks]).equals(whole.contents)
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    batches = list(read_seed_jsonl(path, block_bytes=256))
    assert len(batches) > 1
    assert pa.concat_arrays([t.contents for _, t in batches]).equals(whole.contents)
    assert np.concatenate([b.column("row").to_numpy() for b, _ in batches]).tolist() == list(range(len(records)))
    streamed = prepare_stream((t for _, t in batches), MIN_CHARS)
    assert (streamed.digests == prepare_turns(whole, MIN_CHARS).digests).all()


def test_errors_name_the_record_or_line(tmp_path):
    good = {"instruction": "질문", "output": "답"}
    with pytest.raises(ValueError, match="record 5: field 'output' is missing"):
        list(seed_record_chunks([good] * 5 + [{"instruction": "질문"}], rows=4))
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "질문"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: field 'output'"):
        list(read_seed_jsonl(path))


def test_utf8_array_matches_pyarrow():
    for texts in [[], [""], ["", ""], TEXTS, ["a\x00b", "가"]]:
        array = utf8_array(texts)
        array.validate(full=True)
        assert array.equals(pa.array(texts, pa.large_string()))
    with pytest.raises(TypeError):
        utf8_array(["a", 3])
    with pytest.raises(UnicodeEncodeError):
        utf8_array(["a", "\ud800"])


def _groupby_duplicate_of(digests: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    result = np.full(len(digests), -1, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    frame = pd.DataFrame({"a": digests[idx, 0], "b": digests[idx, 1], "i": idx})
    first = frame.groupby(["a", "b"], sort=False)["i"].transform("first").to_numpy()
    result[idx[first != idx]] = first[first != idx]
    return result


@pytest.mark.parametrize("collision", [False, True])
def test_duplicate_of_matches_grouping_on_all_128_bits(collision):
    rng = np.random.default_rng(5)
    digests = rng.integers(0, 2**63, size=(300, 2), dtype=np.uint64)[rng.integers(0, 200, size=1000)]
    if collision:  # same first 64 bits, different second 64: not duplicates
        digests[10] = [digests[20, 0], digests[20, 1] ^ 1]
    eligible = rng.random(1000) < 0.9
    assert (duplicate_of(digests, eligible) == _groupby_duplicate_of(digests, eligible)).all()
    assert (duplicate_of(digests, np.zeros(1000, bool)) == -1).all()


def test_ordered_thread_map_keeps_order_with_and_without_a_pool():
    import threading

    from qlora.data.threads import map_in_order

    seen_threads = set()

    def square(x):
        seen_threads.add(threading.current_thread().name)
        return x * x

    assert list(map_in_order(square, range(20), workers=0)) == [x * x for x in range(20)]
    assert seen_threads == {threading.current_thread().name}  # 0 workers: no pool, the caller's thread
    assert list(map_in_order(square, range(50), workers=3)) == [x * x for x in range(50)]
    assert any(name.startswith("clean") for name in seen_threads)
