"""Cleaning: PII masking, dedup after masking, the accounting invariant, tokens and rendering."""
import json

import pandas as pd
import pytest

from qlora.data import schemas
from qlora.data.cleaning import clean_rows
from qlora.data.config import load_data_config
from qlora.data.measure import count_tokens, render
from qlora.data.pii import luhn_valid, mask_pii
from qlora.data.pii_scan import pii_findings
from qlora.data.reader import read_domain
from qlora.modeling.chat_template import LLAMA3_CHAT_TEMPLATE, render_llama3
from qlora.core.paths import paths


@pytest.mark.parametrize("text, masked", [
    ("메일 kim.minsu@example.co.kr 으로", "메일 [EMAIL] 으로"),
    ("연락처 010-1234-5678 입니다", "연락처 [PHONE] 입니다"),
    ("연락처 01012345678 입니다", "연락처 [PHONE] 입니다"),
    ("국제 +82 10-2345-6789 번", "국제 [PHONE] 번"),
    ("서울 02-312-4567, 경기 (031) 555-1234", "서울 [PHONE], 경기 [PHONE]"),
    ("주민번호 900101-1234567 확인", "주민번호 [RRN] 확인"),
    ("카드 4111 1111 1111 1111 결제", "카드 [CARD] 결제"),
    ("카드 5500-0000-0000-0004 결제", "카드 [CARD] 결제"),
    ("번호 800 900101-1234567 확인", "번호 800 [RRN] 확인"),  # inside a longer digit run (found by fuzzing)
])
def test_pii_is_masked(text, masked):
    assert mask_pii(text)[0] == masked
    assert pii_findings(masked) == []


def test_a_number_that_fails_luhn_is_not_a_card():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert mask_pii("주문 4111 1111 1111 1112 건") == ("주문 4111 1111 1111 1112 건", 0)
    assert pii_findings("주문 4111 1111 1111 1112 건") == ["long_number"]  # the re-scan still flags it


def test_text_without_pii_is_returned_untouched():
    text = "제3조에 따라 2024년에 계약을 해지합니다."
    assert mask_pii(text) == (text, 0)


def _raw(rows):
    return pd.DataFrame([
        {"source_file": "f.jsonl", "line": i + 1, "format": "seed", "licence": lic,
         "messages_json": json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": a}], ensure_ascii=False)}
        for i, (q, a, lic) in enumerate(rows)
    ])


def test_rows_differing_only_in_pii_are_duplicates_after_masking():
    q = "제 메일은 {} 입니다. 임대차 계약의 해지 방법을 알려 주세요."
    rows = [(q.format("kim@example.com"), "서면으로 상대방에게 해지 의사를 통지하면 됩니다.", "internal"),
            (q.format("lee@example.org"), "서면으로 상대방에게 해지 의사를 통지하면 됩니다.", "internal"),
            ("임대차   계약을 중간에 해지하려면 어떤 방법을 써야 하는지 자세하게 알려 주세요.", "서면으로 상대방에게 해지 의사를 통지하면 됩니다.", "internal"),
            ("임대차 계약을 중간에 해지하려면 어떤 방법을 써야 하는지 자세하게 알려 주세요.", "서면으로 상대방에게 해지 의사를 통지하면 됩니다.", "internal")]
    config = load_data_config()
    result = clean_rows(_raw(rows), config.rules("legal-ko"), config.detector_languages())
    assert list(result.kept["line"]) == [1, 3]
    dups = result.quarantine[result.quarantine["reason"] == "duplicate"]
    assert list(dups["line"]) == [2, 4] and "f.jsonl:1" in dups["detail"].iloc[0]
    assert "[EMAIL]" in result.kept["instruction"].iloc[0]
    assert "example" not in " ".join(result.quarantine["excerpt"])  # quarantine holds masked text only


@pytest.mark.parametrize("domain", ["legal-ko", "medical-ko", "cs-support"])
def test_sample_data_accounting_balances_and_checks_pass(domain):
    config = load_data_config()
    rules = config.rules(domain)
    read = read_domain(paths().training_dir / domain)
    result = clean_rows(read.rows_frame(), rules, config.detector_languages())
    acc = result.accounting()
    assert acc["balanced"]
    assert acc["rows_read"] == acc["kept"] + sum(acc["quarantined"].values()) + acc["duplicates_removed"]
    assert {"too_short", "licence_not_allowed", "wrong_language"} <= set(acc["quarantined"])
    assert acc["duplicates_removed"] > 0 and result.stats["rows_with_pii_masked"] > 0
    raw_reasons = {q["reason"] for q in read.quarantine}
    assert {"malformed_json", "bad_encoding", "missing_field", "wrong_type"} <= raw_reasons
    verdicts = [schemas.duplicates(result.kept, result.stats, rules), schemas.token_lengths(result.kept, rules, "approx"),
                schemas.pii_residual(result.kept), schemas.licences(result.kept, rules),
                schemas.target_language(result.kept, result.stats, rules)]
    assert [v.name for v in verdicts if not v.passed] == []


def test_schemas_fail_with_counts_and_sample_rows():
    rules = load_data_config().rules("legal-ko")
    kept = pd.DataFrame({"source_file": ["a", "b"], "line": [1, 2], "licence": ["internal", "cc-by-nc-4.0"],
                         "instruction_tokens": [3, 12], "output_tokens": [6, 6]})
    lic = schemas.licences(kept, rules)
    assert not lic.passed and lic.failures == 1 and list(lic.sample_rows["licence"]) == ["cc-by-nc-4.0"]
    tok = schemas.token_lengths(kept, rules, "approx")
    assert not tok.passed and list(tok.sample_rows["line"]) == [1]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["계약", "해지", "방법", "hello", "world", "<|begin_of_text|>", "<|eot_id|>", "[UNK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<|begin_of_text|>")
    return fast


def test_token_counts_use_the_given_tokenizer():
    tok = _tokenizer()
    assert count_tokens(["계약 해지 방법", "hello"], tok) == [3, 1]
    assert count_tokens(["계약 해지, 방법!"]) == [5]  # approximation: words and punctuation


def test_render_fast_path_matches_the_jinja_template():
    tok = _tokenizer()
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": " 질문 "}, {"role": "assistant", "content": "답"}]
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    assert tok.apply_chat_template(messages, tokenize=False) == render_llama3(messages) == render(messages, tok)
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    assert render(messages, tok) == "[system]sys[user] 질문 [assistant]답"


def test_column_wise_ids_match_the_single_conversation_ids():
    from qlora.data.prepare import prepare_rows, prompt_ids
    from qlora.data.textkeys import conversation_id, prompt_id

    conversations = [
        [{"role": "user", "content": "Hello  World\n메일 kim@example.com"}, {"role": "assistant", "content": "Ｈｉ"}],
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "질문"}, {"role": "assistant", "content": "답"}],
    ]
    prepared = prepare_rows(conversations, {"instruction": 1, "output": 1})
    masked = prepared.turns.messages()
    assert masked[0][0]["content"] == "Hello  World\n메일 [EMAIL]"
    assert [prepared.digests_hex(i) for i in range(2)] == [conversation_id(m) for m in masked]
    assert prompt_ids(prepared) == [prompt_id(m) for m in masked]
    # Normalisation: spacing, width and ASCII case do not make a new row.
    assert conversation_id([{"role": "user", "content": " hello world "}, {"role": "assistant", "content": "hi"}]) == \
        conversation_id([{"role": "user", "content": "Hello\tWORLD"}, {"role": "assistant", "content": "ｈｉ"}])
