"""The column-wise fast paths give exactly what the plain definitions give."""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from qlora.data.columnar import seed_records_to_turns
from qlora.data.pii import mask_pii
from qlora.data.prepare import prepare_turns
from qlora.data.textkeys import digests, join_turns, needs_trim, turn_keys

TEXTS = ["", " ", "가", "가 ", " 가", "\u3000가", "가\u3000", "x\u00a0", "\u00a0x", "\t탭", "가\x85", "é", "Hello World",
         "ＦＵＬＬ width", "두  칸", "메일 Kim@Example.com ", "010-1234-5678", "카드 4111 1111 1111 1111", "제12조 1990년"]


def test_needs_trim_flags_every_string_that_trimming_changes():
    texts = pa.array(TEXTS, pa.large_string())
    changed = pc.not_equal(pc.utf8_trim_whitespace(texts), texts).to_numpy(zero_copy_only=False)
    assert changed.sum() >= 8
    assert not (changed & ~needs_trim(texts)).any()
    assert not needs_trim(pa.array(["가나다.", "abc"], pa.large_string())).any()


def test_prefiltered_path_matches_masking_and_normalising_every_turn():
    records = [{"instruction": a, "output": b} for a in TEXTS for b in TEXTS[::3]]
    turns = seed_records_to_turns(records)
    assert turns.contents.to_pylist()[:4] == [TEXTS[0], TEXTS[0], TEXTS[0], TEXTS[3]]
    prepared = prepare_turns(turns, {"instruction": 2, "output": 1})
    masked = pa.array([mask_pii(t)[0] for t in turns.contents.to_pylist()], pa.large_string())
    assert prepared.turns.contents.equals(masked)
    full_keys = turn_keys(turns.roles, masked)  # no prefilter: every turn normalised
    assert prepared.keys.equals(full_keys)
    assert (prepared.digests == digests(join_turns(turns.offsets, full_keys))).all()
    assert len(np.unique(prepared.digests, axis=0)) < len(records)  # e.g. "가" and "가 " share a key


@pytest.mark.parametrize("record, message", [
    ({"instruction": "질문"}, "record 1: field 'output' is missing"),
    ({"instruction": "질문", "output": 3}, "record 1: field 'output' must be a string, got int"),
])
def test_seed_records_name_the_bad_record_and_field(record, message):
    with pytest.raises(ValueError, match=message):
        seed_records_to_turns([{"instruction": "a", "output": "b"}, record])
