"""Property: any domain folder, however broken, goes through the real reader and cleaner without a
crash; every raw record ends in the dataset or the quarantine with a reason; and no PII planted in
it is stored anywhere in the warehouse (rows, details and quarantine excerpts included).

Files are random mixes of valid rows (carrying PII), random bytes, deep nesting, oversized rows,
blank lines, unpaired surrogate escapes and wrong shapes, as JSONL or JSON arrays, in UTF-8 (with
or without a BOM), UTF-16 or latin-1, plus a symbolic link to a file outside the data root.
"""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlora.core.io import MAX_ROW_BYTES
from qlora.core.warehouse import Warehouse
from qlora.data.cleaning import clean_rows
from qlora.data.config import load_data_config
from qlora.data.pii import mask_pii
from qlora.data.reader import SYMLINK, count_domain, read_domain
from qlora.data.store import store_cleaned, store_raw

DOMAIN = "fuzz-ko"
PII = ["kim.minsu@example.co.kr", "lee_j+hr@test-mail.org", "900101-1234567", "850315-2345678",
       "010-2345-6789", "+82 10-9876-5432", "02-312-4567", "4111 1111 1111 1111"]
OUTSIDE_MARKER = "OUTSIDE-THE-DATA-ROOT"
CONFIG = load_data_config()

words = st.lists(st.sampled_from("계약 해지 절차 임대차 환자 복용 주문 배송 질문 답변 the order is shipped".split()),
                 max_size=12).map(" ".join)
text_with_pii = st.tuples(words, st.sampled_from(PII + [""] * 4), words).map(lambda t: " ".join(t))
licence = st.sampled_from(["internal", "cc0-1.0", "proprietary", PII[0], ""])
seed_row = st.builds(lambda i, o, lic: {"instruction": i, "output": o, "license": lic}, text_with_pii, text_with_pii, licence)
chat_row = st.builds(lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                   "license": "internal"}, text_with_pii, text_with_pii)
odd_row = st.sampled_from([
    {"instruction": 42, "output": "x"}, {"messages": "hello"}, [1, 2, 3], "just a string", None,
    {"conversations": [{"from": PII[0], "value": "x"}, {"from": "gpt", "value": "y"}]},
])
HUGE = (b'{"instruction": "' + PII[0].encode() + b" " + b"x" * MAX_ROW_BYTES + b'", "output": "y"}')
RAW_LINES = [
    b"", b"   ", b"\t", b'{"instruction": "\\ud800 ' + PII[2].encode() + b'", "output": "y"}',
    b'{"instruction": "unterminated ' + PII[0].encode(), b'{"a": "\\u0000 nul"}', HUGE,
]
deep = st.integers(min_value=65, max_value=20_000).map(lambda d: b"[" * d + b"]" * d) | \
    st.integers(min_value=65, max_value=3_000).map(lambda d: b'{"a": ' * d + b"1" + b"}" * d)
line = st.one_of(
    (seed_row | chat_row | odd_row).map(lambda r: json.dumps(r, ensure_ascii=False).encode()),
    text_with_pii.map(lambda t: b'{"instruction": "' + t.encode() + b'", "output": '),  # cut off
    st.binary(max_size=120), deep, st.sampled_from(RAW_LINES),
)
data_file = st.tuples(
    st.lists(line, max_size=12),
    st.sampled_from(["jsonl", "json"]),
    st.sampled_from(["utf-8", "utf-8-bom", "utf-16", "latin-1"]),
    st.sampled_from([b"\n", b"\r\n"]),
)


def encode(lines: list[bytes], layout: str, encoding: str, newline: bytes) -> bytes:
    body = newline.join(lines) if layout == "jsonl" else b"[" + (b"," + newline).join(lines) + b"]"
    if encoding == "utf-8-bom":
        return b"\xef\xbb\xbf" + body
    if encoding in ("utf-16", "latin-1"):
        return body.decode("utf-8", errors="replace").encode(encoding, errors="replace")
    return body


def frame_strings(*frames) -> list[str]:
    return [v for frame in frames for column in frame.columns for v in frame[column].tolist() if isinstance(v, str)]


def stored_strings(warehouse: Warehouse) -> list[str]:
    return frame_strings(*(warehouse.query(f"select * from {table} where domain = ?", [DOMAIN])
                           for table in ("raw_instructions", "cleaned_dataset", "quarantine")))


def build_folder(root: Path, files: list, with_link: bool) -> Path:
    folder = root / "training" / DOMAIN
    folder.mkdir(parents=True)
    for i, (lines, layout, encoding, newline) in enumerate(files):
        (folder / f"f{i}.{layout}").write_bytes(encode(lines, layout, encoding, newline))
    if with_link:
        outside = root / "outside.jsonl"
        outside.write_text(json.dumps({"instruction": f"{OUTSIDE_MARKER} {PII[0]}", "output": "y" * 20}))
        (folder / "link.jsonl").symlink_to(outside)
    return folder


def assert_accounted(files: list, with_link: bool, read, cleaned, counted: dict) -> None:
    """The independent count agrees where a file parses whole; every record is a row or a
    quarantine entry with a reason; every raw row is kept, rejected or a duplicate."""
    assert set(counted) == set(read.rows_in) == {f"f{i}.{layout}" for i, (_, layout, _, _) in enumerate(files)}
    for name, n in counted.items():
        assert n is None or n == read.rows_in[name], name
    raw_entries = [q for q in read.quarantine if q["reason"] != SYMLINK]
    assert all(q["reason"] and q["detail"] for q in read.quarantine)
    assert sum(read.rows_in.values()) == len(read.rows) + len(raw_entries)
    assert [q["source_file"] for q in read.quarantine if q["reason"] == SYMLINK] == (["link.jsonl"] if with_link else [])
    acc = cleaned.accounting()
    assert acc["balanced"] and acc["rows_read"] == len(read.rows)
    assert all(cleaned.quarantine["reason"].astype(bool))


def assert_no_pii(cells: list[str], kept_messages) -> None:
    for cell in cells:
        flat = cell.replace("\x00", "")
        assert OUTSIDE_MARKER not in flat
        for value in PII:
            assert value not in flat, (value, cell[:300])
    for messages in kept_messages:
        for turn in json.loads(messages):
            assert mask_pii(turn["content"])[1] == 0, turn  # masked text is a fixed point of masking


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(FUZZ, max_examples=150)
@given(st.lists(data_file, min_size=1, max_size=3), st.booleans())
def test_any_folder_is_read_and_cleaned_with_every_row_accounted_and_no_pii_kept(files, with_link):
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp), files, with_link)
        read = read_domain(folder, DOMAIN)
        cleaned = clean_rows(read.rows_frame(), CONFIG.rules(DOMAIN), CONFIG.detector_languages())
        counted = count_domain(folder)
    assert_accounted(files, with_link, read, cleaned, counted)
    assert_no_pii(frame_strings(read.rows_frame(), read.quarantine_frame(), cleaned.kept, cleaned.quarantine),
                  cleaned.kept["messages_json"])


WAREHOUSE_DIR = tempfile.TemporaryDirectory(prefix="fuzz-warehouse-")


@settings(FUZZ, max_examples=12)
@given(st.lists(data_file, min_size=1, max_size=3), st.booleans())
def test_the_warehouse_stores_every_row_accounted_and_no_pii(files, with_link):
    """The same through the stores (DuckDB, one partition replaced per example): nothing the
    frames held is lost on the way in, and no table holds planted PII."""
    warehouse = Warehouse(Path(WAREHOUSE_DIR.name) / "w.duckdb")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp), files, with_link)
        read = store_raw(warehouse, DOMAIN, folder)
        cleaned = store_cleaned(warehouse, DOMAIN, CONFIG)
        counted = count_domain(folder)
    assert_accounted(files, with_link, read, cleaned, counted)
    count = warehouse.query("select (select count(*) from raw_instructions where domain = ?) as raw, "
                            "(select count(*) from quarantine where domain = ?) as q, "
                            "(select count(*) from cleaned_dataset where domain = ?) as kept", [DOMAIN] * 3).iloc[0]
    assert (count["raw"], count["kept"]) == (len(read.rows), len(cleaned.kept))
    assert count["q"] == len(read.quarantine) + len(cleaned.quarantine)
    kept = warehouse.query("select messages_json from cleaned_dataset where domain = ?", [DOMAIN])["messages_json"]
    assert_no_pii(stored_strings(warehouse), kept)
